// Package relay is a test helper for the L7 protocols: a TCP relay between
// real clients and a real server that hands each read it makes, as the
// kernel's capture would (a head of the call's bytes and its tail, the
// total), to the protocol's parser of that connection. Tests compare what
// the parser found with the server's and the clients' own counts.
package relay

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors/l7"
)

// Capture is the capture policy simulated: Head bytes of each call kept,
// and its last Tail bytes when the head stops short.
type Capture struct{ Head, Tail int }

// Kernel is the kernel capture's default policy: http.capture_bytes
// (1024 by default) and TAIL_BYTES (bpf/l7.c).
var Kernel = Capture{Head: 1024, Tail: 32}

// KernelMax is the kernel capture with http.capture_bytes at its largest,
// 4096 (MAX_CAPTURE).
var KernelMax = Capture{Head: 4096, Tail: 32}

// Relay listens on a loopback port and relays every connection to Upstream.
type Relay struct {
	Addr    string
	dial    func() (net.Conn, error)
	proto   l7.Protocol
	sink    l7.Sink
	capture Capture
	ln      net.Listener
	mu      sync.Mutex // one parser runs at a time, and the sink needs no lock of its own
	wg      sync.WaitGroup
	local   map[string]bool
	base    time.Time
	// BufSize is each relay read's buffer (the client's or server's
	// largest write lands in several reads when it is bigger).
	BufSize int
	conns   int
	active  int
}

// Start starts a relay to upstream; it stops when the test ends.
func Start(t testing.TB, upstream string, proto l7.Protocol, sink l7.Sink, c Capture) *Relay {
	t.Helper()
	r := Listen(t, proto, sink, c)
	r.Serve(t, func() (net.Conn, error) { return net.Dial("tcp", upstream) })
	return r
}

// Listen makes a relay's listener (its Addr known) without serving yet:
// for a server that must be told its advertised address first.
func Listen(t testing.TB, proto l7.Protocol, sink l7.Sink, c Capture) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	return &Relay{Addr: ln.Addr().String(), proto: proto, sink: sink, capture: c, ln: ln,
		local: map[string]bool{}, base: time.Now(), BufSize: 64 << 10}
}

// Serve relays every connection accepted to one dial makes; it stops when
// the test ends.
func (r *Relay) Serve(t testing.TB, dial func() (net.Conn, error)) {
	r.dial = dial
	r.wg.Add(1)
	go r.accept(t)
	t.Cleanup(func() { r.ln.Close(); r.wg.Wait() })
}

func (r *Relay) accept(t testing.TB) {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := r.dial()
		if err != nil {
			t.Errorf("dialing upstream: %v", err)
			c.Close()
			continue
		}
		r.mu.Lock()
		r.local[u.LocalAddr().String()] = true
		r.conns++
		r.active++
		conn := &l7.Conn{ID: uint64(r.conns), Role: l7.RoleClient, Source: l7.SourceSyscall}
		p := r.proto.NewParser(conn)
		r.mu.Unlock()
		r.wg.Add(1)
		go r.pair(c, u, p)
	}
}

func (r *Relay) pair(c, u net.Conn, p l7.Parser) {
	defer r.wg.Done()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.copy(u, c, l7.ToServer, p) }()
	go func() { defer wg.Done(); r.copy(c, u, l7.ToClient, p) }()
	wg.Wait()
	r.mu.Lock()
	p.Close(r.now(), r.sink)
	r.active--
	r.mu.Unlock()
}

// Idle waits until every relayed connection has closed (and its parser
// with it), at most d; it reports whether they did.
func (r *Relay) Idle(d time.Duration) bool {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		n := r.active
		r.mu.Unlock()
		if n == 0 {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// Conns is the number of connections relayed so far.
func (r *Relay) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns
}

func (r *Relay) now() uint64 { return uint64(time.Since(r.base)) }

func (r *Relay) copy(dst, src net.Conn, dir l7.Dir, p l7.Parser) {
	buf := make([]byte, r.BufSize)
	defer func() {
		// Either side closing ends the pair, as a proxy would.
		dst.Close()
		src.Close()
	}()
	for {
		start := r.now()
		n, err := src.Read(buf)
		if n > 0 {
			b := buf[:n]
			rec := l7.Record{Dir: dir, Data: b, Total: uint64(n), Start: start, End: r.now()}
			if n > r.capture.Head {
				rec.Data = b[:r.capture.Head]
				if t := min(r.capture.Tail, n-r.capture.Head); t > 0 {
					rec.Tail = b[n-t:]
				}
			}
			// Parsed before it is passed on: a reply can only be read
			// after its request was handed to the parser.
			r.mu.Lock()
			p.Feed(&rec, r.sink)
			r.mu.Unlock()
			if _, werr := dst.Write(b); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, a reset or the other side closed: the pair ends
		}
	}
}

// Upstream reports whether addr is the local address of one of the relay's
// connections to the server (how a server's log names the relayed clients).
func (r *Relay) Upstream(addr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.local[addr]
}

// Locked runs fn while no parser runs (to read the sink).
func (r *Relay) Locked(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
}

package tcp

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
)

func startCollectorWith(t *testing.T, cfg Config) *Collector {
	t.Helper()
	c, _ := collectortest.Start(t, Name, func(d collectors.Deps) collectors.Collector {
		return New(d, cfg)
	}, collectortest.Options{})
	return c.(*Collector)
}

// ownSeries keeps the series of this test process.
func ownSeries(s map[tcpConnKey]tcpConnCounters) map[tcpConnKey]tcpConnCounters {
	out := map[tcpConnKey]tcpConnCounters{}
	for k, v := range s {
		if k.Tgid == uint32(os.Getpid()) {
			out[k] = v
		}
	}
	return out
}

// lateWriter serves each connection like a TLS server whose client closes
// first: it answers, waits for the client's EOF, then writes a 24-byte
// "close_notify" to a peer that has gone (answered by a reset) and closes.
// sent and received are what its own calls returned.
type lateWriter struct {
	ln             net.Listener
	wg             sync.WaitGroup
	mu             sync.Mutex
	sent, received int64
}

func newLateWriter(t *testing.T) *lateWriter {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &lateWriter{ln: ln}
}

func (s *lateWriter) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// serve handles one accepted connection: read want bytes, answer reply
// bytes, then the late write.
func (s *lateWriter) serve(conn net.Conn, want, reply int) {
	defer s.wg.Done()
	defer conn.Close()
	n, _ := io.ReadFull(conn, make([]byte, want))
	m, _ := conn.Write(make([]byte, reply))
	rest, _ := io.Copy(io.Discard, conn) // until the client's FIN
	time.Sleep(5 * time.Millisecond)
	late, _ := conn.Write(make([]byte, 24))
	s.mu.Lock()
	s.received += int64(n) + rest
	s.sent += int64(m + late)
	s.mu.Unlock()
}

// TestPrivilegedLateWrite: a write after the peer closed keeps the
// connection's inbound series; no outbound series with the client's
// ephemeral port appears (issue 9 item 8). A reset sent by close() with
// unread data lands on the connection's series too.
func TestPrivilegedLateWrite(t *testing.T) {
	c, _ := startCollector(t)
	srv := newLateWriter(t)
	const (
		conns = 20
		send  = 5
		reply = 2
	)
	var clientSent, clientRecv int64
	for range conns {
		srv.wg.Add(1)
		cl, err := net.Dial("tcp4", srv.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn, err := srv.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		go srv.serve(conn, send, reply)
		n, _ := cl.Write(make([]byte, send))
		m, _ := io.ReadFull(cl, make([]byte, reply))
		clientSent += int64(n)
		clientRecv += int64(m)
		cl.Close()
		srv.wg.Wait()
	}
	// Closing with unread data sends a reset after the state is TCP_CLOSE.
	const unread = 5
	for range unread {
		cl, err := net.Dial("tcp4", srv.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn, err := srv.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := cl.Write(make([]byte, 7))
		clientSent += int64(n)
		time.Sleep(5 * time.Millisecond) // queued at the server, never read
		conn.Close()
		io.Copy(io.Discard, cl)
		cl.Close()
	}
	port := srv.port()
	out, in := loopbackKey(port, tcpDirectionDIRECTION_OUTBOUND), loopbackKey(port, tcpDirectionDIRECTION_INBOUND)
	total := conns + unread
	waitFor(t, c, func(all map[tcpConnKey]tcpConnCounters) error {
		s := ownSeries(all)
		if len(s) != 2 {
			return fmt.Errorf("want exactly the outbound and inbound series of port %d, got %v", port, s)
		}
		o, i := s[out], s[in]
		if o.Opened != uint64(total) || o.Closed != uint64(total) || o.BytesSent != uint64(clientSent) || o.BytesReceived != uint64(clientRecv) {
			return fmt.Errorf("outbound: got %+v, want %d opened and closed, %d sent, %d received", o, total, clientSent, clientRecv)
		}
		if i.Opened != uint64(total) || i.Closed != uint64(total) || i.BytesSent != uint64(srv.sent) || i.BytesReceived != uint64(srv.received) {
			return fmt.Errorf("inbound: got %+v, want %d opened and closed, %d sent, %d received", i, total, srv.sent, srv.received)
		}
		if i.ResetsSent != unread {
			return fmt.Errorf("inbound: %d resets sent, want %d (close with unread data)", i.ResetsSent, unread)
		}
		return nil
	})
	// Every record is freed with its socket.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		var k uint64
		var v tcpSockInfo
		for it := c.socks.Iterate(); it.Next(&k, &v); {
			if v.Key.Tgid == uint32(os.Getpid()) && v.Key.ServerPort == uint16(port) {
				n++
			}
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connection records of port %d outlived their sockets", n, port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPrivilegedPeerBudget: past max_peers_per_process distinct peers, a
// process's new peers fold into its _OTHER series in the kernel, exactly
// counted, and the fold is counted (issue 17 item 4).
func TestPrivilegedPeerBudget(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxPeersPerProcess = 5
	c := startCollectorWith(t, cfg)
	ln := echoServer(t, "tcp4", "0.0.0.0:0", 10, 20)
	port := ln.Addr().(*net.TCPAddr).Port
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	const peers = 20
	for i := 1; i <= peers; i++ {
		conn, err := d.Dial("tcp4", fmt.Sprintf("127.0.0.%d:%d", i, port))
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(make([]byte, 10))
		io.ReadFull(conn, make([]byte, 20))
		conn.Close()
	}
	other := tcpConnKey{Peer: otherPeer, Tgid: uint32(os.Getpid()), ServerPort: uint16(port), Direction: uint8(tcpDirectionDIRECTION_OUTBOUND)}
	folded := peers - cfg.MaxPeersPerProcess
	waitFor(t, c, func(all map[tcpConnKey]tcpConnCounters) error {
		s := ownSeries(all)
		// Five own outbound peers, their _OTHER, one inbound peer.
		if len(s) != cfg.MaxPeersPerProcess+2 {
			return fmt.Errorf("got %d series, want %d: %v", len(s), cfg.MaxPeersPerProcess+2, s)
		}
		for i := 1; i <= cfg.MaxPeersPerProcess; i++ {
			k := tcpConnKey{Tgid: uint32(os.Getpid()), ServerPort: uint16(port), Direction: uint8(tcpDirectionDIRECTION_OUTBOUND)}
			copy(k.Peer[:], net.IPv4(127, 0, 0, byte(i)).To16())
			if v := s[k]; v.Opened != 1 || v.Closed != 1 || v.BytesSent != 10 || v.BytesReceived != 20 {
				return fmt.Errorf("peer 127.0.0.%d: got %+v", i, v)
			}
		}
		if v := s[other]; v.Opened != uint64(folded) || v.Closed != uint64(folded) || v.BytesSent != uint64(10*folded) || v.BytesReceived != uint64(20*folded) {
			return fmt.Errorf("_OTHER: got %+v, want %d connections", v, folded)
		}
		if v := s[loopbackKey(port, tcpDirectionDIRECTION_INBOUND)]; v.Opened != peers || v.BytesReceived != 10*peers {
			return fmt.Errorf("inbound: got %+v", v)
		}
		return nil
	})
	k := c.kernelCounters()
	if got := k[tcpTcpCounterCOUNTER_PEERS_FOLDED]; got != uint64(folded) {
		t.Errorf("folded connections = %d, want %d", got, folded)
	}
}

// TestPrivilegedExistingConnections: connections opened before the
// collector started keep the direction and server port of how they were set
// up, even for a write after the peer closed, and move exact bytes after
// start (issue 17 item 6).
func TestPrivilegedExistingConnections(t *testing.T) {
	srv := newLateWriter(t)
	const (
		conns = 4
		send  = 1000
		reply = 3000
	)
	clients := make([]net.Conn, conns)
	servers := make([]net.Conn, conns)
	for i := range clients {
		var err error
		if clients[i], err = net.Dial("tcp4", srv.ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
		if servers[i], err = srv.ln.Accept(); err != nil {
			t.Fatal(err)
		}
		// Traffic before start is not counted.
		clients[i].Write([]byte("hello"))
		io.ReadFull(servers[i], make([]byte, 5))
	}
	c, _ := startCollector(t)
	var clientSent, clientRecv int64
	for i := range clients {
		srv.wg.Add(1)
		go srv.serve(servers[i], send, reply)
		n, _ := clients[i].Write(make([]byte, send))
		m, _ := io.ReadFull(clients[i], make([]byte, reply))
		clientSent += int64(n)
		clientRecv += int64(m)
		clients[i].Close()
	}
	srv.wg.Wait()
	port := srv.port()
	out, in := loopbackKey(port, tcpDirectionDIRECTION_OUTBOUND), loopbackKey(port, tcpDirectionDIRECTION_INBOUND)
	waitFor(t, c, func(all map[tcpConnKey]tcpConnCounters) error {
		s := ownSeries(all)
		if len(s) != 2 {
			return fmt.Errorf("want exactly the outbound and inbound series of port %d, got %v", port, s)
		}
		// Set up before start: neither opened nor closed here.
		o, i := s[out], s[in]
		if o.Opened != 0 || o.Closed != 0 || o.BytesSent != uint64(clientSent) || o.BytesReceived != uint64(clientRecv) {
			return fmt.Errorf("outbound: got %+v, want %d sent, %d received", o, clientSent, clientRecv)
		}
		if i.Opened != 0 || i.Closed != 0 || i.BytesSent != uint64(srv.sent) || i.BytesReceived != uint64(srv.received) {
			return fmt.Errorf("inbound: got %+v, want %d sent, %d received", i, srv.sent, srv.received)
		}
		return nil
	})
	if n := c.kernelCounters()[tcpTcpCounterCOUNTER_EXISTING]; n < 2*conns {
		t.Errorf("connections recorded at start = %d, want at least this test's %d", n, 2*conns)
	}
}

// TestPrivilegedExistingListenerWithoutOwner: a connection open at start
// whose listening socket no process holds (here: in flight over a Unix
// socket, as when a supervisor hands it to a worker) is still inbound.
func TestPrivilegedExistingListenerWithoutOwner(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	cl, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(pair[0])
	defer syscall.Close(pair[1])
	if err := syscall.Sendmsg(pair[0], []byte{0}, syscall.UnixRights(int(f.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ln.Close()

	c, _ := startCollector(t)
	cl.Write(make([]byte, 100))
	io.ReadFull(sv, make([]byte, 100))
	sv.Write(make([]byte, 300))
	io.ReadFull(cl, make([]byte, 300))
	out, in := loopbackKey(port, tcpDirectionDIRECTION_OUTBOUND), loopbackKey(port, tcpDirectionDIRECTION_INBOUND)
	waitFor(t, c, func(all map[tcpConnKey]tcpConnCounters) error {
		s := ownSeries(all)
		if len(s) != 2 || s[out].BytesSent != 100 || s[out].BytesReceived != 300 || s[in].BytesReceived != 100 || s[in].BytesSent != 300 {
			return fmt.Errorf("want the outbound and inbound series of port %d with 100 and 300 bytes, got %v", port, s)
		}
		return nil
	})
}

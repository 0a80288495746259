package capture

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/collectors/l7"
)

// sourceProbe is a probe that also counts its connections' sources and
// keeps the captured bytes, by role and direction.
type sourceProbe struct {
	*probe
	sources map[l7.Source]int // of this process's connections
	data    [3][2][]byte
}

func (p *sourceProbe) NewParser(c *l7.Conn) l7.Parser {
	if c.PID == uint32(os.Getpid()) {
		p.mu.Lock()
		p.sources[c.Source]++
		p.mu.Unlock()
	}
	return &dataParser{Parser: p.probe.NewParser(c), p: p, c: c}
}

type dataParser struct {
	l7.Parser
	p *sourceProbe
	c *l7.Conn
}

func (dp *dataParser) Feed(r *l7.Record, out l7.Sink) {
	if dp.c.PID == uint32(os.Getpid()) {
		dp.p.mu.Lock()
		dp.p.data[dp.c.Role][r.Dir] = append(dp.p.data[dp.c.Role][r.Dir], r.Data...)
		dp.p.mu.Unlock()
	}
	dp.Parser.Feed(r, out)
}

// startSource loads an engine with one probe protocol, as startProbes, and
// returns the attach registry too.
func startSource(t *testing.T, name string) (*Engine, *sourceProbe, *collectortest.Env) {
	t.Helper()
	return startSourceWith(t, name, false)
}

func startSourceWith(t *testing.T, name string, pickUp bool) (*Engine, *sourceProbe, *collectortest.Env) {
	t.Helper()
	p := &sourceProbe{probe: &probe{name: name}, sources: map[l7.Source]int{}}
	var eng *Engine
	_, env := collectortest.Start(t, name, func(d collectors.Deps) collectors.Collector {
		cfg := DefaultConfig()
		cfg.ObserveSelf = true
		cfg.PickUpExisting = pickUp
		eng = NewEngine(d, cfg)
		eng.SelfComms = []string{}
		c, err := NewCollector(eng, d, p)
		if err != nil {
			t.Fatal(err)
		}
		return &group{eng: eng, cols: []*Collector{c}}
	}, collectortest.Options{})
	return eng, p, env
}

// TestPrivilegedDataSourceChosen: every hook of the layer takes the first
// source of kernel functions (fentry, then kprobes), then syscall
// tracepoints, that the kernel allows; the ones passed over are reported
// as not available here, and a layer on kernel functions loaded no syscall
// tracepoint program. On a kernel that refuses fentry and has no kprobes
// (the development machine) this is the fallback to the tracepoints.
func TestPrivilegedDataSourceChosen(t *testing.T) {
	eng, _, env := startSource(t, "redis")
	probes := hook.NewProbes()
	first := func(chain ...hook.Mode) hook.Mode {
		for _, m := range chain {
			if m == env.Force {
				return m
			}
		}
		for _, m := range chain {
			if m == hook.ModeTPBTF && sockTracepoints() != nil {
				continue
			}
			if probes.Supports(m) == nil {
				return m
			}
		}
		return ""
	}
	// the lifecycle has no socket-tracepoint link; the data hooks do
	lifecycle := first(hook.ModeFentry, hook.ModeKprobe, hook.ModeTracepoint)
	data := first(hook.ModeFentry, hook.ModeTPBTF, hook.ModeKprobe, hook.ModeTracepoint)
	statuses := map[string]hook.Status{}
	for _, st := range env.Registry.Statuses() {
		statuses[st.Hook] = st
	}
	for _, name := range []string{"accept", "connect", "close", "send", "recv"} {
		st, ok := statuses[name]
		if !ok {
			t.Fatalf("hook %s: no status", name)
		}
		want := lifecycle
		if name == "send" || name == "recv" {
			want = data
		}
		if st.Mode != want {
			t.Errorf("hook %s: attached %q, want %q (attempts %v)", name, st.Mode, want, st.Attempts)
		}
		if got := eng.Source(name); got != st.Mode {
			t.Errorf("engine reports hook %s in %q, the registry %q", name, got, st.Mode)
		}
		for _, a := range st.Attempts {
			// Modes before the chosen one: unavailable here. Links of
			// the chosen mode before the one attached name functions this
			// kernel lacks (tcp_sendpage, gone in 6.5) or lists twice.
			if a.Mode == want {
				continue
			}
			if env.Force == "" && !hook.IsUnsupported(a.Err) {
				t.Errorf("hook %s: %s passed over for another reason than the kernel lacking it: %v", name, a.Mode, a.Err)
			}
		}
		t.Logf("hook %s: %s (passed over: %v)", name, st.Mode, st.Attempts)
	}
	kernelFunctions := data == hook.ModeFentry || data == hook.ModeKprobe
	if eng.KernelFunctions() != kernelFunctions {
		t.Errorf("KernelFunctions() = %v with the data hooks in %s", eng.KernelFunctions(), data)
	}
	if data == hook.ModeTPBTF {
		for _, p := range env.Registry.Programs() {
			lifecycle := false
			for _, l := range []string{"accept", "connect", "close", "fork"} {
				lifecycle = lifecycle || strings.Contains(p.Name, l)
			}
			if strings.HasPrefix(p.Name, "http_") && !lifecycle {
				t.Errorf("on the socket tracepoints, syscall data program %s was loaded", p.Name)
			}
		}
	}
	if kernelFunctions {
		for _, p := range env.Registry.Programs() {
			if strings.HasPrefix(p.Name, "http_") && p.Name != "http_fork" {
				t.Errorf("on kernel functions, syscall tracepoint program %s was loaded", p.Name)
			}
		}
	}
}

// TestPrivilegedDataSourceCalls moves bytes through every kind of call the
// sources tell apart (write/read, writev/readv with several iovecs,
// sendmsg/recvmsg, sendto/recvfrom with a MSG_PEEK first, sendfile), over
// TCP and a Unix stream socket, and checks that both ends' parsers got
// exactly the bytes moved, each direction, whichever source is attached.
func TestPrivilegedDataSourceCalls(t *testing.T) {
	eng, p, _ := startSource(t, "redis")
	file := filepath.Join(t.TempDir(), "body")
	body := bytes.Repeat([]byte("0123456789abcdef"), 700) // 11200 bytes: several pages
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	var sent [2]uint64 // by direction, per connection
	for _, network := range []string{"tcp4", "unix"} {
		addr := "127.0.0.1:0"
		if network == "unix" {
			addr = filepath.Join(t.TempDir(), "s")
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		var server [2]uint64
		go func() {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			server, err = serveCalls(c, file, len(body))
			errc <- err
		}()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		client, err := clientCalls(c, len(body))
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		ln.Close()
		if client != server {
			t.Fatalf("%s: the ends disagree: client %v, server %v", network, client, server)
		}
		sent[0] += client[0]
		sent[1] += client[1]
	}
	want := [2]uint64{sent[0], sent[1]}
	deadline := time.Now().Add(10 * time.Second)
	var conns [3]int
	var got [3][2]uint64
	for time.Now().Before(deadline) {
		if conns, got = p.snapshot(); got[l7.RoleClient] == want && got[l7.RoleServer] == want {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // nothing more may come
	conns, got = p.snapshot()
	if conns[l7.RoleClient] != 2 || conns[l7.RoleServer] != 2 {
		t.Errorf("connections client %d server %d, want 2 each (TCP and Unix)", conns[l7.RoleClient], conns[l7.RoleServer])
	}
	for _, role := range []l7.Role{l7.RoleClient, l7.RoleServer} {
		if got[role] != want {
			t.Errorf("role %d: bytes [to server, to client] = %v, want %v", role, got[role], want)
		}
	}
	source := l7.SourceSyscall
	if eng.KernelFunctions() {
		source = l7.SourceKernelFunc
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sources[source] != 4 || len(p.sources) != 1 {
		t.Errorf("connections by source %v, want 4 from %s", p.sources, source)
	}
	// The bytes captured, not only counted: every call of the client's
	// requests (write, a sendmsg of three iovecs, sendto) seen by both ends,
	// and the server's answers (write, a writev of two iovecs, write; the
	// sendfile'd body is counted, not captured), per connection.
	toServer := bytes.Repeat(ping, 3)
	toClient := bytes.Repeat([]byte("+PONG\r\n"), 3)
	for _, role := range []l7.Role{l7.RoleClient, l7.RoleServer} {
		if got, want := p.data[role][l7.ToServer], bytes.Repeat(toServer, 2); !bytes.Equal(got, want) {
			t.Errorf("role %d: captured to the server %q, want %q", role, got, want)
		}
	}
	if got, want := p.data[l7.RoleServer][l7.ToClient], bytes.Repeat(toClient, 2); !bytes.Equal(got, want) {
		t.Errorf("server: captured to the client %q, want %q", got, want)
	}
}

var ping = []byte("*1\r\n$4\r\nPING\r\n")

// clientCalls: write (decides the connection), sendmsg with three iovecs,
// sendto; reads with read, readv, recvmsg (the sendfile'd body). It returns
// the bytes it moved [to server, to client].
func clientCalls(c net.Conn, bodyLen int) ([2]uint64, error) {
	var n [2]uint64
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return n, err
	}
	// write
	w, err := c.Write(ping)
	n[0] += uint64(w)
	if err != nil {
		return n, err
	}
	// read the answer: +PONG\r\n
	buf := make([]byte, 7)
	if _, err := io.ReadFull(c, buf); err != nil {
		return n, err
	}
	n[1] += 7
	// sendmsg, three iovecs
	msg := [][]byte{ping[:5], ping[5:9], ping[9:]}
	if err := rawWrite(rc, func(fd int) (int, error) { return unix.SendmsgBuffers(fd, msg, nil, nil, 0) }, &n[0]); err != nil {
		return n, err
	}
	// sendto
	if err := rawWrite(rc, func(fd int) (int, error) { return len(ping), unix.Sendto(fd, ping, 0, nil) }, &n[0]); err != nil {
		return n, err
	}
	// the answers: readv into two iovecs, then recvmsg, until the body is in
	want := 7 + 7 + bodyLen
	got := 0
	for i := 0; got < want; i++ {
		a, b := make([]byte, 5), make([]byte, 4096)
		var r int
		read := func(fd int) (int, error) { return unix.Readv(fd, [][]byte{a, b}) }
		if i%2 == 1 {
			read = func(fd int) (int, error) {
				r, _, _, _, err := unix.RecvmsgBuffers(fd, [][]byte{a, b}, nil, 0)
				return r, err
			}
		}
		if err := rawRead(rc, read, &r); err != nil {
			return n, err
		}
		if r == 0 {
			return n, io.ErrUnexpectedEOF
		}
		got += r
	}
	n[1] += uint64(got)
	return n, nil
}

// serveCalls answers clientCalls: read, write; then (recvfrom with
// MSG_PEEK first, recvfrom) for the sendmsg and the sendto; then writev of
// two iovecs, write, and sendfile of the body.
func serveCalls(c net.Conn, file string, bodyLen int) ([2]uint64, error) {
	var n [2]uint64
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return n, err
	}
	buf := make([]byte, len(ping))
	if _, err := io.ReadFull(c, buf); err != nil {
		return n, err
	}
	n[0] += uint64(len(ping))
	w, err := c.Write([]byte("+PONG\r\n"))
	n[1] += uint64(w)
	if err != nil {
		return n, err
	}
	for got := 0; got < 2*len(ping); {
		peek := make([]byte, 64)
		var r int
		if err := rawRead(rc, func(fd int) (int, error) {
			r, _, err := unix.Recvfrom(fd, peek, unix.MSG_PEEK)
			return r, err
		}, &r); err != nil {
			return n, err
		}
		if r == 0 {
			return n, io.ErrUnexpectedEOF
		}
		b := make([]byte, 2*len(ping)-got)
		if err := rawRead(rc, func(fd int) (int, error) {
			r, _, err := unix.Recvfrom(fd, b, 0)
			return r, err
		}, &r); err != nil {
			return n, err
		}
		got += r
		n[0] += uint64(r)
	}
	if err := rawWrite(rc, func(fd int) (int, error) { return unix.Writev(fd, [][]byte{[]byte("+PO"), []byte("NG\r\n")}) }, &n[1]); err != nil {
		return n, err
	}
	w, err = c.Write([]byte("+PONG\r\n"))
	n[1] += uint64(w)
	if err != nil {
		return n, err
	}
	f, err := os.Open(file)
	if err != nil {
		return n, err
	}
	defer f.Close()
	var off int64
	for off < int64(bodyLen) {
		if err := rawWrite(rc, func(fd int) (int, error) {
			return unix.Sendfile(fd, int(f.Fd()), &off, bodyLen-int(off))
		}, nil); err != nil {
			return n, err
		}
	}
	n[1] += uint64(off)
	return n, nil
}

// rawWrite runs one write call on the socket, waiting while it would block,
// and adds what it moved to *n (nil: the call keeps its own count).
func rawWrite(rc syscall.RawConn, call func(fd int) (int, error), n *uint64) error {
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		var w int
		w, werr = call(int(fd))
		if errors.Is(werr, unix.EAGAIN) {
			return false
		}
		if n != nil && w > 0 {
			*n += uint64(w)
		}
		return true
	})
	return errors.Join(err, werr)
}

// rawRead runs one read call on the socket, waiting until there is data.
func rawRead(rc syscall.RawConn, call func(fd int) (int, error), n *int) error {
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		*n, rerr = call(int(fd))
		return !errors.Is(rerr, unix.EAGAIN)
	})
	return errors.Join(err, rerr)
}

// TestPrivilegedDataSourceExisting: a connection open before the engine
// loaded (picked up from /proc, by descriptor) is parsed from its next
// request on, both ends, with whichever source: the kernel functions find
// it by its socket, which the descriptor iterator gave it.
func TestPrivilegedDataSourceExisting(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, server := loopbackPair(t, ln)

	eng, p, _ := startSourceWith(t, "redis", true)
	if eng.kernelData() {
		// the iterator gave the picked-up entry its socket
		rc, err := client.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var fd uintptr
		rc.Control(func(f uintptr) { fd = f })
		var info l7ConnInfo
		if err := eng.Loader().Map(l7MapConns).Lookup(uint64(os.Getpid())<<32|uint64(fd), &info); err != nil {
			t.Fatalf("the client end was not picked up: %v", err)
		}
		if info.Sk == 0 || info.Midstream == 0 {
			t.Errorf("picked-up client end: socket %#x midstream %d, want a socket, midstream", info.Sk, info.Midstream)
		}
	}
	const rounds = 2
	pong := []byte("+PONG\r\n")
	for i := 0; i < rounds; i++ {
		if _, err := client.Write(ping); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(server, make([]byte, len(ping))); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Write(pong); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, make([]byte, len(pong))); err != nil {
			t.Fatal(err)
		}
	}
	want := [2]uint64{rounds * uint64(len(ping)), rounds * uint64(len(pong))}
	deadline := time.Now().Add(10 * time.Second)
	var conns [3]int
	var got [3][2]uint64
	for time.Now().Before(deadline) {
		if conns, got = p.snapshot(); got[l7.RoleClient] == want && got[l7.RoleServer] == want {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // nothing more may come
	conns, got = p.snapshot()
	if conns[l7.RoleClient] != 1 || conns[l7.RoleServer] != 1 {
		t.Errorf("connections client %d server %d, want 1 each", conns[l7.RoleClient], conns[l7.RoleServer])
	}
	for _, role := range []l7.Role{l7.RoleClient, l7.RoleServer} {
		if got[role] != want {
			t.Errorf("role %d: bytes [to server, to client] = %v, want %v", role, got[role], want)
		}
	}
}

// TestPrivilegedSocketCallsSkipped: on the socket tracepoints, a socket
// call that is not a read/write system call (here splice from a pipe into
// the connection) is counted, once per call, and its bytes are neither
// captured nor put on the descriptor; the calls around it are captured as
// usual. Only this test's port is observed, so the count is this test's.
func TestPrivilegedSocketCallsSkipped(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := &sourceProbe{probe: &probe{name: "redis"}, sources: map[l7.Source]int{}}
	var eng *Engine
	collectortest.Start(t, "redis", func(d collectors.Deps) collectors.Collector {
		cfg := DefaultConfig()
		cfg.ObserveSelf = true
		cfg.PickUpExisting = false
		cfg.Include.Ports = []int{ln.Addr().(*net.TCPAddr).Port}
		eng = NewEngine(d, cfg)
		eng.SelfComms = []string{}
		c, err := NewCollector(eng, d, p)
		if err != nil {
			t.Fatal(err)
		}
		return &group{eng: eng, cols: []*Collector{c}}
	}, collectortest.Options{})
	if eng.Source("send") != hook.ModeTPBTF {
		t.Skipf("skipping: the send hook is on %q, not the socket tracepoints", eng.Source("send"))
	}
	skippedNow := func() uint64 { return hook.SumCounters(eng.counters, CounterSlots)[CounterSockCallsSkipped] }
	before := skippedNow()
	client, server := loopbackPair(t, ln)
	pong := []byte("+PONG\r\n")
	var pipe [2]int
	if err := unix.Pipe(pipe[:]); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	const splices = 2
	buf := make([]byte, 64)
	for i := 0; i < splices; i++ {
		if _, err := client.Write(ping); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(server, buf[:len(ping)]); err != nil {
			t.Fatal(err)
		}
		// one answer by write, one by splice
		if _, err := server.Write(pong); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(pipe[1], pong); err != nil {
			t.Fatal(err)
		}
		rc, err := server.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		var serr error
		if err := rc.Write(func(fd uintptr) bool {
			n, serr = unix.Splice(pipe[0], nil, int(fd), nil, len(pong), 0)
			return !errors.Is(serr, unix.EAGAIN)
		}); err != nil || serr != nil || n != int64(len(pong)) {
			t.Fatalf("splice: %d, %v %v", n, err, serr)
		}
		if _, err := io.ReadFull(client, buf[:2*len(pong)]); err != nil {
			t.Fatal(err)
		}
	}
	// the server's side has its written answers only; the client reads
	// both (its reads are read calls)
	var want [3][2]uint64
	want[l7.RoleServer] = [2]uint64{splices * uint64(len(ping)), splices * uint64(len(pong))}
	want[l7.RoleClient] = [2]uint64{splices * uint64(len(ping)), 2 * splices * uint64(len(pong))}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, got := p.snapshot(); got == want && skippedNow()-before == splices {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // nothing more may come
	if got := skippedNow() - before; got != splices {
		t.Errorf("socket calls skipped: %d, want %d (the splices)", got, splices)
	}
	_, got := p.snapshot()
	for _, role := range []l7.Role{l7.RoleClient, l7.RoleServer} {
		if got[role] != want[role] {
			t.Errorf("role %d: bytes [to server, to client] = %v, want %v", role, got[role], want[role])
		}
	}
}

// loopbackPair is a connected TCP pair on ln: the client's end and the
// accepted one, closed at the test's end.
func loopbackPair(t *testing.T, ln net.Listener) (client, server net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

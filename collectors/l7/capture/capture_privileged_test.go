package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/collectors/l7"
)

// probe is a protocol that keeps what the layer handed its parsers: per
// role, the connections and the bytes of each direction.
type probe struct {
	name string
	mu   sync.Mutex
	// by role: connections of this process, bytes by direction
	conns [3]int
	bytes [3][2]uint64
	tails int // records with a tail
	// the longest prefix captured, by role and direction
	maxData [3][2]int
	pol     l7.Capture
}

func (p *probe) Name() string { return p.name }

func (p *probe) Capture() l7.Capture { return p.pol }

func (p *probe) Metrics(l7.Role) []l7.MetricSpec {
	return []l7.MetricSpec{{Name: "test." + p.name + ".duration", Unit: "s", Kind: l7.Duration}}
}

func (p *probe) NewParser(c *l7.Conn) l7.Parser {
	if c.PID == uint32(os.Getpid()) {
		p.mu.Lock()
		p.conns[c.Role]++
		p.mu.Unlock()
	}
	return &probeParser{p: p, c: c}
}

type probeParser struct {
	p     *probe
	c     *l7.Conn
	start uint64
	x     l7.Exchange
}

func (pp *probeParser) Feed(r *l7.Record, out l7.Sink) {
	if pp.c.PID == uint32(os.Getpid()) {
		pp.p.mu.Lock()
		pp.p.bytes[pp.c.Role][r.Dir] += r.Total
		pp.p.maxData[pp.c.Role][r.Dir] = max(pp.p.maxData[pp.c.Role][r.Dir], len(r.Data))
		if r.Tail != nil {
			pp.p.tails++
		}
		pp.p.mu.Unlock()
	}
	if r.Dir == l7.ToServer {
		pp.start = r.Start
		return
	}
	pp.x.Reset()
	pp.x.Start, pp.x.End = pp.start, r.End
	out.Exchange(pp.c, &pp.x)
}

func (pp *probeParser) Lost(l7.Dir, l7.Sink)  {}
func (pp *probeParser) Close(uint64, l7.Sink) {}

func (p *probe) snapshot() (conns [3]int, bytes [3][2]uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns, p.bytes
}

// group loads an engine with probes for the given protocols, as the agent
// runs its L7 collectors: one kernel object for all of them.
type group struct {
	eng  *Engine
	cols []*Collector
}

func (g *group) Name() string { return g.cols[0].Name() }
func (g *group) Load(ctx context.Context) error {
	for _, c := range g.cols {
		if err := c.Load(ctx); err != nil {
			return err
		}
	}
	return nil
}
func (g *group) Run(ctx context.Context) error { return g.eng.Run(ctx) }
func (g *group) Close() error {
	var errs []error
	for _, c := range g.cols {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func startProbes(t *testing.T, names ...string) (*Engine, map[string]*probe) {
	t.Helper()
	return startProbesWith(t, nil, names...)
}

// startProbesWith is startProbes with capture policies by protocol.
func startProbesWith(t *testing.T, pols map[string]l7.Capture, names ...string) (*Engine, map[string]*probe) {
	t.Helper()
	return startProbesConfig(t, nil, pols, names...)
}

// startProbesConfig is startProbesWith with the engine's configuration
// adjusted by tune (nil: the defaults).
func startProbesConfig(t *testing.T, tune func(*Config), pols map[string]l7.Capture, names ...string) (*Engine, map[string]*probe) {
	t.Helper()
	probes := map[string]*probe{}
	var g *group
	collectortest.Start(t, names[0], func(d collectors.Deps) collectors.Collector {
		cfg := DefaultConfig()
		cfg.ObserveSelf = true
		cfg.PickUpExisting = false
		if tune != nil {
			tune(&cfg)
		}
		g = &group{eng: NewEngine(d, cfg)}
		g.eng.SelfComms = []string{}
		for _, n := range names {
			p := &probe{name: n, pol: pols[n]}
			probes[n] = p
			c, err := NewCollector(g.eng, d, p)
			if err != nil {
				t.Fatal(err)
			}
			g.cols = append(g.cols, c)
		}
		return g
	}, collectortest.Options{})
	return g.eng, probes
}

// exchange is one protocol's first messages: who speaks first, and what.
type exchange struct {
	proto       string
	serverFirst bool
	first, then []byte
}

func be32(v int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

func pgStartup() []byte {
	body := append(be32(196608), "user\x00u\x00database\x00d\x00\x00"...)
	return append(be32(len(body)+4), body...)
}

func mysqlGreeting() []byte {
	payload := append([]byte{10}, "8.0.36\x00"...)
	payload = append(payload, make([]byte, 40)...)
	hdr := []byte{byte(len(payload)), byte(len(payload) >> 8), 0, 0}
	return append(hdr, payload...)
}

func kafkaAPIVersions() []byte {
	body := []byte{0, 18, 0, 3} // ApiVersions v3
	body = append(body, be32(1)...)
	body = append(body, 0, 5)
	body = append(body, "kcat1"...)
	body = append(body, 0, 0, 0) // tagged fields, client software name/version empty
	return append(be32(len(body)), body...)
}

var exchanges = []exchange{
	{proto: "redis", first: []byte("*1\r\n$4\r\nPING\r\n"), then: []byte("+PONG\r\n")},
	{proto: "memcached", first: []byte("get k\r\n"), then: []byte("END\r\n")},
	{proto: "postgresql", first: pgStartup(), then: []byte("R\x00\x00\x00\x08\x00\x00\x00\x00")},
	{proto: "mysql", serverFirst: true, first: mysqlGreeting(), then: []byte("\x05\x00\x00\x01\x0ahello")},
	{proto: "kafka", first: kafkaAPIVersions(), then: append(be32(6), 0, 0, 0, 1, 0, 0)},
	{proto: "http2", first: []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"), then: []byte("\x00\x00\x00\x04\x00\x00\x00\x00\x00")},
}

// converse runs n connections of x over loopback TCP, both ends in this
// process: the side that speaks first writes x.first, the other reads it
// and answers x.then, twice per connection.
func converse(t *testing.T, x exchange, n int) {
	t.Helper()
	converseOn(t, "tcp", "127.0.0.1:0", x, n)
}

// converseOn is converse over a listener of network at addr.
func converseOn(t *testing.T, network, addr string, x exchange, n int) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	speak := func(c net.Conn, first bool) error {
		for i := 0; i < 2; i++ {
			out, in := x.first, x.then
			if !first {
				out, in = x.then, x.first
				buf := make([]byte, len(in))
				if _, err := io.ReadFull(c, buf); err != nil {
					return err
				}
				if _, err := c.Write(out); err != nil {
					return err
				}
				continue
			}
			if _, err := c.Write(out); err != nil {
				return err
			}
			buf := make([]byte, len(in))
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
		}
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			err = speak(c, x.serverFirst)
			c.Close()
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if err := speak(c, !x.serverFirst); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedClassifyEveryProtocol: each protocol's first message, sent
// over real sockets, decides its connections (client and server ends) for
// its protocol and no other, and every record after it reaches that
// protocol's parser: exact connection and byte counts.
func TestPrivilegedClassifyEveryProtocol(t *testing.T) {
	var names []string
	for _, x := range exchanges {
		names = append(names, x.proto)
	}
	_, probes := startProbes(t, names...)
	const n = 3
	for _, x := range exchanges {
		converse(t, x, n)
	}
	for _, x := range exchanges {
		p := probes[x.proto]
		// two rounds: the first speaker's bytes go its way, the answers back
		toServer, toClient := uint64(2*n*len(x.first)), uint64(2*n*len(x.then))
		if x.serverFirst {
			toServer, toClient = toClient, toServer
		}
		deadline := time.Now().Add(10 * time.Second)
		var conns [3]int
		var bytes [3][2]uint64
		for time.Now().Before(deadline) {
			conns, bytes = p.snapshot()
			if conns[l7.RoleClient] >= n && conns[l7.RoleServer] >= n &&
				bytes[l7.RoleClient][l7.ToClient] >= toClient && bytes[l7.RoleServer][l7.ToClient] >= toClient {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // nothing more may come
		conns, bytes = p.snapshot()
		for _, role := range []l7.Role{l7.RoleClient, l7.RoleServer} {
			if conns[role] != n {
				t.Errorf("%s: %d connections of role %d, want %d", x.proto, conns[role], role, n)
			}
			if bytes[role][l7.ToServer] != toServer || bytes[role][l7.ToClient] != toClient {
				t.Errorf("%s role %d: %d bytes to the server, %d to the client; want %d and %d",
					x.proto, role, bytes[role][l7.ToServer], bytes[role][l7.ToClient], toServer, toClient)
			}
		}
	}
}

// TestPrivilegedDisabledProtocolNeverClassifies: with only Redis enabled, a
// Memcached and a Kafka conversation reach no parser and are counted as
// unobserved by what they looked like, once per end.
func TestPrivilegedDisabledProtocolNeverClassifies(t *testing.T) {
	eng, probes := startProbes(t, "redis")
	before := unobservedOf(t, eng)
	const n = 2
	for _, x := range exchanges {
		if x.proto == "memcached" || x.proto == "kafka" {
			converse(t, x, n)
		}
	}
	converse(t, exchanges[0], 1) // redis: still classified
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, _ := probes["redis"].snapshot(); c[l7.RoleClient] == 1 && c[l7.RoleServer] == 1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, _ := probes["redis"].snapshot(); c[l7.RoleClient] != 1 || c[l7.RoleServer] != 1 {
		t.Errorf("redis connections %v, want one of each role", c)
	}
	after := unobservedOf(t, eng)
	for _, k := range []l7HttpUnobserved{l7HttpUnobservedUNOBSERVED_MEMCACHED, l7HttpUnobservedUNOBSERVED_KAFKA} {
		if got := after[k] - before[k]; got != 2*n {
			t.Errorf("unobserved %s: %d, want %d (both ends of %d connections)", UnobservedReasons[k], got, 2*n, n)
		}
	}
}

func unobservedOf(t *testing.T, e *Engine) [l7HttpUnobservedUNOBSERVED_MAX]uint64 {
	t.Helper()
	var out [l7HttpUnobservedUNOBSERVED_MAX]uint64
	var perCPU []l7TgidUnobserved
	if err := e.Loader().Map(l7MapUnobserved).Lookup(uint32(os.Getpid()), &perCPU); err != nil {
		return out
	}
	for _, v := range perCPU {
		for i := range out {
			out[i] += v.N[i]
		}
	}
	return out
}

// TestPrivilegedClientSidePolicy: a protocol declaring l7.Capture.ClientSide
// gets only the client end of a connection whose both ends are tracked here
// (loopback TCP and a Unix socket): the server end reaches no parser and is
// counted on the protocol's client_side slot; a protocol without the flag
// gets both ends. A protocol's own capture size applies to its records
// after the one that decided the connection.
func TestPrivilegedClientSidePolicy(t *testing.T) {
	pols := map[string]l7.Capture{"redis": {ClientSide: true, Bytes: 3000}}
	// The counters are host-wide: only this test's process is observed, so
	// that other packages' Redis tests running beside it in CI (and their
	// local clients' server ends) are not counted here.
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	self := func(c *Config) { c.Include.Executables = []string{strings.TrimSpace(string(comm))} }
	eng, probes := startProbesConfig(t, self, pols, "redis", "memcached")
	const n = 3
	long := exchange{proto: "redis", first: []byte("*1\r\n$2000\r\n" + strings.Repeat("x", 2000) + "\r\n"), then: []byte("+OK\r\n")}
	converse(t, long, n)
	converseOn(t, "unix", filepath.Join(t.TempDir(), "s"), exchanges[0], n)
	converse(t, exchanges[1], n) // memcached: both ends
	wait := func(p *probe, client, server int) [3]int {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if c, _ := p.snapshot(); c[l7.RoleClient] >= client && c[l7.RoleServer] >= server {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // nothing more may come
		c, _ := p.snapshot()
		return c
	}
	if c := wait(probes["redis"], 2*n, 0); c[l7.RoleClient] != 2*n || c[l7.RoleServer] != 0 {
		t.Errorf("redis (client side): %d client and %d server connections, want %d and 0", c[l7.RoleClient], c[l7.RoleServer], 2*n)
	}
	if c := wait(probes["memcached"], n, n); c[l7.RoleClient] != n || c[l7.RoleServer] != n {
		t.Errorf("memcached: %d client and %d server connections, want %d of each", c[l7.RoleClient], c[l7.RoleServer], n)
	}
	k := hookSum(eng)
	if got := k[protoClientSideSlot(ProtoRedis)]; got != 2*n {
		t.Errorf("redis server ends given up: %d, want %d", got, 2*n)
	}
	if got := k[protoClientSideSlot(ProtoMemcached)]; got != 0 {
		t.Errorf("memcached server ends given up: %d, want 0", got)
	}
	p := probes["redis"]
	p.mu.Lock()
	got := p.maxData[l7.RoleClient][l7.ToServer]
	p.mu.Unlock()
	// the first command decides under the shared 1 KiB, the second is
	// captured under the protocol's 3000 bytes
	if want := len(long.first); got != want {
		t.Errorf("redis: longest prefix %d bytes, want %d (the protocol's capture size)", got, want)
	}
}

func hookSum(e *Engine) []uint64 { return hook.SumCounters(e.Counters(), CounterSlots) }

// TestPrivilegedRedisInlinePing: an inline PING ("PING\r\n", as
// redis-benchmark's ping_inline sends) decides a connection as Redis.
func TestPrivilegedRedisInlinePing(t *testing.T) {
	_, probes := startProbes(t, "redis")
	const n = 2
	x := exchange{proto: "redis", first: []byte("PING\r\n"), then: []byte("+PONG\r\n")}
	converse(t, x, n)
	p := probes["redis"]
	want := uint64(2 * n * len(x.first))
	var c [3]int
	var b [3][2]uint64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, b = p.snapshot(); c[l7.RoleClient] >= n && c[l7.RoleServer] >= n && b[l7.RoleServer][l7.ToServer] >= want {
			break
		}
	}
	if c[l7.RoleClient] != n || c[l7.RoleServer] != n || b[l7.RoleClient][l7.ToServer] != want || b[l7.RoleServer][l7.ToServer] != want {
		t.Errorf("inline PING: connections %v, bytes %v; want %d of each role and %d bytes to the server", c, b, n, want)
	}
}

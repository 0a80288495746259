package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/process/identity"
)

// startCollector loads the collector on the running kernel watching ports,
// honouring OTELBEE_ATTACH_MODE (the kernel-matrix harness forces each mode
// in turn, strictly). The tests need nothing but loopback: the DNS server is
// the responder in this package.
func startCollector(t *testing.T, cfg Config) (*Collector, *sdkmetric.ManualReader) {
	t.Helper()
	c, env := collectortest.Start(t, Name, func(d collectors.Deps) collectors.Collector {
		return New(d, cfg)
	}, collectortest.Options{
		// Optional: it only frees attribution state early; the LRU map bounds it.
		// errors: the tracepoint is Linux 5.14+; the tests say what they expect without it.
		OptionalHooks: []string{"release", "errors"},
	})
	return c.(*Collector), env.Reader
}

func testConfig(ports ...int) Config {
	cfg := DefaultConfig()
	cfg.Ports = nil
	for _, p := range ports {
		cfg.Ports = append(cfg.Ports, uint16(p))
	}
	return cfg
}

// lookupUDP sends one query on a connected UDP socket and waits for the
// answer (or gives up after wait).
func lookupUDP(t *testing.T, addr string, id uint16, name string, qt dnsmessage.Type, wait time.Duration) bool {
	t.Helper()
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(buildQuery(id, name, qt)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return false
	}
	var m message
	if err := parseMessage(buf[:n], &m); err != nil || m.id != id {
		t.Fatalf("bad answer for %s: %v", name, err)
	}
	return true
}

func lookupTCP(t *testing.T, addr string, id uint16, name string, qt dnsmessage.Type) {
	t.Helper()
	conn, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q := buildQuery(id, name, qt)
	if _, err := conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
		t.Fatal(err)
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, binary.BigEndian.Uint16(l[:]))); err != nil {
		t.Fatal(err)
	}
}

// lookupCounts sums dns.lookup.duration counts by
// "name type code-or-error transport" for this process.
func lookupCounts(t *testing.T, reader *sdkmetric.ManualReader) map[string]uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	pid := fmt.Sprint(os.Getpid())
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if m.Name != "dns.lookup.duration" || !ok {
				continue
			}
			for _, dp := range h.DataPoints {
				get := func(k string) string { v, _ := dp.Attributes.Value(attributeKey(k)); return v.Emit() }
				if get("process.pid") != pid {
					continue
				}
				outcome := get("otelbee.dns.response.code")
				if outcome == "" {
					outcome = get("error.type")
				}
				out[strings.Join([]string{get("dns.question.name"), get("otelbee.dns.question.type"), outcome, get("network.transport")}, " ")] += dp.Count
			}
		}
	}
	return out
}

func waitCounts(t *testing.T, reader *sdkmetric.ManualReader, want map[string]uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := lookupCounts(t, reader)
		if equalCounts(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup counts:\n got  %v\n want %v", sortedCounts(got), sortedCounts(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func equalCounts(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func sortedCounts(m map[string]uint64) string {
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%q=%d", k, v))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func waitPendingZero(t *testing.T, c *Collector) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := c.PendingInKernel()
		if err != nil {
			t.Fatal(err)
		}
		agent := c.stats.pendingAgentCount.Load()
		if n == 0 && agent == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending queries: kernel %d, agent %d; want 0", n, agent)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPrivilegedLookupsExact(t *testing.T) {
	r := startResponder(t)
	c, reader := startCollector(t, testConfig(r.port))
	want := map[string]uint64{}
	id := uint16(100)
	do := func(name string, qt dnsmessage.Type, n int, key string) {
		for range n {
			id++
			if !lookupUDP(t, r.addr(), id, name, qt, 5*time.Second) {
				t.Fatalf("no answer for %s", name)
			}
		}
		want[key] += uint64(n)
	}
	do("web.otelbee.test.", dnsmessage.TypeA, 7, "web.otelbee.test A NOERROR udp")
	do("Web.OtelBee.test.", dnsmessage.TypeAAAA, 3, "Web.OtelBee.test AAAA NOERROR udp") // as asked
	do("_sip._udp.otelbee.test.", dnsmessage.TypeSRV, 2, "_sip._udp.otelbee.test SRV NOERROR udp")
	do("txt.otelbee.test.", dnsmessage.TypeTXT, 4, "txt.otelbee.test TXT NOERROR udp")
	do("9.0.18.198.in-addr.arpa.", dnsmessage.TypePTR, 1, "9.0.18.198.in-addr.arpa PTR NOERROR udp")
	do("nx.otelbee.test.", dnsmessage.TypeA, 5, "nx.otelbee.test A NXDOMAIN udp")
	do("servfail.otelbee.test.", dnsmessage.TypeMX, 2, "servfail.otelbee.test MX SERVFAIL udp")

	// Go's own resolver (PreferGo), pointed at the responder.
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, r.addr())
	}}
	for range 3 {
		if _, err := res.LookupIP(context.Background(), "ip4", "go.otelbee.test."); err != nil {
			t.Fatal(err)
		}
	}
	want["go.otelbee.test A NOERROR udp"] += 3
	if _, err := res.LookupTXT(context.Background(), "nx.go.otelbee.test."); err == nil {
		t.Fatal("want NXDOMAIN")
	}
	want["nx.go.otelbee.test TXT NXDOMAIN udp"]++

	// DNS over TCP.
	if c.packetMode == hook.ModeCgroupSkb {
		for range 6 {
			id++
			lookupTCP(t, r.addr(), id, "tcp.otelbee.test.", dnsmessage.TypeA)
		}
		want["tcp.otelbee.test A NOERROR tcp"] += 6
	} else {
		t.Logf("packet hook in mode %s: DNS over TCP is not checked (seen on cgroup_skb only)", c.packetMode)
	}

	waitCounts(t, reader, want)
	waitPendingZero(t, c)
	if n := c.stats.queriesBad.Load() + c.stats.responsesBad.Load(); n != 0 {
		t.Errorf("unparseable packets: %d, want 0", n)
	}
	k := hook.SumCounters(c.counters, int(dnsDnsCounterCOUNTER_MAX))
	if d := k[dnsDnsCounterCOUNTER_DROP_QUERY_RINGBUF] + k[dnsDnsCounterCOUNTER_DROP_RESPONSE_RINGBUF]; d != 0 {
		t.Errorf("ring buffer drops: %d, want 0", d)
	}
}

// durations returns the dns.lookup.duration count and sum of this process's
// lookups of name with outcome (response code or error.type).
func durations(t *testing.T, reader *sdkmetric.ManualReader, name, outcome string) (uint64, float64) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var (
		n   uint64
		sum float64
	)
	pid := fmt.Sprint(os.Getpid())
	for _, dp := range collectortest.HistogramPoints(t, reader, "dns.lookup.duration") {
		get := func(k string) string { v, _ := dp.Attributes.Value(attributeKey(k)); return v.Emit() }
		code := get("otelbee.dns.response.code")
		if code == "" {
			code = get("error.type")
		}
		if get("process.pid") == pid && get("dns.question.name") == name && code == outcome {
			n += dp.Count
			sum += dp.Sum
		}
	}
	return n, sum
}

// TestPrivilegedTimeoutsFreeState: a client that gives up and closes its
// socket before the agent's timeout has its lookup recorded as a timeout
// when it closed (within the time the client itself measured); one that
// keeps its socket open is recorded at the agent's timeout. Both free the
// pending state.
func TestPrivilegedTimeoutsFreeState(t *testing.T) {
	r := startResponder(t)
	cfg := testConfig(r.port)
	cfg.Timeout = 300 * time.Millisecond
	c, reader := startCollector(t, cfg)
	const n = 9
	const wait = 20 * time.Millisecond
	var clientSaw time.Duration // from before the write to after the close
	for i := range n {
		start := time.Now()
		if lookupUDP(t, r.addr(), uint16(2000+i), "silent.otelbee.test.", dnsmessage.TypeA, wait) {
			t.Fatal("the silent name was answered")
		}
		clientSaw += time.Since(start)
	}
	// Three clients that keep their sockets open past the agent's timeout.
	const kept = 3
	for i := range kept {
		conn, err := net.Dial("udp4", r.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(buildQuery(uint16(2500+i), "silent.open.otelbee.test.", dnsmessage.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	if !lookupUDP(t, r.addr(), 3000, "silent-not.otelbee.test.", dnsmessage.TypeA, 5*time.Second) {
		t.Fatal("no answer")
	}
	waitCounts(t, reader, map[string]uint64{
		"silent.otelbee.test A timeout udp":      n,
		"silent.open.otelbee.test A timeout udp": kept,
		"silent-not.otelbee.test A NOERROR udp":  1,
	})
	waitPendingZero(t, c)
	wantTimeouts, wantClosed := uint64(kept), uint64(n)
	if !c.endsEarly() {
		// The tracepoint path keys queries by addresses, not sockets: a
		// close cannot end them.
		t.Logf("packet hook %s, release hook attached %v: every lookup ends at the timeout", c.packetMode, c.releaseAttached)
		wantTimeouts, wantClosed = n+kept, 0
	}
	if got, closed := c.stats.timeouts.Load(), c.stats.clientGaveUp.Load(); got != wantTimeouts || closed != wantClosed {
		t.Errorf("timeouts: %d at the agent's timeout, %d at the client's close; want %d, %d", got, closed, wantTimeouts, wantClosed)
	}
	// Each closed lookup lasted at least the client's wait and at most what
	// the client measured around it.
	cnt, sum := durations(t, reader, "silent.otelbee.test", "timeout")
	switch {
	case !c.endsEarly():
		if cnt != n || sum != n*cfg.Timeout.Seconds() {
			t.Errorf("closed lookups: %d, %.4f s in all; want %d at the %s timeout", cnt, sum, n, cfg.Timeout)
		}
	case cnt != n || sum < n*wait.Seconds() || sum > clientSaw.Seconds():
		t.Errorf("closed lookups: %d, %.4f s in all; want %d within [%.4f, %.4f] s", cnt, sum, n, n*wait.Seconds(), clientSaw.Seconds())
	}
	if cnt, sum := durations(t, reader, "silent.open.otelbee.test", "timeout"); cnt != kept || sum != kept*cfg.Timeout.Seconds() {
		t.Errorf("open lookups: %d, %.4f s in all; want %d at the %s timeout", cnt, sum, kept, cfg.Timeout)
	}
}

// TestPrivilegedRefused: a query to a port nobody listens on is answered by
// an ICMP port unreachable, and the client's connected socket fails with
// "connection refused" at once. The lookup is recorded then, with
// error.type=connection_refused (on kernels without the socket error
// tracepoint: as a timeout at the client's close), not at the agent's
// timeout.
func TestPrivilegedRefused(t *testing.T) {
	// A UDP port with nobody on it: bound, then closed.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cfg := testConfig(port)
	cfg.Timeout = time.Second
	c, reader := startCollector(t, cfg)
	want := "connection_refused"
	switch {
	case !c.endsEarly():
		want = "timeout"
		t.Logf("packet hook %s, release hook attached %v: a refusal ends at the timeout", c.packetMode, c.releaseAttached)
	case !c.errorsAttached:
		want = "timeout"
		t.Log("the errors hook is not attached on this kernel: a refusal ends at the client's close")
	}
	const n = 5
	var clientSaw time.Duration
	for i := range n {
		start := time.Now()
		conn, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(buildQuery(uint16(4000+i), "refused.otelbee.test.", dnsmessage.TypeA)); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Read(make([]byte, 512))
		conn.Close()
		clientSaw += time.Since(start)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("read: %v, want connection refused", err)
		}
	}
	waitCounts(t, reader, map[string]uint64{"refused.otelbee.test A " + want + " udp": n})
	waitPendingZero(t, c)
	cnt, sum := durations(t, reader, "refused.otelbee.test", want)
	switch {
	case !c.endsEarly():
		if cnt != n || sum != n*cfg.Timeout.Seconds() {
			t.Errorf("refused lookups: %d, %.6f s in all; want %d at the %s timeout", cnt, sum, n, cfg.Timeout)
		}
	case cnt != n || sum <= 0 || sum > clientSaw.Seconds():
		t.Errorf("refused lookups: %d, %.6f s in all; want %d within (0, %.6f] s (what the client saw)", cnt, sum, n, clientSaw.Seconds())
	}
	if c.endsEarly() && c.errorsAttached && c.stats.failed.Load() != n {
		t.Errorf("lookups ended by a socket error: %d, want %d", c.stats.failed.Load(), n)
	}
}

func TestPrivilegedMalformedPackets(t *testing.T) {
	r := startResponder(t)
	// A sink on another port that reads and never answers.
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	go io.Copy(io.Discard, sink)
	sinkPort := sink.LocalAddr().(*net.UDPAddr).Port
	c, reader := startCollector(t, testConfig(r.port, sinkPort))

	loop := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1} // name points at itself
	loop2 := []byte{0x12, 0x35, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0xc0, 12, 0, 1, 0, 1}
	bad := [][]byte{
		{0x00, 0x01, 0x01},                                          // 3 bytes: shorter than a header
		{0x00, 0x02, 0x01, 0x00, 0, 1, 0, 0, 0, 0},                  // truncated header
		buildQuery(7, "trunc.otelbee.test.", dnsmessage.TypeA)[:20], // question cut short
		loop, loop2,
		{0x00, 0x03, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0},            // no question
		{0x00, 0x04, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x7f, 'x'}, // label longer than the packet
	}
	for i := range 50 {
		g := make([]byte, 40+i)
		for j := range g {
			g[j] = byte(j*31 + i*17 + 5)
		}
		g[2] &^= 0x80 // QR=0: it claims to be a query
		bad = append(bad, g)
	}
	conn, err := net.Dial("udp4", sink.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wantBad := 0
	for _, b := range bad {
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		wantBad++
	}
	// Garbage the generator made parseable does not count: count exactly
	// what dnsmessage rejects.
	expected := 0
	for _, b := range bad {
		var m message
		if parseMessage(b, &m) != nil || m.response {
			expected++
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for c.stats.queriesBad.Load()+c.stats.queriesParsed.Load() < uint64(wantBad) {
		if time.Now().After(deadline) {
			t.Fatalf("queries delivered: %d bad + %d parsed, want %d", c.stats.queriesBad.Load(), c.stats.queriesParsed.Load(), wantBad)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := c.stats.queriesBad.Load(); got != uint64(expected) {
		t.Errorf("unparseable queries: %d, want %d", got, expected)
	}
	// The collector still sees the next good lookup.
	if !lookupUDP(t, r.addr(), 999, "after.otelbee.test.", dnsmessage.TypeA, 5*time.Second) {
		t.Fatal("no answer")
	}
	got := lookupCounts(t, reader)
	deadline = time.Now().Add(20 * time.Second)
	for got["after.otelbee.test A NOERROR udp"] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the good lookup after the garbage: %v", sortedCounts(got))
		}
		time.Sleep(20 * time.Millisecond)
		got = lookupCounts(t, reader)
	}
}

func attributeKey(k string) attribute.Key { return attribute.Key(k) }

// TestPrivilegedIPv6: lookups over IPv6 (connect6, the IPv6 header path),
// credited to this process with the resolver's IPv6 address.
func TestPrivilegedIPv6(t *testing.T) {
	u, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("skipping: no IPv6 loopback: %v", err)
	}
	defer u.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := u.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if out := answer(buf[:n]); out != nil {
				u.WriteToUDP(out, from)
			}
		}
	}()
	port := u.LocalAddr().(*net.UDPAddr).Port
	_, reader := startCollector(t, testConfig(port))
	addr := net.JoinHostPort("::1", fmt.Sprint(port))
	for i := range 4 {
		conn, err := net.Dial("udp6", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(buildQuery(uint16(500+i), "v6.otelbee.test.", dnsmessage.TypeAAAA))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1500)); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	waitCounts(t, reader, map[string]uint64{"v6.otelbee.test AAAA NOERROR udp": 4})
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "dns.lookup.duration" {
				for _, dp := range h.DataPoints {
					if v, _ := dp.Attributes.Value("server.address"); v.Emit() != "::1" {
						t.Errorf("server.address = %q, want ::1", v.Emit())
					}
				}
			}
		}
	}
}

const foldChildEnv = "OTELBEE_TEST_DNS_FOLD_CHILD"

// 40 short-lived processes of one service each make one lookup and exit (a
// cron job, a health-check script): they are one instance, so one series,
// counting exactly 40 lookups, where each used to have its own.
func TestPrivilegedFoldedLookupsExact(t *testing.T) {
	if addr := os.Getenv(foldChildEnv); addr != "" {
		if !lookupUDP(t, addr, 7, "fold.otelbee.test.", dnsmessage.TypeA, 5*time.Second) {
			t.Fatal("no answer")
		}
		os.Exit(0)
	}
	const children = 40
	r := startResponder(t)
	c, env := collectortest.Start(t, Name, func(d collectors.Deps) collectors.Collector {
		return New(d, testConfig(r.port))
	}, collectortest.Options{OptionalHooks: []string{"release", "errors"}, FoldInstances: true})
	_ = c
	svc := fmt.Sprintf("fold-dns-%d", os.Getpid())
	for range children {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPrivilegedFoldedLookupsExact$")
		cmd.Env = append(os.Environ(), foldChildEnv+"="+r.addr(), "OTEL_SERVICE_NAME="+svc)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		env.Processes.RefreshExec(uint32(cmd.Process.Pid), "", []byte("OTEL_SERVICE_NAME="+svc+"\x00"), 0) // as the exec watcher does, with the environment captured at exec
		if err := cmd.Wait(); err != nil {
			t.Fatalf("running the client: %v", err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var rm metricdata.ResourceMetrics
		if err := env.Reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		var points int
		var count uint64
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				h, ok := m.Data.(metricdata.Histogram[float64])
				if m.Name != "dns.lookup.duration" || !ok {
					continue
				}
				for _, dp := range h.DataPoints {
					if v, _ := dp.Attributes.Value(identity.KeyServiceName); v.AsString() == svc {
						points++
						count += dp.Count
					}
				}
			}
		}
		if points == 1 && count == children {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d short-lived processes of one service: %d series with %d lookups, want 1 series with %d", children, points, count, children)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

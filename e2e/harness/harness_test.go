package harness_test

import (
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/e2e/harness"
)

func TestPrometheusSelfScrape(t *testing.T) {
	p := harness.StartPrometheus(t, nil, time.Second)
	got := p.WaitFor(t, `up{job="prometheus"}`, func(s []harness.Sample) bool {
		return len(s) == 1 && s[0].Value == 1
	}, 30*time.Second)
	if inst := got[0].Labels["instance"]; inst != p.Addr {
		t.Errorf("up: instance = %q, want %q", inst, p.Addr)
	}

	// A scalar result and a query error are reported as such.
	s, err := p.Query(context.Background(), "1+1")
	if err != nil || len(s) != 1 || s[0].Value != 2 {
		t.Errorf("Query(1+1) = %v, %v; want one sample 2", s, err)
	}
	if _, err := p.Query(context.Background(), "sum(("); err == nil || !strings.Contains(err.Error(), "bad_data") {
		t.Errorf("Query(invalid) error = %v, want a bad_data error", err)
	}
}

func TestPrometheusScrapesTarget(t *testing.T) {
	// A tiny exporter on loopback, given as a URL with a custom path.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/custom", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte("# TYPE harness_test_value gauge\nharness_test_value{kind=\"x\"} 42.5\n"))
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	p := harness.StartPrometheus(t, []string{"http://" + l.Addr().String() + "/custom"}, 500*time.Millisecond)
	p.WaitFor(t, `harness_test_value{kind="x"}`, func(s []harness.Sample) bool {
		return len(s) == 1 && s[0].Value == 42.5
	}, 30*time.Second)
}

func testResource(t *testing.T, service string) *resource.Resource {
	t.Helper()
	res, err := resource.Merge(resource.Empty(), resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service)))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func sendMetrics(t *testing.T, exp sdkmetric.Exporter, service, transport string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithResource(testResource(t, service)),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))),
	)
	m := mp.Meter("harness-test")
	ctr, err := m.Int64Counter("harness.test.bytes", metric.WithUnit("By"))
	if err != nil {
		t.Fatal(err)
	}
	hist, err := m.Float64Histogram("harness.test.duration", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.1, 1, 10))
	if err != nil {
		t.Fatal(err)
	}
	attrs := metric.WithAttributes(attribute.String("transport", transport))
	ctr.Add(ctx, 40, attrs)
	ctr.Add(ctx, 2, attrs)
	ctr.Add(ctx, 7, metric.WithAttributes(attribute.String("transport", "other")))
	hist.Record(ctx, 0.05, attrs)
	hist.Record(ctx, 5, attrs)
	// Shutdown flushes the periodic reader: one export.
	if err := mp.Shutdown(ctx); err != nil {
		t.Fatalf("metric export over %s: %v", transport, err)
	}
}

func checkMetrics(t *testing.T, c *harness.Collector, service, transport string) {
	t.Helper()
	f := harness.Filter{Resource: map[string]string{"service.name": service}, Attributes: map[string]string{"transport": transport}}
	got := c.WaitForMetric(t, "harness.test.bytes", f, func(v float64) bool { return v == 42 }, 20*time.Second)
	if len(got) != 1 {
		t.Fatalf("harness.test.bytes %s: %d series, want 1", transport, len(got))
	}
	m := got[0].Metric
	if m.Kind != harness.KindSum || m.Temporality != "cumulative" || !m.Monotonic || m.Unit != "By" || m.Scope != "harness-test" {
		t.Errorf("harness.test.bytes metadata = %+v", m)
	}
	if p := got[0].Point; !p.IsInt || p.Int != 42 || p.Time.IsZero() {
		t.Errorf("harness.test.bytes point = %+v, want int 42 with a timestamp", p)
	}
	// Without the attribute filter both series add up.
	total, ok, err := c.Total("harness.test.bytes", harness.Filter{Resource: f.Resource})
	if err != nil || !ok || total != 49 {
		t.Errorf("Total(all transports) = %v, %v, %v; want 49", total, ok, err)
	}

	hs, err := c.Latest("harness.test.duration", f)
	if err != nil || len(hs) != 1 {
		t.Fatalf("harness.test.duration: %v series, err %v", len(hs), err)
	}
	h := hs[0].Point
	if hs[0].Metric.Kind != harness.KindHistogram || h.Count != 2 || math.Abs(h.Sum-5.05) > 1e-9 ||
		len(h.Bounds) != 3 || h.Bounds[1] != 1 || len(h.BucketCounts) != 4 ||
		h.BucketCounts[0] != 1 || h.BucketCounts[1] != 0 || h.BucketCounts[2] != 1 || h.BucketCounts[3] != 0 {
		t.Errorf("harness.test.duration point = %+v", h)
	}
	if !h.HasMinMax || h.Min != 0.05 || h.Max != 5 {
		t.Errorf("histogram min/max = %v %v (has %v), want 0.05 5", h.Min, h.Max, h.HasMinMax)
	}
}

func TestCollectorMetricsOverGRPC(t *testing.T) {
	c := harness.StartCollector(t)
	exp, err := otlpmetricgrpc.New(context.Background(),
		otlpmetricgrpc.WithEndpoint(c.GRPCEndpoint), otlpmetricgrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	sendMetrics(t, exp, "harness-grpc", "grpc")
	checkMetrics(t, c, "harness-grpc", "grpc")
}

func TestCollectorMetricsOverHTTP(t *testing.T) {
	c := harness.StartCollector(t)
	exp, err := otlpmetrichttp.New(context.Background(),
		otlpmetrichttp.WithEndpoint(c.HTTPEndpoint), otlpmetrichttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	sendMetrics(t, exp, "harness-http", "http")
	checkMetrics(t, c, "harness-http", "http")
}

func TestCollectorSpans(t *testing.T) {
	c := harness.StartCollector(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		exp  func() (sdktrace.SpanExporter, error)
	}{
		{"grpc", func() (sdktrace.SpanExporter, error) {
			return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(c.GRPCEndpoint), otlptracegrpc.WithInsecure())
		}},
		{"http", func() (sdktrace.SpanExporter, error) {
			return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(c.HTTPEndpoint), otlptracehttp.WithInsecure())
		}},
	} {
		exp, err := tc.exp()
		if err != nil {
			t.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithResource(testResource(t, "harness-spans-"+tc.name)), sdktrace.WithSyncer(exp))
		tr := tp.Tracer("harness-test")
		pctx, parent := tr.Start(ctx, "parent-"+tc.name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.Int("http.response.status_code", 503)))
		_, child := tr.Start(pctx, "child-"+tc.name, trace.WithSpanKind(trace.SpanKindClient))
		child.End()
		parent.SetStatus(codes.Error, "boom")
		parent.End()
		if err := tp.Shutdown(ctx); err != nil {
			t.Fatalf("span export over %s: %v", tc.name, err)
		}
	}
	spans := c.WaitForSpans(t, func(s []harness.Span) bool { return len(s) >= 4 }, 20*time.Second)
	if len(spans) != 4 {
		t.Fatalf("got %d spans, want 4: %+v", len(spans), spans)
	}
	by := map[string]harness.Span{}
	for _, s := range spans {
		by[s.Name] = s
	}
	for _, tr := range []string{"grpc", "http"} {
		p, ch := by["parent-"+tr], by["child-"+tr]
		if p.Kind != "Server" || ch.Kind != "Client" {
			t.Errorf("%s: kinds %q/%q, want Server/Client", tr, p.Kind, ch.Kind)
		}
		if p.ParentSpanID != "" || ch.ParentSpanID != p.SpanID || ch.TraceID != p.TraceID || len(p.TraceID) != 32 || len(p.SpanID) != 16 {
			t.Errorf("%s: ids parent=%+v child=%+v", tr, p, ch)
		}
		if p.StatusCode != "Error" || p.StatusMsg != "boom" || p.Attributes["http.response.status_code"] != "503" {
			t.Errorf("%s: parent status/attributes = %q %q %v", tr, p.StatusCode, p.StatusMsg, p.Attributes)
		}
		if p.Resource["service.name"] != "harness-spans-"+tr || p.Scope != "harness-test" {
			t.Errorf("%s: resource %v scope %q", tr, p.Resource, p.Scope)
		}
		if p.Start.IsZero() || p.End.Before(p.Start) || ch.Start.Before(p.Start) {
			t.Errorf("%s: times parent %v..%v child %v..%v", tr, p.Start, p.End, ch.Start, ch.End)
		}
	}
}

func TestNetnsPair(t *testing.T) {
	harness.RequireRoot(t)
	p := harness.NewNetnsPair(t, "pair")

	for _, dst := range []string{p.IPv4B, p.IPv6B} {
		rtts, err := harness.Ping(p.A, dst, 3, 10*time.Millisecond)
		if err != nil {
			t.Fatalf("ping %s: %v", dst, err)
		}
		if len(rtts) != 3 {
			t.Fatalf("ping %s: %d replies, want 3", dst, len(rtts))
		}
	}
	// And the other way round.
	if _, err := harness.Ping(p.B, p.IPv4A, 1, 0); err != nil {
		t.Fatalf("ping A from B: %v", err)
	}

	out, err := harness.Exec(p.A, "cat", "/sys/class/net/"+p.DevA+"/operstate")
	if err != nil || strings.TrimSpace(string(out)) != "up" {
		t.Errorf("Exec operstate = %q, %v", out, err)
	}
	if _, err := harness.Exec(p.A, "false"); err == nil {
		t.Errorf("Exec(false) succeeded")
	}

	// A TCP connection from A to B shows in both namespaces' counters.
	var l net.Listener
	if err := harness.InNetns(p.B, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(p.IPv4B, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before, err := harness.Snmp(p.A)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := before["TcpRetransSegs"]; !ok {
		t.Fatalf("Snmp: no TcpRetransSegs in %d counters", len(before))
	}
	if _, ok := before["TcpExtTCPSynRetrans"]; !ok {
		t.Errorf("Snmp: no TcpExtTCPSynRetrans (from /proc/net/netstat)")
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	var conn net.Conn
	if err := harness.InNetns(p.A, func() (err error) {
		conn, err = net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial from A to B: %v", err)
	}
	conn.Close()
	after, err := harness.Snmp(p.A)
	if err != nil {
		t.Fatal(err)
	}
	if d := after["TcpActiveOpens"] - before["TcpActiveOpens"]; d != 1 {
		t.Errorf("TcpActiveOpens in A grew by %d, want 1", d)
	}

}

func TestNetem(t *testing.T) {
	harness.RequireRoot(t)
	p := harness.NewNetnsPair(t, "netem")
	base, err := harness.Ping(p.A, p.IPv4B, 3, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	harness.NetemOrSkip(t, p.A, p.DevA, "delay", "20ms")
	rtts, err := harness.Ping(p.A, p.IPv4B, 5, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rtts {
		if r < 20*time.Millisecond {
			t.Errorf("RTT with netem delay 20ms = %v, want >= 20ms (without: %v)", r, base)
		}
	}
	if err := harness.NetemClear(p.A, p.DevA); err != nil {
		t.Fatal(err)
	}
}

func TestEmulatedPairDelay(t *testing.T) {
	harness.RequireRoot(t)
	e := harness.NewEmulatedPair(t, "emudelay", harness.Link{})
	base, err := harness.Ping(e.A, e.IPv4B, 3, 10*time.Millisecond)
	if err != nil {
		t.Fatalf("ping over the emulated link: %v", err)
	}
	e.SetLink(harness.Link{Delay: 10 * time.Millisecond}) // one way: RTT + 20ms
	for _, dst := range []string{e.IPv4B, e.IPv6B} {
		rtts, err := harness.Ping(e.A, dst, 5, 10*time.Millisecond)
		if err != nil {
			t.Fatalf("ping %s: %v", dst, err)
		}
		for _, r := range rtts {
			if r < 20*time.Millisecond || r > 500*time.Millisecond {
				t.Errorf("ping %s: RTT %v with 10ms each way, want 20ms..500ms (without delay: %v)", dst, r, base)
			}
		}
	}
	if s := e.Stats(); s.Forwarded[harness.AtoB] < 13 || s.Forwarded[harness.BtoA] < 13 {
		t.Errorf("stats = %+v, want >= 13 packets each way", s)
	}
}

func TestEmulatedPairDropCausesRetransmit(t *testing.T) {
	harness.RequireRoot(t)
	e := harness.NewEmulatedPair(t, "emudrop", harness.Link{Delay: time.Millisecond})
	var l net.Listener
	if err := harness.InNetns(e.B, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(e.IPv4B, "9000"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const size = 200_000
	got := make(chan int, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- int(n)
	}()
	before, err := harness.Snmp(e.A)
	if err != nil {
		t.Fatal(err)
	}
	e.SetLink(harness.Link{Delay: time.Millisecond, Drop: harness.DropTCPData(harness.AtoB, 9000, 3)})
	var conn net.Conn
	if err := harness.InNetns(e.A, func() (err error) {
		conn, err = net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case n := <-got:
		if n != size {
			t.Fatalf("server received %d bytes, want %d", n, size)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("transfer did not finish in 20s")
	}
	after, err := harness.Snmp(e.A)
	if err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(); s.Dropped[harness.AtoB] != 1 {
		t.Errorf("dropped %d packets A->B, want 1", s.Dropped[harness.AtoB])
	}
	if d := after["TcpRetransSegs"] - before["TcpRetransSegs"]; d < 1 {
		t.Errorf("TcpRetransSegs in A grew by %d, want >= 1 after a dropped data segment", d)
	}
}

func TestParseTCP(t *testing.T) {
	// IPv4 header (20 bytes) + TCP header (20 bytes) + 5 bytes payload.
	pkt := make([]byte, 45)
	pkt[0], pkt[9] = 0x45, 6
	pkt[2], pkt[3] = 0, 45
	tcp := pkt[20:]
	tcp[0], tcp[1] = 0x30, 0x39 // 12345
	tcp[2], tcp[3] = 0x23, 0x28 // 9000
	tcp[12] = 5 << 4
	tcp[13] = harness.TCPFlagACK | 0x08
	seg, err := harness.ParseTCP(pkt)
	if err != nil || seg.SrcPort != 12345 || seg.DstPort != 9000 || seg.PayloadLen != 5 || seg.Flags&harness.TCPFlagACK == 0 {
		t.Errorf("ParseTCP = %+v, %v", seg, err)
	}
	pkt[9] = 17 // UDP
	if _, err := harness.ParseTCP(pkt); err == nil {
		t.Error("ParseTCP accepted a UDP packet")
	}
	drop := harness.DropTCPData(harness.AtoB, 9000, 2)
	pkt[9] = 6
	if drop(harness.AtoB, pkt) || !drop(harness.AtoB, pkt) || drop(harness.AtoB, pkt) || drop(harness.BtoA, pkt) {
		t.Error("DropTCPData(…, 2) did not drop exactly the second segment")
	}
}

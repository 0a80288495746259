package prometheus

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
)

const scope = "github.com/otelbee/otelbee/collectors/tcp"

// newProvider returns a MeterProvider reading through a new Exporter, with a
// fixed agent resource (no SDK defaults, so expected lines are stable).
func newProvider(t testing.TB, opts ...Option) (*Exporter, *sdkmetric.MeterProvider) {
	t.Helper()
	for _, k := range []string{"OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"} {
		if _, ok := os.LookupEnv(k); ok {
			t.Setenv(k, "")
		}
	}
	e := New(opts...)
	res := resource.NewSchemaless(
		attribute.String("service.name", "otelbee"),
		attribute.String("service.version", "0.1.0"),
		attribute.String("host.name", "node-1"),
		attribute.String("os.type", "linux"),
	)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(e.Reader()))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return e, mp
}

func scrape(t testing.TB, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body.String())
	}
	return rec.Body.String()
}

func api() []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("service.name", "api"),
		attribute.String("service.namespace", "shop"),
		attribute.Int("process.pid", 100),
		attribute.String("process.executable.name", "api-server"),
		attribute.String("k8s.pod.name", "api-7d9f"),
	}
}

func db() []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("service.name", "db"),
		attribute.String("service.instance.id", "db-0"),
		attribute.Int("process.pid", 200),
		attribute.String("container.id", "c0ffee"),
	}
}

func with(ident []attribute.KeyValue, kvs ...attribute.KeyValue) metric.MeasurementOption {
	return metric.WithAttributes(append(ident, kvs...)...)
}

func TestScrape(t *testing.T) {
	e, mp := newProvider(t)
	ctx := context.Background()
	m := mp.Meter(scope, metric.WithInstrumentationVersion("0.1.0"))
	self := mp.Meter("github.com/otelbee/otelbee/agent")

	opened, _ := m.Int64Counter("tcp.connection.opened", metric.WithUnit("{connection}"), metric.WithDescription("TCP connections opened."))
	dur, _ := m.Float64Histogram("tcp.connection.duration", metric.WithUnit("s"), metric.WithDescription("TCP connection duration."),
		metric.WithExplicitBucketBoundaries(0.1, 1, 10))
	io, _ := m.Int64Counter("tcp.connection.io", metric.WithUnit("By"))
	active, _ := m.Int64UpDownCounter("tcp.connection.active", metric.WithUnit("{connection}"))
	produced, _ := self.Int64Counter("otelbee.events.produced", metric.WithDescription("Events produced."))

	in, out := attribute.String("network.io.direction", "receive"), attribute.String("network.io.direction", "transmit")
	opened.Add(ctx, 3, with(api(), attribute.String("network.connection.direction", "inbound")))
	opened.Add(ctx, 1, with(db(), attribute.String("network.connection.direction", "inbound")))
	dur.Record(ctx, 0.05, with(api()))
	dur.Record(ctx, 0.5, with(api()))
	dur.Record(ctx, 20, with(api()))
	io.Add(ctx, 1500, with(api(), in))
	io.Add(ctx, 300, with(api(), out))
	active.Add(ctx, 2, with(db()))
	active.Add(ctx, -1, with(db()))
	produced.Add(ctx, 42, metric.WithAttributes(attribute.String("collector", "tcp")))

	body := scrape(t, e.Handler())
	const sc = `otel_scope_name="` + scope + `",otel_scope_version="0.1.0"`
	want := []string{
		"# HELP tcp_connection_opened_total TCP connections opened.",
		"# TYPE tcp_connection_opened_total counter",
		`tcp_connection_opened_total{job="shop/api",network_connection_direction="inbound",` + sc + `} 3`,
		`tcp_connection_opened_total{instance="db-0",job="db",network_connection_direction="inbound",` + sc + `} 1`,

		"# HELP tcp_connection_duration_seconds TCP connection duration.",
		"# TYPE tcp_connection_duration_seconds histogram",
		`tcp_connection_duration_seconds_bucket{job="shop/api",` + sc + `,le="0.1"} 1`,
		`tcp_connection_duration_seconds_bucket{job="shop/api",` + sc + `,le="1"} 2`,
		`tcp_connection_duration_seconds_bucket{job="shop/api",` + sc + `,le="10"} 2`,
		`tcp_connection_duration_seconds_bucket{job="shop/api",` + sc + `,le="+Inf"} 3`,
		`tcp_connection_duration_seconds_sum{job="shop/api",` + sc + `} 20.55`,
		`tcp_connection_duration_seconds_count{job="shop/api",` + sc + `} 3`,

		"# TYPE tcp_connection_io_bytes_total counter",
		`tcp_connection_io_bytes_total{job="shop/api",network_io_direction="receive",` + sc + `} 1500`,
		`tcp_connection_io_bytes_total{job="shop/api",network_io_direction="transmit",` + sc + `} 300`,

		"# TYPE tcp_connection_active gauge",
		`tcp_connection_active{instance="db-0",job="db",` + sc + `} 1`,

		// Self metric: the agent's own job and instance.
		"# HELP otelbee_events_produced_total Events produced.",
		`otelbee_events_produced_total{collector="tcp",job="otelbee",otel_scope_name="github.com/otelbee/otelbee/agent"} 42`,

		// One per (job, instance), without the attributes that make them.
		"# HELP target_info Target metadata",
		"# TYPE target_info gauge",
		`target_info{host_name="node-1",job="otelbee",os_type="linux",service_version="0.1.0"} 1`,
		`target_info{host_name="node-1",job="shop/api",k8s_pod_name="api-7d9f",os_type="linux",process_executable_name="api-server",process_pid="100"} 1`,
		`target_info{container_id="c0ffee",host_name="node-1",instance="db-0",job="db",os_type="linux",process_pid="200"} 1`,
	}
	lines := strings.Split(body, "\n")
	have := make(map[string]bool, len(lines))
	for _, l := range lines {
		have[l] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("missing line:\n  %s", w)
		}
	}
	// Identity attributes never become labels of ordinary series.
	for _, l := range lines {
		if strings.HasPrefix(l, "target_info") || strings.HasPrefix(l, "#") {
			continue
		}
		for _, bad := range []string{"process_pid", "k8s_pod_name", "container_id", "process_executable_name", "service_name", "service_namespace", "service_instance_id"} {
			if strings.Contains(l, bad) {
				t.Errorf("identity attribute %s on a series: %s", bad, l)
			}
		}
	}
	if got := strings.Count(body, "\ntarget_info{"); got != 3 {
		t.Errorf("%d target_info series, want 3", got)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("scrape:\n%s", body)
	}
	if e.Skipped() != 0 {
		t.Errorf("Skipped() = %d, want 0", e.Skipped())
	}
}

func TestScrapeWithoutScopeLabels(t *testing.T) {
	e, mp := newProvider(t, WithoutScopeLabels())
	c, _ := mp.Meter(scope).Int64Counter("tcp.connection.opened", metric.WithUnit("{connection}"))
	c.Add(context.Background(), 1, with(api()))
	body := scrape(t, e.Handler())
	if want := `tcp_connection_opened_total{job="shop/api"} 1`; !strings.Contains(body, want+"\n") {
		t.Errorf("missing %q in:\n%s", want, body)
	}
}

// Two processes of one service without service.instance.id share their
// labels: additive series are summed and target_info keeps what they agree
// on, so there is never a duplicate series (which would fail the scrape).
func TestScrapeMergesSameIdentity(t *testing.T) {
	e, mp := newProvider(t)
	ctx := context.Background()
	m := mp.Meter(scope)
	c, _ := m.Int64Counter("tcp.connection.opened")
	h, _ := m.Float64Histogram("tcp.connection.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(1))
	g, _ := m.Float64Gauge("tcp.rtt.last", metric.WithUnit("s"))
	worker := func(pid int) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("service.name", "gunicorn"), attribute.Int("process.pid", pid),
			attribute.String("process.executable.name", "python3")}
	}
	c.Add(ctx, 2, with(worker(1)))
	c.Add(ctx, 5, with(worker(2)))
	h.Record(ctx, 0.5, with(worker(1)))
	h.Record(ctx, 3, with(worker(2)))
	g.Record(ctx, 0.1, with(worker(1)))
	g.Record(ctx, 0.2, with(worker(2)))

	body := scrape(t, e.Handler())
	const sc = `otel_scope_name="` + scope + `"`
	for _, want := range []string{
		`tcp_connection_opened_total{job="gunicorn",` + sc + `} 7`,
		`tcp_connection_duration_seconds_bucket{job="gunicorn",` + sc + `,le="1"} 1`,
		`tcp_connection_duration_seconds_count{job="gunicorn",` + sc + `} 2`,
		`target_info{host_name="node-1",job="gunicorn",os_type="linux",process_executable_name="python3"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %q", want)
		}
	}
	if n := strings.Count(body, "\ntcp_rtt_last_seconds{"); n != 1 {
		t.Errorf("%d tcp_rtt_last_seconds series, want 1 (a gauge is not summed; the first is kept)", n)
	}
	if e.Skipped() != 1 {
		t.Errorf("Skipped() = %d, want 1 (the second gauge value)", e.Skipped())
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", body)
	}
}

// A counter and a gauge translating to the same name must not break the
// scrape: the first wins, the loser is skipped, counted and logged once.
func TestScrapeNameClash(t *testing.T) {
	var logs bytes.Buffer
	e, mp := newProvider(t, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx := context.Background()
	m := mp.Meter(scope)
	c, _ := m.Int64Counter("queue.depth")             // -> queue_depth_total (counter)
	g, _ := m.Int64Gauge("queue.depth_total")         // -> queue_depth_total (gauge): loses
	h, _ := m.Float64Histogram("rpc.latency")         // -> rpc_latency (histogram)
	s, _ := m.Int64UpDownCounter("rpc.latency.count") // -> rpc_latency_count (gauge): collides with the histogram
	ti, _ := m.Int64Gauge("target.info")              // -> target_info: reserved for resources
	c.Add(ctx, 1)
	g.Record(ctx, 5)
	h.Record(ctx, 1)
	s.Add(ctx, 1)
	ti.Record(ctx, 7)

	for range 2 {
		body := scrape(t, e.Handler())
		if !strings.Contains(body, "# TYPE queue_depth_total counter\n") || strings.Contains(body, "queue_depth_total gauge") {
			t.Errorf("the counter should win queue_depth_total:\n%s", body)
		}
		if !strings.Contains(body, "# TYPE rpc_latency histogram\n") || strings.Contains(body, "rpc_latency_count gauge") {
			t.Errorf("the histogram should win rpc_latency:\n%s", body)
		}
		if strings.Contains(body, "} 7\n") {
			t.Errorf("a metric named target.info joined target_info:\n%s", body)
		}
	}
	if e.Skipped() != 6 {
		t.Errorf("Skipped() = %d, want 6 (3 losers x 2 scrapes)", e.Skipped())
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 3 {
		t.Errorf("%d warnings, want 2 (once per cause):\n%s", n, logs.String())
	}
}

func TestScrapeSanitizesLabels(t *testing.T) {
	e, mp := newProvider(t, WithoutScopeLabels())
	c, _ := mp.Meter(scope).Int64Counter("http.server.requests")
	c.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("a.b", "1"),
		attribute.String("a-b", "2"), // same label a_b: values joined in key order
		attribute.String("2xx", "yes"),
		attribute.String("le", "x"),
		attribute.String("job", "spoof"), // cannot override the identity label
		attribute.StringSlice("tags", []string{"x", "y"}),
		attribute.String("empty", ""),
		attribute.String("bad.utf8", "\xff"),
	))
	body := scrape(t, e.Handler())
	want := `http_server_requests_total{a_b="2;1",bad_utf8="\ufffd",exported_job="spoof",job="otelbee",key_2xx="yes",le="x",tags="[\"x\",\"y\"]"} 1`
	want = strings.ReplaceAll(want, `\ufffd`, "\ufffd")
	if !strings.Contains(body, want+"\n") {
		t.Errorf("missing\n  %s\nin:\n%s", want, body)
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name, unit string
		data       string // counter | updown | gauge | histogram
		want       string
	}{
		{"tcp.connection.opened", "{connection}", "counter", "tcp_connection_opened_total"},
		{"tcp.connection.duration", "s", "histogram", "tcp_connection_duration_seconds"},
		{"tcp.connection.io", "By", "counter", "tcp_connection_io_bytes_total"},
		{"tcp.connection.active", "{connection}", "updown", "tcp_connection_active"},
		{"dns.lookup.duration", "ms", "histogram", "dns_lookup_duration_milliseconds"},
		{"otelbee.ringbuf.fill", "1", "gauge", "otelbee_ringbuf_fill_ratio"},
		{"otelbee.ringbuf.fill", "1", "updown", "otelbee_ringbuf_fill"},
		{"otelbee.events.dropped", "1", "counter", "otelbee_events_dropped_total"},
		{"net.throughput", "By/s", "gauge", "net_throughput_bytes_per_second"},
		{"net.packets.rate", "{packet}/s", "gauge", "net_packets_rate_per_second"},
		{"requests_total", "", "counter", "requests_total"},
		{"request.duration.seconds", "s", "histogram", "request_duration_seconds"},
		{"odd..name--x", "packets", "counter", "odd_name_x_packets_total"},
		{"5xx.count", "", "gauge", "_5xx_count"},
		{"mem.used", "MiBy", "gauge", "mem_used_mebibytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" "+tt.unit+" "+tt.data, func(t *testing.T) {
			k, isGauge := kindGauge, false
			switch tt.data {
			case "counter":
				k = kindCounter
			case "histogram":
				k = kindHistogram
			case "gauge":
				isGauge = true
			}
			got, _ := promName(&metricdata.Metrics{Name: tt.name, Unit: tt.unit}, k, isGauge)
			if got != tt.want {
				t.Errorf("promName(%q, %q, %s) = %q, want %q", tt.name, tt.unit, tt.data, got, tt.want)
			}
		})
	}
}

func TestNoMetricsBeforeRegistration(t *testing.T) {
	e := New()
	body := scrape(t, e.Handler()) // reader not registered on a provider
	if strings.Contains(body, "target_info") {
		t.Errorf("unexpected series before registration:\n%s", body)
	}
}

// BenchmarkScrape1000Series scrapes 1000 series (100 services x 10 ports;
// a counter and a histogram each on half of them) through the handler,
// text format, including collection, split and translation.
func BenchmarkScrape1000Series(b *testing.B) {
	e, mp := newProvider(b)
	ctx := context.Background()
	m := mp.Meter(scope)
	c, _ := m.Int64Counter("tcp.connection.opened", metric.WithUnit("{connection}"))
	h, _ := m.Float64Histogram("tcp.connection.duration", metric.WithUnit("s"))
	for svc := range 100 {
		for port := range 5 {
			attrs := with([]attribute.KeyValue{
				attribute.String("service.name", fmt.Sprintf("svc-%03d", svc)),
				attribute.Int("process.pid", 1000+svc),
				attribute.String("k8s.pod.name", fmt.Sprintf("svc-%03d-abc", svc)),
			}, attribute.Int("server.port", 8000+port))
			c.Add(ctx, 1, attrs)
			h.Record(ctx, 0.3, attrs)
		}
	}
	if n := strings.Count(scrape(b, e.Handler()), "\n") - 5; n < 1000 {
		b.Fatalf("only %d lines", n)
	}
	h2 := e.Handler()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	w := &discardWriter{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h2.ServeHTTP(w, req)
		if w.code != 0 && w.code != http.StatusOK {
			b.Fatal(w.code)
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the exporter rather than a growing recorder buffer.
type discardWriter struct {
	header http.Header
	code   int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

func TestScrapeOpenMetricsUnit(t *testing.T) {
	e, mp := newProvider(t)
	h, _ := mp.Meter(scope).Float64Histogram("tcp.connection.duration", metric.WithUnit("s"))
	h.Record(context.Background(), 1, with(api()))
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, req)
	if !strings.Contains(rec.Body.String(), "# UNIT tcp_connection_duration_seconds seconds\n") {
		t.Errorf("OpenMetrics scrape without UNIT:\n%s", rec.Body.String())
	}
}

// Exponential histograms become native histograms, visible in the protobuf
// exposition format.
func TestScrapeNativeHistogram(t *testing.T) {
	e := New()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.Reader()),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", "otelbee"))),
		sdkmetric.WithView(sdkmetric.NewView(sdkmetric.Instrument{Name: "dns.lookup.duration"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}})))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	h, _ := mp.Meter(scope).Float64Histogram("dns.lookup.duration", metric.WithUnit("s"))
	for _, v := range []float64{0.001, 0.002, 0.004, 0} {
		h.Record(context.Background(), v, with(db()))
	}

	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, req)
	dec := expfmt.NewDecoder(rec.Body, expfmt.NewFormat(expfmt.TypeProtoDelim))
	var found bool
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			break
		}
		if mf.GetName() != "dns_lookup_duration_seconds" {
			continue
		}
		found = true
		hist := mf.GetMetric()[0].GetHistogram()
		// 0.001..0.004 spans two doublings; the SDK picks the largest
		// scale that fits 160 buckets: 6 (64 per doubling).
		if hist.GetSchema() != 6 || hist.GetSampleCount() != 4 || hist.GetZeroCount() != 1 || hist.GetZeroThreshold() != nativeZeroThreshold {
			t.Errorf("native histogram = schema %d count %d zero %d threshold %g; want 6, 4, 1, %g",
				hist.GetSchema(), hist.GetSampleCount(), hist.GetZeroCount(), hist.GetZeroThreshold(), nativeZeroThreshold)
		}
		var buckets, running int64
		for _, d := range hist.GetPositiveDelta() {
			running += d // deltas between consecutive bucket counts
			buckets += running
		}
		if buckets != 3 {
			t.Errorf("positive buckets hold %d observations, want 3", buckets)
		}
		if len(hist.GetPositiveSpan()) == 0 {
			t.Errorf("no positive buckets")
		}
	}
	if !found {
		t.Fatalf("dns_lookup_duration_seconds not in the scrape")
	}
}

func TestToNative(t *testing.T) {
	// Scale 10 downscaled to 8 merges 4 OTel buckets into one; the +1
	// moves from lower-bound to upper-bound indexing.
	p := &metricdata.ExponentialHistogramDataPoint[float64]{
		Scale: 10, Count: 6, ZeroCount: 0,
		PositiveBucket: metricdata.ExponentialBucket{Offset: -4, Counts: []uint64{1, 1, 1, 1, 2}},
		NegativeBucket: metricdata.ExponentialBucket{Offset: 3, Counts: []uint64{0}},
	}
	nh, ok := toNative(p)
	if !ok {
		t.Fatal("scale 10 rejected")
	}
	// OTel indices -4..-1 >> 2 = -1 -> Prometheus 0; index 0 >> 2 = 0 -> 1.
	if nh.schema != 8 || len(nh.pos) != 2 || nh.pos[0] != 4 || nh.pos[1] != 2 || len(nh.neg) != 0 {
		t.Errorf("toNative = schema %d pos %v neg %v", nh.schema, nh.pos, nh.neg)
	}
	if _, ok := toNative(&metricdata.ExponentialHistogramDataPoint[int64]{Scale: -5}); ok {
		t.Error("scale -5 accepted")
	}
}

func TestServe(t *testing.T) {
	e, mp := newProvider(t)
	c, _ := mp.Meter(scope).Int64Counter("tcp.connection.opened")
	c.Add(context.Background(), 1, with(api()))

	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()

	// A second server on the same address fails with a clear error.
	err = e.Serve(context.Background(), addr)
	if err == nil || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), addr) {
		t.Errorf("Serve on a busy address = %v, want an 'already in use' error naming %s", err, addr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ServeListener(ctx, ln) }()

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `tcp_connection_opened_total{`) {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("/: %d\n%s", code, body)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d, want 404", code)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("server still answering after shutdown")
	}
}

// producerFunc adapts a function to sdkmetric.Producer.
type producerFunc func(context.Context) ([]metricdata.ScopeMetrics, error)

func (f producerFunc) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) { return f(ctx) }

// TestScrapeExemplars: histogram exemplars with a span become OpenMetrics
// exemplars labelled trace_id and span_id, on the bucket of their value;
// one without a span is left out.
func TestScrapeExemplars(t *testing.T) {
	tid := []byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	sid := []byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	at := time.Unix(1700000000, 0)
	e := New(WithProducer(producerFunc(func(context.Context) ([]metricdata.ScopeMetrics, error) {
		return []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{{
			Name: "http.server.request.duration", Unit: "s",
			Data: metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality,
				DataPoints: []metricdata.HistogramDataPoint[float64]{{
					Attributes: attribute.NewSet(append(api(), attribute.String("http.route", "/users/{id}"))...),
					StartTime:  at, Time: at, Count: 3, Sum: 0.3,
					Bounds: []float64{0.05, 0.5}, BucketCounts: []uint64{1, 2, 0},
					Exemplars: []metricdata.Exemplar[float64]{
						{Value: 0.2, Time: at, TraceID: tid, SpanID: sid},
						{Value: 0.01, Time: at}, // no span
					},
				}}},
		}}}}, nil
	})))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.Reader()))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, req)
	body := rec.Body.String()
	// The exemplar's labels come in either order (a map).
	var bucket string
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, `le="0.5"} 3 # {`) {
			bucket = line
		}
	}
	for _, want := range []string{`trace_id="4bf92f3577b34da6a3ce929d0e0e4736"`, `span_id="00f067aa0ba902b7"`, `"} 0.2 1.7e+09`} {
		if !strings.Contains(bucket, want) {
			t.Errorf("the 0.5 bucket's exemplar lacks %s:\n%s", want, body)
		}
	}
	if n := strings.Count(body, "# {"); n != 1 {
		t.Errorf("%d exemplars exposed, want 1:\n%s", n, body)
	}
}

// BenchmarkScrapeSeries is BenchmarkScrape1000Series at 1,000 and 50,000
// data points (half counters, half histograms), reporting the cost per
// series, to show how a scrape grows with the series (issue 16).
func BenchmarkScrapeSeries(b *testing.B) {
	for _, n := range []int{1000, 50000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			e := New()
			// No cardinality limit (the SDK's default, 2,000, would fold
			// the 50,000 into its overflow series).
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.Reader()), sdkmetric.WithCardinalityLimit(0))
			b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			ctx := context.Background()
			m := mp.Meter(scope)
			c, _ := m.Int64Counter("tcp.connection.opened", metric.WithUnit("{connection}"))
			h, _ := m.Float64Histogram("tcp.connection.duration", metric.WithUnit("s"))
			for svc := range n / 10 {
				for port := range 5 {
					attrs := with([]attribute.KeyValue{
						attribute.String("service.name", fmt.Sprintf("svc-%05d", svc)),
						attribute.Int("process.pid", 1000+svc),
						attribute.String("k8s.pod.name", fmt.Sprintf("svc-%05d-abc", svc)),
					}, attribute.Int("server.port", 8000+port))
					c.Add(ctx, 1, attrs)
					h.Record(ctx, 0.3, attrs)
				}
			}
			if os.Getenv("BENCH_COLLECT_ONLY") != "" {
				// The SDK's share: the collection alone.
				var rm metricdata.ResourceMetrics
				b.ReportAllocs()
				cpu0 := cpuTime()
				for b.Loop() {
					_ = e.reader.Collect(ctx, &rm)
				}
				b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/series")
				return
			}
			body := scrape(b, e.Handler())
			if got := strings.Count(body, "tcp_connection_opened_total{"); got != n/2 {
				b.Fatalf("%d counter series exposed, want %d", got, n/2)
			}
			h2 := e.Handler()
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			w := &discardWriter{header: http.Header{}}
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				h2.ServeHTTP(w, req)
			}
			b.ReportMetric(float64(len(body))/float64(n), "bytes/series")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/series")
			// CPU time (the process's, garbage collection included) is what
			// a scrape costs the node; wall time also counts waiting for a
			// CPU on a shared machine.
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/series")
		})
	}
}

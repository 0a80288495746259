package httpc

import (
	"net/netip"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/process/identity"
)

// unitCollector is a collector without its kernel side, fed exchanges
// directly, on one server connection.
func unitCollector(tb testing.TB, sampler sdktrace.Sampler, opts ...sdktrace.TracerProviderOption) (*Collector, *sdkmetric.ManualReader) {
	return unitCollectorWith(tb, DefaultConfig(), sampler, opts...)
}

func unitCollectorWith(tb testing.TB, cfg Config, sampler sdktrace.Sampler, opts ...sdktrace.TracerProviderOption) (*Collector, *sdkmetric.ManualReader) {
	producers := &collectors.ProducerSet{}
	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(producers))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tp := sdktrace.NewTracerProvider(append(opts, sdktrace.WithSampler(sampler), sdktrace.WithIDGenerator(sampling.IDGenerator{}))...)
	c := New(collectors.Deps{
		Meter:          mp.Meter("unit"),
		TracerProvider: tp,
		Sampler:        sampler,
		Processes:      identity.NewResolver("/proc", "unit"),
		Producers:      producers,
	}, cfg)
	var err error
	if c.routes, err = NewRoutes(nil, 100); err != nil {
		tb.Fatal(err)
	}
	producers.Add(c)
	c.setupTracing()
	done := make(chan struct{})
	go func() {
		for rec := range c.spans {
			c.endSpan(&rec)
		}
		close(done)
	}()
	tb.Cleanup(func() { close(c.spans); <-done })
	st := c.newConn(connKey{tgid: uint32(1), fd: 3, start: 1})
	st.server = true
	st.peer = netip.MustParseAddr("127.0.0.1")
	st.peerPort = 40000
	st.svc = "/unit"
	c.cur = st
	return c, reader
}

// BenchmarkOnExchange is the agent's work per request after parsing: route,
// series, sampling decision (1 % sampled, as in the overhead harness) and the
// three histograms.
func BenchmarkOnExchange(b *testing.B) {
	c, reader := unitCollector(b, sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01)))
	ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/users/12345"),
		RespBody: 12, Start: 1000, End: 51000}
	b.ReportAllocs()
	for b.Loop() {
		c.onExchange(ex)
	}
	b.StopTimer()
	if n := serverRequests(b, reader); n != c.recorded.Load() {
		b.Fatalf("%d requests in the histogram, %d recorded", n, c.recorded.Load())
	}
}

// TestSamplingDecidedBeforeStart: the collector's own sampling decision and
// the SDK's agree: every request it lets through is exported as a sampled
// span, at the configured ratio; a remote parent's flag is obeyed; the
// duration histogram's exemplars point at exported spans only.
func TestSamplingDecidedBeforeStart(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	c, reader := unitCollector(t, sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.25)), sdktrace.WithSyncer(exp))
	ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/a"), Start: 1000, End: 2000}
	const n = 4000
	for range n {
		c.onExchange(ex)
	}
	parented := *ex
	parented.HasParent = true
	parented.TraceID = [16]byte{7}
	parented.ParentSpanID = [8]byte{8}
	for _, flags := range []byte{0, 1, 0, 1, 1} {
		parented.TraceFlags = flags
		c.onExchange(&parented)
	}
	waitFor(t, func() bool { return c.spansQueued.Load() == uint64(len(exp.GetSpans())) })
	spans := exp.GetSpans()
	exported := map[string]bool{}
	children := 0
	for _, s := range spans {
		if !s.SpanContext.IsSampled() {
			t.Fatalf("exported span not sampled: %v", s.SpanContext)
		}
		exported[s.SpanContext.SpanID().String()] = true
		if s.SpanContext.TraceID() == (trace.TraceID{7}) {
			children++
			if s.Parent.SpanID() != (trace.SpanID{8}) {
				t.Fatalf("child span's parent %v", s.Parent.SpanID())
			}
		}
	}
	if children != 3 {
		t.Fatalf("%d spans joined the sampled remote parents, want 3", children)
	}
	// Binomial: mean 1000, sigma ~27.
	if roots := len(spans) - children; roots < 880 || roots > 1120 {
		t.Fatalf("%d of %d requests sampled at ratio 0.25", roots, n)
	}
	if got := serverRequests(t, reader); got != n+5 {
		t.Fatalf("%d requests in the histogram, want %d", got, n+5)
	}
	exemplars := 0
	for _, dp := range collectortest.HistogramPoints(t, reader, "http.server.request.duration") {
		for _, e := range dp.Exemplars {
			exemplars++
			if !exported[trace.SpanID(e.SpanID).String()] {
				t.Fatalf("exemplar points at span %x, never exported", e.SpanID)
			}
		}
	}
	if exemplars == 0 {
		t.Fatal("no exemplar on the duration histogram")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met within 5 s")
}

// serverRequests sums the counts of http.server.request.duration.
func serverRequests(tb testing.TB, reader *sdkmetric.ManualReader) uint64 {
	var n uint64
	for _, dp := range collectortest.HistogramPoints(tb, reader, "http.server.request.duration") {
		n += dp.Count
	}
	return n
}

// TestMaxSeries: client calls to ever new servers stop making series at
// http.max_series; their requests are counted in one overflow series per
// side, and every request is still in the histograms.
func TestMaxSeries(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxSeries = 3
	c, reader := unitCollectorWith(t, cfg, sdktrace.NeverSample())
	c.cur.server = false
	ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/a"), Start: 1000, End: 2000}
	for i := range 10 {
		c.cur.peer = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		c.cur.lastSeries = nil
		c.onExchange(ex)
		c.onExchange(ex)
	}
	var points, total, overflow uint64
	for _, dp := range collectortest.HistogramPoints(t, reader, "http.client.request.duration") {
		points++
		total += dp.Count
		if v, ok := dp.Attributes.Value("otel.metric.overflow"); ok && v.AsBool() {
			overflow += dp.Count
		}
	}
	if points != 4 || total != 20 || overflow != 14 {
		t.Fatalf("%d points holding %d requests, %d in overflow; want 4, 20, 14", points, total, overflow)
	}
	if got := c.seriesOverflow.Load(); got != 14 {
		t.Fatalf("overflow counter %d, want 14", got)
	}
}

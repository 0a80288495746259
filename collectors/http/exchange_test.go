package httpc

import (
	"context"
	"net/netip"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/identity"
)

// BenchmarkOnExchange is the agent's work per request after parsing: route,
// series, sampling decision (1 % sampled, as in the overhead harness) and the
// three histograms.
func BenchmarkOnExchange(b *testing.B) {
	producers := &collectors.ProducerSet{}
	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(producers))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))))
	c := New(collectors.Deps{
		Meter:          mp.Meter("bench"),
		TracerProvider: tp,
		Processes:      identity.NewResolver("/proc", "bench"),
		Producers:      producers,
	}, DefaultConfig())
	var err error
	if c.routes, err = NewRoutes(nil, 100); err != nil {
		b.Fatal(err)
	}
	if c.deps.Producers != nil {
		c.deps.Producers.Add(c)
	}
	c.setupTracing()
	go func() {
		for rec := range c.spans {
			rec.span.End()
		}
	}()
	defer close(c.spans)
	st := c.newConn(connKey{tgid: uint32(1), fd: 3, start: 1})
	st.server = true
	st.peer = netip.MustParseAddr("127.0.0.1")
	st.peerPort = 40000
	st.svc = "/bench"
	c.cur = st
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

// serverRequests sums the counts of http.server.request.duration.
func serverRequests(tb testing.TB, reader *sdkmetric.ManualReader) uint64 {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		tb.Fatal(err)
	}
	var n uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "http.server.request.duration" {
				for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
					n += dp.Count
				}
			}
		}
	}
	return n
}

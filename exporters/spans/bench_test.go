package spans

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/exporters/otlp"
)

// discard counts what it is given, like a receiver that accepts everything.
type discard struct{ spans int }

func (d *discard) ExportResourceSpans(_ context.Context, _ [][]byte, n int) error {
	d.spans += n
	return nil
}
func (d *discard) Shutdown(context.Context) error { return nil }

// BenchmarkHTTPServerSpan is the path of one HTTP server span as the HTTP
// collector drives it: Start with a kind and a timestamp, one
// SetAttributes with the series' attributes (identity included) and the
// span's own, End with a timestamp; the exports run in the background.
func BenchmarkHTTPServerSpan(b *testing.B) {
	p := NewTracerProvider(&discard{}, agentResource(), nil, otlp.QueueSettings{MaxQueueSize: 1 << 20, MaxExportBatchSize: 512, ScheduleDelay: time.Second})
	defer p.Shutdown(context.Background())
	tr := p.Tracer("github.com/otelbee/otelbee/collectors/http")
	series := seriesAttrs()
	kvs := make([]attribute.KeyValue, 0, len(series)+10)
	start := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		_, sp := tr.Start(context.Background(), "GET /items/{id}", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start))
		kvs = append(kvs[:0], series...)
		kvs = ownAttrs(kvs, i)
		sp.SetAttributes(kvs...)
		if i%50 == 0 {
			sp.SetStatus(codes.Error, "")
		}
		sp.End(trace.WithTimestamp(start.Add(time.Millisecond)))
	}
	b.StopTimer()
	p.ForceFlush(context.Background())
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}

// seriesAttrs are the attributes every span of one HTTP server series
// shares in BenchmarkHTTPServerSpan (identity included).
func seriesAttrs() []attribute.KeyValue {
	return append(identity("shop", 4242),
		attribute.String("process.executable.name", "shop"),
		attribute.String("process.executable.path", "/usr/local/bin/shop"),
		attribute.String("process.command", "/usr/local/bin/shop"),
		attribute.String("process.owner", "shop"),
		attribute.String("container.id", "0123456789abcdef0123456789abcdef"),
		attribute.String("http.request.method", "GET"),
		attribute.Int("http.response.status_code", 200),
		attribute.String("http.route", "/items/{id}"),
		attribute.String("network.protocol.version", "1.1"),
		attribute.String("url.scheme", "http"),
	)
}

// ownAttrs appends what BenchmarkHTTPServerSpan's spans have of their own.
func ownAttrs(kvs []attribute.KeyValue, i int) []attribute.KeyValue {
	return append(kvs,
		attribute.String("url.path", "/items/42"),
		attribute.String("server.address", "shop.example"),
		attribute.Int("server.port", 8080),
		attribute.String("user_agent.original", "wrk/4.2.0"),
		attribute.String("client.address", "10.0.0.7"),
		attribute.Int("client.port", 40000+i%20000),
		attribute.String("network.peer.address", "10.0.0.7"),
		attribute.Int("network.peer.port", 40000+i%20000),
	)
}

// BenchmarkHTTPServerSpanEmit is BenchmarkHTTPServerSpan's span through
// Emitter: the series' attributes prepared once, the span's own per span.
func BenchmarkHTTPServerSpanEmit(b *testing.B) {
	p := NewTracerProvider(&discard{}, agentResource(), nil, otlp.QueueSettings{MaxQueueSize: 1 << 20, MaxExportBatchSize: 512, ScheduleDelay: time.Second})
	defer p.Shutdown(context.Background())
	tr := p.Tracer("github.com/otelbee/otelbee/collectors/http").(Emitter)
	series := tr.Prepare(seriesAttrs()...)
	kvs := make([]attribute.KeyValue, 0, 10)
	start := time.Now()
	end := start.Add(time.Millisecond)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		f := Finished{Name: "GET /items/{id}", Kind: trace.SpanKindServer, Start: start, End: end, Series: series, Attrs: ownAttrs(kvs[:0], i)}
		if i%50 == 0 {
			f.Status = codes.Error
		}
		tr.Emit(f)
	}
	b.StopTimer()
	p.ForceFlush(context.Background())
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}

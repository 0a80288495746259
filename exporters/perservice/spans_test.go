package perservice

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// recordSpans ends one span per attribute list on a real TracerProvider with
// the agent resource and returns what an exporter would receive.
func recordSpans(t *testing.T, attrLists ...[]attribute.KeyValue) []sdktrace.ReadOnlySpan {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(agentResource()), sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := tp.Tracer("otelbee/http")
	for _, kvs := range attrLists {
		_, sp := tr.Start(context.Background(), "GET /users", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(kvs...))
		sp.AddEvent("first byte")
		sp.End()
	}
	return rec.Ended()
}

func TestSplitSpans(t *testing.T) {
	method := attribute.String("http.request.method", "GET")
	spans := recordSpans(t,
		append([]attribute.KeyValue{method}, apiIdent...),
		[]attribute.KeyValue{method, attribute.Int("process.pid", 9)}, // no service.name: agent's
		append([]attribute.KeyValue{method}, dbIdent...),
		append([]attribute.KeyValue{method}, apiIdent...),
	)
	before := make([][]attribute.KeyValue, len(spans))
	for i, sp := range spans {
		before[i] = sp.Attributes()
	}

	got := SplitSpans(spans)
	if len(got) != len(spans) {
		t.Fatalf("got %d spans, want %d", len(got), len(spans))
	}

	wantRes := []string{
		serviceResource(apiIdent...).String(),
		agentResource().String(),
		serviceResource(dbIdent...).String(),
		serviceResource(apiIdent...).String(),
	}
	wantAttrs := [][]attribute.KeyValue{
		{method},
		{method, attribute.Int("process.pid", 9)},
		{method},
		{method},
	}
	for i, sp := range got {
		if g := sp.Resource().String(); g != wantRes[i] {
			t.Errorf("[%d] resource = %s, want %s", i, g, wantRes[i])
		}
		if g, w := attribute.NewSet(sp.Attributes()...), attribute.NewSet(wantAttrs[i]...); !g.Equals(&w) {
			t.Errorf("[%d] attributes = %v, want %v", i, sp.Attributes(), wantAttrs[i])
		}
		// Everything else is the original span's.
		if !sp.SpanContext().Equal(spans[i].SpanContext()) || sp.Name() != "GET /users" ||
			sp.SpanKind() != trace.SpanKindServer || len(sp.Events()) != 1 ||
			sp.InstrumentationScope().Name != "otelbee/http" || !sp.StartTime().Equal(spans[i].StartTime()) {
			t.Errorf("[%d] span fields not delegated: %+v", i, tracetest.SpanStubFromReadOnlySpan(sp))
		}
	}
	// Spans of one service share one resource, so OTLP groups them together.
	if got[0].Resource() != got[3].Resource() {
		t.Error("spans of the same service should share the same *resource.Resource")
	}
	if got[1] != spans[1] {
		t.Error("a span without identity should be passed through untouched")
	}
	// The input spans are unchanged.
	for i, sp := range spans {
		if g, w := attribute.NewSet(sp.Attributes()...), attribute.NewSet(before[i]...); !g.Equals(&w) {
			t.Errorf("[%d] input attributes changed", i)
		}
		if !sp.Resource().Equal(agentResource()) {
			t.Errorf("[%d] input resource changed", i)
		}
	}
}

func TestSplitSpansNoIdentity(t *testing.T) {
	spans := recordSpans(t, []attribute.KeyValue{attribute.String("k", "v")})
	got := SplitSpans(spans)
	if &got[0] != &spans[0] {
		t.Error("without identity attributes the input slice should be returned as is")
	}
	if SplitSpans(nil) != nil {
		t.Error("SplitSpans(nil) should be nil")
	}
}

// BenchmarkSplitSpans512 is one OTLP batch of HTTP-like spans from three
// services (identity first, as the collectors put it, then ~11 attributes).
func BenchmarkSplitSpans512(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(agentResource()), sdktrace.WithSpanProcessor(rec))
	tr := tp.Tracer("otelbee/http")
	idents := [][]attribute.KeyValue{apiIdent, dbIdent, {attribute.String("service.name", "web"), attribute.Int("process.pid", 3)}}
	for i := range 512 {
		kvs := append([]attribute.KeyValue{}, idents[i%3]...)
		kvs = append(kvs,
			attribute.String("http.request.method", "GET"), attribute.Int("http.response.status_code", 200),
			attribute.String("network.protocol.version", "1.1"), attribute.String("url.scheme", "http"),
			attribute.String("http.route", "/users/{id}"), attribute.String("url.path", "/users/42"),
			attribute.Int64("http.request.body.size", 0), attribute.Int64("http.response.body.size", 12),
			attribute.String("network.peer.address", "127.0.0.1"), attribute.Int("network.peer.port", 40000),
			attribute.String("client.address", "127.0.0.1"))
		_, sp := tr.Start(context.Background(), "GET /users/{id}", trace.WithAttributes(kvs...))
		sp.End()
	}
	spans := rec.Ended()
	b.ReportAllocs()
	for b.Loop() {
		SplitSpans(spans)
	}
}

package spans

import (
	"context"
	"testing"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/exporters/otlp"
)

// TestEmitEncodesAsTheTraceAPI: a span through Emit leaves exactly as the
// same span through Start, SetAttributes, SetStatus and End, under the
// same resource, with a series or without, with the span's own attributes
// repeating a series key or carrying an identity key (the general path).
func TestEmitEncodesAsTheTraceAPI(t *testing.T) {
	start := time.Unix(1700000000, 5)
	end := start.Add(1500 * time.Microsecond)
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	many := make([]attribute.KeyValue, 0, maxAttributes+5)
	for i := range maxAttributes + 5 {
		many = append(many, attribute.Int("k"+string(rune('a'+i%26))+string(rune('a'+i/26)), i))
	}
	tests := []struct {
		name         string
		series, own  []attribute.KeyValue
		status       codes.Code
		desc         string
		remoteParent bool
	}{
		{name: "series and own", series: seriesAttrs(), own: ownAttrs(nil, 7), status: codes.Error, desc: "boom"},
		{name: "remote parent", series: seriesAttrs(), own: ownAttrs(nil, 8), remoteParent: true, status: codes.Ok},
		{name: "no series", own: append(seriesAttrs(), ownAttrs(nil, 9)...)},
		{name: "agent's own span", own: ownAttrs(nil, 10)},
		{name: "own repeats a series key", series: seriesAttrs(), own: append(ownAttrs(nil, 11), attribute.String("http.route", "/other"))},
		{name: "own repeats its own key", series: seriesAttrs(), own: append(ownAttrs(nil, 12), attribute.String("url.path", "/later"))},
		{name: "own carries identity", series: seriesAttrs(), own: append(ownAttrs(nil, 13), attribute.Int("process.pid", 99))},
		{name: "past the attribute limit", series: append(seriesAttrs(), many...), own: ownAttrs(nil, 14)},
		{name: "own past the limit", series: seriesAttrs(), own: many},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &capture{}
			p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
			defer p.Shutdown(context.Background())
			tr := p.Tracer("github.com/otelbee/otelbee/collectors/http")
			em := tr.(Emitter)
			var series *Attributes
			if tt.series != nil {
				series = em.Prepare(tt.series...)
			}
			ctx := context.Background()
			if tt.remoteParent {
				ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
			}
			tid := sampling.NewTraceID()
			if !tt.remoteParent {
				ctx = sampling.WithTraceID(ctx, tid)
			}
			_, sp := tr.Start(ctx, "GET /items/{id}", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start))
			sp.SetAttributes(append(append([]attribute.KeyValue(nil), tt.series...), tt.own...)...)
			sp.SetStatus(tt.status, tt.desc)
			sp.End(trace.WithTimestamp(end))
			f := Finished{Name: "GET /items/{id}", Kind: trace.SpanKindServer, Start: start, End: end,
				Series: series, Attrs: tt.own, Status: tt.status, Description: tt.desc}
			if tt.remoteParent {
				f.Parent = parent
			} else {
				f.TraceID = tid
			}
			sc := em.Emit(f)
			if !sc.IsSampled() || !sc.IsValid() {
				t.Fatalf("Emit returned %v", sc)
			}
			if err := p.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			rss := c.all()
			if len(rss) != 1 || len(rss[0].ScopeSpans) != 1 || len(rss[0].ScopeSpans[0].Spans) != 2 {
				t.Fatalf("want both spans under one resource and scope, got %v", rss)
			}
			spans := rss[0].ScopeSpans[0].Spans
			want, got := spans[0], spans[1]
			if sid := sc.SpanID(); string(got.SpanId) != string(sid[:]) {
				t.Errorf("span id %x, Emit returned %x", got.SpanId, sid[:])
			}
			if string(got.TraceId) != string(want.TraceId) {
				t.Errorf("trace id %x, want %x (the same trace)", got.TraceId, want.TraceId)
			}
			want.SpanId, got.SpanId = nil, nil
			if !proto.Equal(want, got) {
				t.Errorf("Emit's span\n%v\nthe trace API's\n%v", got, want)
			}
			if p.Queued() != 2 || p.Dropped() != 0 {
				t.Errorf("queued %d dropped %d", p.Queued(), p.Dropped())
			}
		})
	}
}

// TestEmitUnsampled: a span the sampler drops is neither recorded nor
// counted, and Emit says so.
func TestEmitUnsampled(t *testing.T) {
	c := &capture{}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
	em := p.Tracer("t").(Emitter)
	unsampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, Remote: true})
	sc := em.Emit(Finished{Name: "op", Parent: unsampled})
	if sc.IsSampled() || sc.TraceID() != unsampled.TraceID() {
		t.Errorf("span context %v, want the parent's trace, not sampled", sc)
	}
	p.ForceFlush(context.Background())
	if p.Queued() != 0 || len(c.requests) != 0 {
		t.Errorf("queued %d, %d requests", p.Queued(), len(c.requests))
	}
	p.Shutdown(context.Background())
	if sc := em.Emit(Finished{Name: "late"}); !sc.IsSampled() || p.DroppedBy(otlp.ReasonShutdown) != 1 {
		t.Errorf("after shutdown: %v, dropped %d, want sampled and counted dropped", sc, p.DroppedBy(otlp.ReasonShutdown))
	}
}

// TestEmitAllocs: a warm span through Emit allocates nothing.
func TestEmitAllocs(t *testing.T) {
	p := NewTracerProvider(&discard{}, agentResource(), nil, otlp.QueueSettings{MaxQueueSize: 1 << 20, MaxExportBatchSize: 1 << 20, ScheduleDelay: time.Hour})
	defer p.Shutdown(context.Background())
	em := p.Tracer("t").(Emitter)
	series := em.Prepare(seriesAttrs()...)
	own := make([]attribute.KeyValue, 0, 10)
	start := time.Now()
	emit := func() {
		em.Emit(Finished{Name: "GET", Kind: trace.SpanKindServer, Start: start, End: start, Series: series, Attrs: ownAttrs(own[:0], 1)})
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true})
	child := func() {
		em.Emit(Finished{Name: "GET", Kind: trace.SpanKindServer, Start: start, End: start, Parent: parent, Series: series, Attrs: ownAttrs(own[:0], 1)})
	}
	for range 20000 { // the service's buffer grows to its size
		emit()
	}
	if n := testing.AllocsPerRun(1000, emit); n != 0 {
		t.Errorf("%v allocations per span, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, child); n != 0 {
		t.Errorf("%v allocations per span with a remote parent, want 0", n)
	}
}

// TestEmitterOfSDKCopiesStrings: the SDK keeps a span's attributes until
// it exports them: EmitterOf's spans hold copies, not views of the
// caller's reused buffer.
func TestEmitterOfSDKCopiesStrings(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithIDGenerator(sampling.IDGenerator{}))
	em := EmitterOf(tp.Tracer("t"))
	buf := []byte("/items/42")
	sid := sampling.NewSpanID()
	sc := em.Emit(Finished{Name: "GET", Kind: trace.SpanKindServer, TraceID: trace.TraceID{4}, SpanID: sid,
		Series: em.Prepare(attribute.String("http.route", "/items/{id}")),
		Attrs:  []attribute.KeyValue{attribute.String("url.path", unsafe.String(&buf[0], len(buf)))}})
	copy(buf, "XXXXXXXXX")
	got := exp.GetSpans()
	if len(got) != 1 || sc.SpanID() != sid || got[0].SpanContext.SpanID() != sid || got[0].SpanContext.TraceID() != (trace.TraceID{4}) {
		t.Fatalf("spans %v, span context %v", got, sc)
	}
	want := []attribute.KeyValue{attribute.String("http.route", "/items/{id}"), attribute.String("url.path", "/items/42")}
	if a := got[0].Attributes; len(a) != 2 || a[0] != want[0] || a[1] != want[1] {
		t.Errorf("attributes %v, want %v", a, want)
	}
}

// apiOnly hides a tracer's Emitter: EmitterOf drives it through the trace
// API, as it does the SDK's.
type apiOnly struct{ trace.Tracer }

// TestEmitterOfTheTraceAPI: a tracer without Emit (the SDK's) gets the
// same spans through EmitterOf as this package's Emit makes, ids given
// beforehand included, and keeps no view of the caller's buffer.
func TestEmitterOfTheTraceAPI(t *testing.T) {
	c := &capture{}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
	defer p.Shutdown(context.Background())
	tr := p.Tracer("t")
	if _, ok := EmitterOf(tr).(*tracer); !ok {
		t.Fatal("EmitterOf does not return this package's tracer itself")
	}
	api := EmitterOf(apiOnly{tr})
	if _, ok := api.(apiEmitter); !ok {
		t.Fatal("a tracer without Emit not driven through the trace API")
	}
	direct := tr.(Emitter)
	start := time.Unix(1700000000, 5)
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2}, SpanID: trace.SpanID{3}, TraceFlags: trace.FlagsSampled, Remote: true})
	for i, f := range []Finished{
		{Name: "root", Kind: trace.SpanKindClient, TraceID: trace.TraceID{7}, SpanID: trace.SpanID{8}, Status: codes.Error, Description: "SERVFAIL"},
		{Name: "child", Kind: trace.SpanKindServer, Parent: parent, SpanID: trace.SpanID{9}},
		{Name: "internal"},
	} {
		buf := []byte("/items/42")
		f.Start, f.End = start, start.Add(time.Millisecond)
		f.Attrs = []attribute.KeyValue{attribute.String("url.path", unsafe.String(&buf[0], len(buf))), attribute.Int("n", i)}
		viaAPI, viaSeries := f, f
		viaAPI.Series = api.Prepare(seriesAttrs()...)
		viaSeries.Series = direct.Prepare(seriesAttrs()...)
		scAPI := api.Emit(viaAPI)
		copy(buf, "XXXXXXXXX") // the caller reuses its buffer
		buf = []byte("/items/42")
		viaSeries.Attrs = []attribute.KeyValue{attribute.String("url.path", unsafe.String(&buf[0], len(buf))), attribute.Int("n", i)}
		sc := direct.Emit(viaSeries)
		if f.SpanID.IsValid() && (sc.SpanID() != f.SpanID || scAPI.SpanID() != f.SpanID) {
			t.Errorf("%s: span ids %v and %v, want %v", f.Name, scAPI.SpanID(), sc.SpanID(), f.SpanID)
		}
		if sc.TraceID() != scAPI.TraceID() && (f.TraceID.IsValid() || f.Parent.IsValid()) {
			t.Errorf("%s: trace ids %v and %v", f.Name, scAPI.TraceID(), sc.TraceID())
		}
	}
	p.ForceFlush(context.Background())
	rss := c.all()
	if len(rss) != 1 || len(rss[0].ScopeSpans) != 1 || len(rss[0].ScopeSpans[0].Spans) != 6 {
		t.Fatalf("want 6 spans under one resource and scope, got %v", rss)
	}
	spans := rss[0].ScopeSpans[0].Spans
	for i := 0; i < 6; i += 2 {
		want, got := spans[i], spans[i+1]
		if i == 4 { // drawn by each
			want.TraceId, got.TraceId, want.SpanId, got.SpanId = nil, nil, nil, nil
		}
		if !proto.Equal(want, got) {
			t.Errorf("Emit's span\n%v\nthe trace API's\n%v", got, want)
		}
	}
}

type ctxKey struct{}

// TestStartContext: the context Start returns (the span itself) holds the
// span, answers for its parent context and parents a child span.
func TestStartContext(t *testing.T) {
	if spanKey == nil {
		t.Fatal("the trace API's context key was not learnt: Start allocates a context per span")
	}
	c := &capture{}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
	defer p.Shutdown(context.Background())
	tr := p.Tracer("t")
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	ctx, sp := tr.Start(parent, "parent")
	if trace.SpanFromContext(ctx) != sp || ctx.Value(ctxKey{}) != "v" {
		t.Errorf("span %v, value %v", trace.SpanFromContext(ctx), ctx.Value(ctxKey{}))
	}
	_, child := tr.Start(ctx, "child")
	child.End()
	sp.End()
	cancel()
	select {
	case <-ctx.Done():
	default:
		t.Error("the parent's cancellation does not reach the span's context")
	}
	if ctx.Err() != context.Canceled {
		t.Errorf("Err %v", ctx.Err())
	}
	p.ForceFlush(context.Background())
	spans := c.all()[0].ScopeSpans[0].Spans
	if len(spans) != 2 || string(spans[0].ParentSpanId) != string(spans[1].SpanId) || string(spans[0].TraceId) != string(spans[1].TraceId) {
		t.Errorf("child %v not under parent %v", spans[0], spans[1])
	}
}

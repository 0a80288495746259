package sampling

import (
	"context"
	"encoding/binary"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestParse(t *testing.T) {
	tests := []struct {
		sampler, arg string
		want         string // Description of the sampler, "" for an error
	}{
		{"", "", sdktrace.ParentBased(sdktrace.AlwaysSample()).Description()},
		{"always_on", "", "AlwaysOnSampler"},
		{"ALWAYS_OFF", "", "AlwaysOffSampler"},
		{"parentbased_always_off", "", sdktrace.ParentBased(sdktrace.NeverSample()).Description()},
		{"traceidratio", "0.25", sdktrace.TraceIDRatioBased(0.25).Description()},
		{"traceidratio", "", sdktrace.TraceIDRatioBased(1).Description()},
		{"parentbased_traceidratio", "0.01", sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01)).Description()},
		{"traceidratio", "1.5", ""},
		{"traceidratio", "half", ""},
		{"jaeger_remote", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.sampler+"/"+tt.arg, func(t *testing.T) {
			s, err := Parse(tt.sampler, tt.arg)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("got %s, want an error", s.Description())
				}
				return
			}
			if err != nil || s.Description() != tt.want {
				t.Fatalf("got %v, %v; want %s", s, err, tt.want)
			}
		})
	}
}

// TestDecideAgreesWithSDK: every span Decide lets through is sampled by the
// SDK with the trace id the decision was taken on, every span it stops the
// SDK would have dropped, and the ratio is the configured one.
func TestDecideAgreesWithSDK(t *testing.T) {
	s := sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.3))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithIDGenerator(IDGenerator{}))
	tr := tp.Tracer("t")
	const n = 20000
	sampled := 0
	for range n {
		want, ok := Decide(s, trace.SpanContext{}, "GET /", trace.SpanKindServer)
		if !ok {
			continue
		}
		sampled++
		_, span := tr.Start(WithTraceID(context.Background(), want), "GET /", trace.WithSpanKind(trace.SpanKindServer))
		sc := span.SpanContext()
		if !sc.IsSampled() || sc.TraceID() != want {
			t.Fatalf("Decide sampled trace %v, the SDK made %v sampled=%v", want, sc.TraceID(), sc.IsSampled())
		}
		span.End()
	}
	// Binomial: mean 6000, sigma ~65.
	if sampled < 5700 || sampled > 6300 {
		t.Fatalf("%d of %d sampled at ratio 0.3", sampled, n)
	}

	// Remote parents decide, and keep their trace id.
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled} {
		psc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{8}, TraceFlags: flags, Remote: true})
		parent := trace.ContextWithRemoteSpanContext(context.Background(), psc)
		tid, ok := Decide(s, psc, "GET /", trace.SpanKindServer)
		if ok != psc.IsSampled() || tid != psc.TraceID() {
			t.Fatalf("parent sampled=%v, Decide said %v, trace %v", psc.IsSampled(), ok, tid)
		}
		if ok {
			_, span := tr.Start(parent, "GET /")
			if span.SpanContext().TraceID() != psc.TraceID() || !span.SpanContext().IsSampled() {
				t.Fatalf("child of a sampled parent: %v", span.SpanContext())
			}
		}
	}
}

func TestDecideDropAllocs(t *testing.T) {
	s := sdktrace.ParentBased(sdktrace.NeverSample())
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := Decide(s, trace.SpanContext{}, "GET /", trace.SpanKindServer); ok {
			t.Fatal("sampled by a never sampler")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per dropped span, want 0", n)
	}
}

// TestDecideParentAllocs: a remote parent reaches the sampler in a pooled
// context: no allocation per span, sampled or not, and the parent decides.
func TestDecideParentAllocs(t *testing.T) {
	s := sdktrace.ParentBased(sdktrace.NeverSample())
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled} {
		psc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{8}, TraceFlags: flags, Remote: true})
		if n := testing.AllocsPerRun(1000, func() {
			if _, ok := Decide(s, psc, "GET /", trace.SpanKindServer); ok != psc.IsSampled() {
				t.Fatalf("parent sampled=%v, Decide said %v", psc.IsSampled(), ok)
			}
		}); n != 0 {
			t.Fatalf("%v allocations per span with a parent, want 0", n)
		}
	}
}

// TestContextAsTheAPIs: a Context holds a span context as
// trace.ContextWithSpanContext does, for the samplers that read it.
func TestContextAsTheAPIs(t *testing.T) {
	if spanKey == nil {
		t.Fatal("the trace API's context key was not learnt: every parent costs a context")
	}
	var c Context
	for _, sc := range []trace.SpanContext{
		{},
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true}),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{3}, SpanID: trace.SpanID{4}}),
	} {
		ctx := c.With(sc)
		want := trace.ContextWithSpanContext(context.Background(), sc)
		if got := trace.SpanContextFromContext(ctx); !got.Equal(trace.SpanContextFromContext(want)) {
			t.Errorf("span context %v, want %v", got, sc)
		}
		if trace.SpanFromContext(ctx).IsRecording() {
			t.Error("a recording span")
		}
	}
}

// TestWithSpanID: the IDGenerator gives a span the span id drawn for it.
func TestWithSpanID(t *testing.T) {
	sid := NewSpanID()
	ctx := WithSpanID(WithTraceID(context.Background(), trace.TraceID{5}), sid)
	tid, got := IDGenerator{}.NewIDs(ctx)
	if tid != (trace.TraceID{5}) || got != sid {
		t.Errorf("ids %v %v, want %v %v", tid, got, trace.TraceID{5}, sid)
	}
	if got := (IDGenerator{}).NewSpanID(ctx, tid); got != sid {
		t.Errorf("child span id %v, want %v", got, sid)
	}
}

func TestIDGeneratorWithoutTraceID(t *testing.T) {
	tid, sid := IDGenerator{}.NewIDs(context.Background())
	if !tid.IsValid() || !sid.IsValid() {
		t.Fatalf("invalid ids %v %v", tid, sid)
	}
	if tid2, _ := (IDGenerator{}).NewIDs(context.Background()); tid2 == tid {
		t.Fatal("the same trace id twice")
	}
}

// TestRatioRootsAsTheSDK: the samplers Parse builds with a ratio decide a
// root span in Decide without the SDK's call, and exactly as the SDK's
// ShouldSample does on the same trace id; spans with a parent still go to
// the SDK (a sampled remote parent is sampled whatever the ratio).
func TestRatioRootsAsTheSDK(t *testing.T) {
	for _, tc := range []struct{ name, arg string }{
		{"parentbased_traceidratio", "0.01"}, {"traceidratio", "0.3"}, {"parentbased_traceidratio", "0"},
		{"traceidratio", "0.999999"}, {"parentbased_traceidratio", "1"},
	} {
		s, err := Parse(tc.name, tc.arg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		sampled := 0
		for i := 0; i < 20000; i++ {
			tid, ok := Decide(s, trace.SpanContext{}, "GET", trace.SpanKindServer)
			if ok != tid.IsValid() {
				t.Fatalf("%s %s: sampled %v, trace id %v", tc.name, tc.arg, ok, tid)
			}
			if !ok {
				continue
			}
			if binary.LittleEndian.Uint64(tid[:8]) == 0 {
				t.Fatalf("%s %s: trace id %s: half of it not drawn", tc.name, tc.arg, tid)
			}
			sampled++
			if res := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: tid, Name: "GET"}); res.Decision != sdktrace.RecordAndSample {
				t.Fatalf("%s %s: trace id %s sampled here, not by the SDK", tc.name, tc.arg, tid)
			}
		}
		// and the ones not sampled: the SDK on ids drawn the same way
		for i := 0; i < 20000; i++ {
			tid := NewTraceID()
			r, fast := s.(*ratio)
			if !fast {
				break
			}
			want := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: tid, Name: "GET"}).Decision == sdktrace.RecordAndSample
			if r.sampledRoot(tid) != want {
				t.Fatalf("%s %s: trace id %s: %v here, %v by the SDK", tc.name, tc.arg, tid, !want, want)
			}
		}
		t.Logf("%s %s: %d of 20000 sampled", tc.name, tc.arg, sampled)
	}
	// a sampled remote parent: the SDK's rule (ParentBased samples it)
	s, _ := Parse("parentbased_traceidratio", "0")
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: NewTraceID(), SpanID: NewSpanID(), TraceFlags: trace.FlagsSampled, Remote: true})
	if _, ok := Decide(s, parent, "GET", trace.SpanKindServer); !ok {
		t.Fatal("a sampled remote parent's child not sampled by parentbased_traceidratio 0")
	}
}

// BenchmarkDecide is the decision per request at 1 % (no parent).
func BenchmarkDecide(b *testing.B) {
	s, _ := Parse("parentbased_traceidratio", "0.01")
	b.ReportAllocs()
	for b.Loop() {
		Decide(s, trace.SpanContext{}, "GET", trace.SpanKindServer)
	}
}

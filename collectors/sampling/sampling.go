// Package sampling lets a collector take the trace sampling decision before
// it makes a span. The SDK's Tracer.Start costs ~0.6 µs and five
// allocations even for a span it then drops (the span start options, the
// non-recording span, its context), which at 1 % sampling is most of the
// agent's work per HTTP request. A collector that holds the provider's
// Sampler asks it first (Decide), with a trace id it draws itself, and
// makes a span only for the requests that will be sampled, giving it that
// trace id (spans.Finished.TraceID; through the trace API, WithTraceID in
// the context, which the IDGenerator here honours), so the provider,
// asking the same sampler about the same trace id, decides the same.
package sampling

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Parse builds the sampler named as in OTEL_TRACES_SAMPLER, with its
// OTEL_TRACES_SAMPLER_ARG, as the OpenTelemetry SDKs do (default
// parentbased_always_on). Unlike the Go SDK, which logs and falls back, an
// unknown sampler or a bad ratio is an error: the agent refuses a
// configuration it would not honour.
func Parse(name, arg string) (sdktrace.Sampler, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	arg = strings.TrimSpace(arg)
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("invalid OTEL_TRACES_SAMPLER_ARG %q for %s: want a ratio from 0 to 1", arg, name)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return newRatio(sdktrace.TraceIDRatioBased(r), r), nil
		}
		return newRatio(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), r), nil
	}
	return nil, fmt.Errorf("unknown OTEL_TRACES_SAMPLER %q (valid: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)", name)
}

type traceIDKey struct{}

// WithTraceID asks the IDGenerator to give the root span started with ctx
// this trace id.
func WithTraceID(ctx context.Context, id trace.TraceID) context.Context {
	return context.WithValue(ctx, traceIDKey{}, id)
}

// NewTraceID draws a random trace id (math/rand/v2: fast and per-thread;
// trace ids need to be unique, not secret, and the SDK's own generator is
// not cryptographic either).
func NewTraceID() trace.TraceID {
	var id trace.TraceID
	for id == (trace.TraceID{}) {
		binary.LittleEndian.PutUint64(id[:8], rand.Uint64())
		binary.LittleEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

// NewSpanID draws a random span id.
func NewSpanID() trace.SpanID {
	var id trace.SpanID
	for id == (trace.SpanID{}) {
		binary.LittleEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}

type spanIDKey struct{}

// WithSpanID asks the IDGenerator to give the span started with ctx this
// span id, drawn beforehand (NewSpanID) so that what is recorded before the
// span starts (an exemplar) can name it.
func WithSpanID(ctx context.Context, id trace.SpanID) context.Context {
	return context.WithValue(ctx, spanIDKey{}, id)
}

func spanIDFrom(ctx context.Context) trace.SpanID {
	if id, ok := ctx.Value(spanIDKey{}).(trace.SpanID); ok && id.IsValid() {
		return id
	}
	return NewSpanID()
}

// IDGenerator is an sdktrace.IDGenerator that honours WithTraceID and
// WithSpanID.
type IDGenerator struct{}

var _ sdktrace.IDGenerator = IDGenerator{}

// NewIDs implements sdktrace.IDGenerator.
func (IDGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if id, ok := ctx.Value(traceIDKey{}).(trace.TraceID); ok && id.IsValid() {
		return id, spanIDFrom(ctx)
	}
	return NewTraceID(), spanIDFrom(ctx)
}

// NewSpanID implements sdktrace.IDGenerator.
func (IDGenerator) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	return spanIDFrom(ctx)
}

// Decide asks s whether a span named name of the given kind, child of
// parent (invalid: a root span), would be sampled, and returns the span's
// trace id: parent's, or for a root the one the decision was taken on, to
// be given to the span (spans.Finished.TraceID, or WithTraceID for
// Tracer.Start) so the provider, asking the same sampler about the same
// trace id, decides the same. A nil s always says yes. Nothing is
// allocated: a parent reaches the sampler in a pooled Context.
func Decide(s sdktrace.Sampler, parent trace.SpanContext, name string, kind trace.SpanKind) (trace.TraceID, bool) {
	root := !parent.IsValid()
	if s == nil {
		if root {
			return NewTraceID(), true
		}
		return parent.TraceID(), true
	}
	if root {
		if r, ok := s.(*ratio); ok {
			// The SDK's own arithmetic, without its call (most requests
			// carry no parent), on the half of the trace id it reads,
			// drawn first: the other half only for a sampled span.
			return r.root()
		}
		tid := NewTraceID()
		res := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: tid, Name: name, Kind: kind})
		return tid, res.Decision != sdktrace.Drop
	}
	pc := contexts.Get().(*Context)
	res := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: pc.With(parent), TraceID: parent.TraceID(), Name: name, Kind: kind})
	pc.With(trace.SpanContext{})
	contexts.Put(pc)
	return parent.TraceID(), res.Decision != sdktrace.Drop
}

var contexts = sync.Pool{New: func() any { return new(Context) }}

// Context is a context.Context holding one span context as its current
// span's, as trace.ContextWithSpanContext makes, but reusable: a sampler
// is asked about a remote parent without a context and a span value
// allocated per span. Keep one per goroutine (or pool them).
type Context struct {
	span ctxSpan
}

// ctxSpan is the span Context holds: only its span context is real (the
// rest are a non-recording span's no-ops), which is all a sampler reads.
type ctxSpan struct {
	trace.Span
	sc trace.SpanContext
}

func (s *ctxSpan) SpanContext() trace.SpanContext { return s.sc }

// spanKey is the key trace.SpanFromContext asks a context for, learnt by
// asking once; nil if the API's context does not work so (With then makes
// the API's context).
var spanKey = func() any {
	var k keySpy
	trace.SpanFromContext(&k)
	return k.key
}()

func init() {
	probe := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, Remote: true})
	if spanKey != nil && !trace.SpanContextFromContext(new(Context).With(probe)).Equal(probe) {
		spanKey = nil
	}
}

type keySpy struct {
	context.Context
	key any
}

func (k *keySpy) Value(key any) any {
	if k.key == nil {
		k.key = key
	}
	return nil
}

// With makes c hold sc (the zero span context: none) and returns it, as
// trace.ContextWithSpanContext(context.Background(), sc) would be.
func (c *Context) With(sc trace.SpanContext) context.Context {
	if c.span.Span == nil {
		c.span.Span = trace.SpanFromContext(context.Background())
	}
	c.span.sc = sc
	if spanKey == nil {
		return trace.ContextWithSpanContext(context.Background(), sc)
	}
	return c
}

func (c *Context) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *Context) Done() <-chan struct{}       { return nil }
func (c *Context) Err() error                  { return nil }
func (c *Context) Value(key any) any {
	if key == spanKey && spanKey != nil {
		return &c.span
	}
	return nil
}

// ratio is a TraceIDRatioBased sampler (as the root of ParentBased, or
// alone) that Decide can apply to a root span without calling it: the SDK's
// test on the trace id's low 63 bits against fraction × 2^63
// (sdktrace.TraceIDRatioBased). A span with a parent is the SDK's to
// decide. ShouldSample and Description are the SDK sampler's.
type ratio struct {
	sdktrace.Sampler
	bound uint64
}

func newRatio(s sdktrace.Sampler, fraction float64) sdktrace.Sampler {
	if fraction >= 1 {
		return s // AlwaysSample: nothing to gain
	}
	// ParentBased or not, a root span's decision is the root sampler's.
	r := &ratio{Sampler: s}
	if fraction > 0 {
		r.bound = uint64(fraction * (1 << 63))
	}
	return r
}

func (r *ratio) sampledRoot(tid trace.TraceID) bool {
	return binary.BigEndian.Uint64(tid[8:16])>>1 < r.bound
}

// root draws a root span's trace id as far as the decision needs: the
// bytes the SDK tests, then, if sampled, the rest.
func (r *ratio) root() (trace.TraceID, bool) {
	lo := rand.Uint64()
	if lo>>1 >= r.bound {
		return trace.TraceID{}, false
	}
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[8:], lo)
	for {
		binary.LittleEndian.PutUint64(tid[:8], rand.Uint64())
		if tid.IsValid() {
			return tid, true
		}
	}
}

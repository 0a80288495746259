// Package sampling lets a collector take the trace sampling decision before
// it starts a span. The SDK's Tracer.Start costs ~0.6 µs and five
// allocations even for a span it then drops (the span start options, the
// non-recording span, its context), which at 1 % sampling is most of the
// agent's work per HTTP request. A collector that holds the provider's
// Sampler asks it first, with a trace id it draws itself, and calls Start
// only for the requests that will be sampled, passing that trace id in the
// context; the provider's IDGenerator (this package's) uses it, so the SDK,
// asking the same sampler about the same trace id, decides the same.
package sampling

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

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

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for id == (trace.SpanID{}) {
		binary.LittleEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}

// IDGenerator is an sdktrace.IDGenerator that honours WithTraceID.
type IDGenerator struct{}

var _ sdktrace.IDGenerator = IDGenerator{}

// NewIDs implements sdktrace.IDGenerator.
func (IDGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if id, ok := ctx.Value(traceIDKey{}).(trace.TraceID); ok && id.IsValid() {
		return id, newSpanID()
	}
	return NewTraceID(), newSpanID()
}

// NewSpanID implements sdktrace.IDGenerator.
func (IDGenerator) NewSpanID(context.Context, trace.TraceID) trace.SpanID { return newSpanID() }

// Decide asks s whether a span named name of the given kind, child of the
// span context in parent (if any), would be sampled, and returns the context
// to start it with: carrying the trace id the decision was taken on, when it
// is a root span. A nil s always says yes and changes nothing, leaving the
// decision to Tracer.Start.
func Decide(s sdktrace.Sampler, parent context.Context, name string, kind trace.SpanKind) (context.Context, bool) {
	if s == nil {
		return parent, true
	}
	psc := trace.SpanContextFromContext(parent)
	tid := psc.TraceID()
	root := !psc.IsValid()
	if root {
		if r, ok := s.(*ratio); ok {
			// The SDK's own arithmetic, without its call (most requests
			// carry no parent), on the half of the trace id it reads,
			// drawn first: the other half only for a sampled span.
			tid, ok := r.root()
			if !ok {
				return parent, false
			}
			return WithTraceID(parent, tid), true
		}
		tid = NewTraceID()
	}
	res := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: parent, TraceID: tid, Name: name, Kind: kind})
	if res.Decision == sdktrace.Drop {
		return parent, false
	}
	if root {
		return WithTraceID(parent, tid), true
	}
	return parent, true
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

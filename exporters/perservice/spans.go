package perservice

import (
	"cmp"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// SplitSpans gives every span that carries service.name a resource built
// from its identity attributes (IsResourceKey) merged over the
// non-service-specific attributes of the span's own resource (the agent's),
// exactly as SplitMetrics does for data points. Such spans are wrapped so
// that Resource() returns the per-service resource and Attributes() no
// longer lists the identity attributes; every other method is the original
// span's.
//
// The result has the input's length and order. Spans without service.name
// are returned as they are; if none carries it, the input slice itself is
// returned. The input is not modified.
//
// A flat slice (rather than one slice per service) is enough for export:
// the OTLP trace exporters group spans into ResourceSpans by resource
// equivalence, and spans of one service share one *resource.Resource here.
func SplitSpans(spans []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	first := -1
	for i, sp := range spans {
		if spanHasIdentity(sp) {
			first = i
			break
		}
	}
	if first < 0 {
		return spans
	}

	out := make([]sdktrace.ReadOnlySpan, len(spans))
	copy(out, spans[:first])
	// One splitter per distinct agent resource: in practice all spans come
	// from the agent's single TracerProvider, so this map has one entry.
	splitters := make(map[*resource.Resource]*splitter, 1)
	for i := first; i < len(spans); i++ {
		sp := spans[i]
		if !spanHasIdentity(sp) {
			out[i] = sp
			continue
		}
		agent := sp.Resource()
		s := splitters[agent]
		if s == nil {
			s = newSplitter(agent)
			splitters[agent] = s
		}
		attrs := sp.Attributes()
		rest := make([]attribute.KeyValue, 0, len(attrs))
		s.identBuf = s.identBuf[:0]
		for _, kv := range attrs {
			if IsResourceKey(kv.Key) {
				s.identBuf = append(s.identBuf, kv)
			} else {
				rest = append(rest, kv)
			}
		}
		g := s.groupOfBuf()
		out[i] = &serviceSpan{ReadOnlySpan: sp, res: g.resource(s), attrs: rest}
	}
	return out
}

func spanHasIdentity(sp sdktrace.ReadOnlySpan) bool {
	if sp == nil {
		return false
	}
	for _, kv := range sp.Attributes() {
		if kv.Key == ServiceName {
			return true
		}
	}
	return false
}

// serviceSpan presents a span of the agent's TracerProvider as a span of an
// observed service. Embedding the interface keeps every other method (and
// the unexported one ReadOnlySpan requires) delegating to the real span,
// without copying events and links as a tracetest.SpanStub snapshot would.
type serviceSpan struct {
	sdktrace.ReadOnlySpan
	res   *resource.Resource
	attrs []attribute.KeyValue
}

func (s *serviceSpan) Resource() *resource.Resource     { return s.res }
func (s *serviceSpan) Attributes() []attribute.KeyValue { return s.attrs }

// groupOfBuf returns the group of the identity attributes in s.identBuf,
// sorting and de-duplicating them in place (last value of a key wins, as
// attribute.NewSet does) and hashing them incrementally, so an existing
// group is found without building an attribute.Set per span.
func (s *splitter) groupOfBuf() *group {
	ident := s.identBuf
	// Stable: of equal keys the later one stays later, and wins below.
	slices.SortStableFunc(ident, func(a, b attribute.KeyValue) int { return cmp.Compare(a.Key, b.Key) })
	n := 0
	for i, kv := range ident {
		if i+1 < len(ident) && ident[i+1].Key == kv.Key {
			continue
		}
		ident[n] = kv
		n++
	}
	ident = ident[:n]
	s.hasher.Reset()
	for _, kv := range ident {
		s.hasher.Write(kv)
	}
	return s.lookup(s.hasher.Distinct(), ident)
}

// Resources gives the resource of each observed service from its identity
// attributes, built exactly as SplitSpans and SplitMetrics build it, and
// keeps it for the next span of the same service. It is for span paths that
// encode spans themselves instead of going through the SDK. Not safe for
// concurrent use.
type Resources struct {
	s *splitter
}

// NewResources returns the resources of services observed by the agent
// whose own resource is agent.
func NewResources(agent *resource.Resource) *Resources {
	return &Resources{s: newSplitter(agent)}
}

// For returns the resource for the identity attributes ident (keys for
// which IsResourceKey holds; any order, duplicates resolved last-wins). It
// sorts ident in place.
func (r *Resources) For(ident []attribute.KeyValue) *resource.Resource {
	r.s.identBuf = append(r.s.identBuf[:0], ident...)
	return r.s.groupOfBuf().resource(r.s)
}

// Forget drops every resource kept so far (their services are gone); the
// next For builds them again.
func (r *Resources) Forget() {
	r.s = newSplitter(r.s.agent)
}

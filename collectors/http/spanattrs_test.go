package httpc

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// attrSpan keeps the attributes it is given in room it already has, as the
// SDK's spans and exporters/spans' copy them.
type attrSpan struct {
	noop.Span
	attrs []attribute.KeyValue
}

func (s *attrSpan) SetAttributes(kv ...attribute.KeyValue) { s.attrs = append(s.attrs, kv...) }
func (s *attrSpan) End(...trace.SpanEndOption)             {}

// TestSpanAttributesFromSeries: a sampled span's attributes are its
// series' slice, rendered once with the service's identity, and its own,
// built in a buffer the span worker reuses: ending a span allocates only
// the strings that are its own (url.path, the peer's address), never an
// attribute slice nor an identity lookup (the review measured ~1.1 KB of
// garbage per span from those).
func TestSpanAttributesFromSeries(t *testing.T) {
	c, _ := unitCollector(t, sdktrace.NeverSample())
	st := c.cur
	ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/users/12345"), Start: 1, End: 2}
	s := c.seriesFor(st, ex, "/users/{id}")
	if s.IdentLen == 0 || s.Span[0].Key != "service.name" {
		t.Fatalf("series span attributes %v: the identity first", s.Span)
	}
	sp := &attrSpan{attrs: make([]attribute.KeyValue, 0, 64)}
	rec := spanRecord{span: sp, s: s, end: 2, reqBody: -1, respBody: -1, peer: st.peer, peerPort: st.peerPort}
	rec.pathLen = uint16(copy(rec.path[:], ex.Path))
	c.endSpan(&rec)
	got := map[attribute.Key]string{}
	for _, kv := range sp.attrs {
		got[kv.Key] = kv.Value.Emit()
	}
	for k, v := range map[attribute.Key]string{
		"service.name": got["service.name"], "http.request.method": "GET", "http.response.status_code": "200",
		"url.path": "/users/12345", "network.peer.address": "127.0.0.1", "client.address": "127.0.0.1",
		"network.peer.port": "40000", "url.scheme": "http",
	} {
		if got[k] != v || v == "" {
			t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		sp.attrs = sp.attrs[:0]
		c.endSpan(&rec)
	})
	// url.path, the peer's address, End's timestamp option and its
	// slice; before the series table, 6 (a ~1.2 KB attribute slice, the
	// peer's address twice)
	if allocs > 4 {
		t.Errorf("ending a span: %.0f allocations, want at most 4", allocs)
	}
}

package spans

import (
	"context"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/exporters/perservice"
)

// Emitter is what this package's tracers offer beyond trace.Tracer: a
// collector that holds a finished exchange hands the whole span over in
// one call. Through the trace API a span costs the start and end options'
// values, the variadic slices holding them, the contexts carrying its
// parent and trace id, the returned context and the span handle (7
// allocations, ~400 B, mostly in the caller); Emit takes none, and a
// series' attributes, prepared once, are encoded once rather than for
// every span. A collector takes EmitterOf its trace.Tracer: any other
// provider's (the console exporter's SDK) is driven through the trace API.
type Emitter interface {
	// Emit records the finished span f as Start, SetAttributes, SetStatus
	// and End would, and returns its span context (invalid fields: not
	// sampled).
	Emit(f Finished) trace.SpanContext
	// Prepare returns kvs, the attributes every span of a series shares
	// (the observed service's identity among them), encoded for Emit. The
	// result may be kept and used from any goroutine; kvs are copied.
	Prepare(kvs ...attribute.KeyValue) *Attributes
}

// Finished is a span handed over whole (Emitter.Emit).
type Finished struct {
	Name       string
	Kind       trace.SpanKind // unspecified: internal
	Start, End time.Time
	// Parent is the span's parent (a remote one, from a traceparent
	// header), or invalid: a root span.
	Parent trace.SpanContext
	// TraceID is a root span's trace id, the one sampling.Decide took its
	// decision on (zero: a new one). A child's is its parent's.
	TraceID trace.TraceID
	// SpanID is the span's id when the caller drew it beforehand
	// (sampling.NewSpanID: an exemplar recorded before the span is emitted
	// names it); zero: a new one.
	SpanID trace.SpanID
	// Series are the attributes shared with the other spans of the
	// series (nil: none); they come first.
	Series *Attributes
	// Attrs are this span's own; they are read during Emit, not kept, so
	// their strings may be views of the caller's reused buffers.
	Attrs       []attribute.KeyValue
	Status      codes.Code
	Description string // with codes.Error
}

// Attributes are a series' attributes, encoded (Emitter.Prepare).
type Attributes struct {
	p     *TracerProvider
	kvs   []attribute.KeyValue // deduplicated, identity included
	ident []attribute.KeyValue // the identity (service.name among kvs), else empty
	enc   []byte               // the other attributes, encoded as Span.attributes fields
	kept  int                  // attributes in enc
	// dropped are those past the attribute count limit
	dropped int
	keys    [4]uint64 // keyBits of every key in kvs
	svc     *service  // guarded by p.mu: the service of ident, once looked up
}

var _ Emitter = (*tracer)(nil)

// Prepare implements Emitter.
func (t *tracer) Prepare(kvs ...attribute.KeyValue) *Attributes {
	a := &Attributes{p: t.p, kvs: dedupe(append([]attribute.KeyValue(nil), kvs...))}
	service := false
	for _, kv := range a.kvs {
		h := keyBits(kv.Key)
		a.keys[h>>6] |= 1 << (h & 63)
		service = service || kv.Key == perservice.ServiceName
	}
	for _, kv := range a.kvs {
		if service && perservice.IsResourceKey(kv.Key) {
			a.ident = append(a.ident, kv)
			continue
		}
		if a.kept == maxAttributes {
			a.dropped++
			continue
		}
		a.enc = appendKeyValue(a.enc, fSpanAttributes, kv)
		a.kept++
	}
	return a
}

// Emit implements Emitter.
func (t *tracer) Emit(f Finished) trace.SpanContext {
	kind := f.Kind
	if kind == trace.SpanKindUnspecified {
		kind = trace.SpanKindInternal
	}
	parent := f.Parent
	tid, sid := f.TraceID, f.SpanID
	if parent.IsValid() {
		tid = parent.TraceID()
	} else if !tid.IsValid() {
		tid = sampling.NewTraceID()
	}
	if !sid.IsValid() {
		sid = sampling.NewSpanID()
	}
	p := t.p
	rec := p.record()
	// The sampler reads the parent from a context: the record's own.
	sc, keep := t.sample(rec.parent.With(parent), parent, tid, sid, f.Name, kind, nil, nil)
	if !keep {
		p.release(rec)
		return sc
	}
	h := head{sc: sc, parent: parent, kind: kind, name: f.Name, start: f.Start.UnixNano(), end: f.End.UnixNano()}
	if f.Start.IsZero() {
		h.start = time.Now().UnixNano()
	}
	if f.End.IsZero() {
		h.end = time.Now().UnixNano()
	}
	switch f.Status {
	case codes.Error:
		h.status, h.desc = codes.Error, f.Description
	case codes.Ok:
		h.status = codes.Ok
	}
	series := f.Series
	rec.attrs = append(rec.attrs[:0], f.Attrs...)
	if series != nil && (series.p != p || !series.separate(f.Attrs)) {
		// The span's own attributes repeat a series key or carry an
		// identity key (or the series is another provider's): the
		// general path, as the trace API would take it.
		rec.attrs = append(append(rec.attrs[:0], series.kvs...), f.Attrs...)
		series = nil
	}
	if series != nil {
		rec.attrs = dedupe(rec.attrs) // encodeSpan dedupes without one
	}
	encodeSpan(rec, &h, series)
	p.enqueue(t, rec, series)
	p.release(rec)
	return sc
}

// EmitterOf returns tr's Emitter: tr itself when it is this package's,
// else one making each span through tr's trace API (the SDK's, behind the
// console exporter), with copies of the span's own strings (Finished.Attrs
// may be views of the caller's buffers; the SDK keeps what it is given).
func EmitterOf(tr trace.Tracer) Emitter {
	if e, ok := tr.(Emitter); ok {
		return e
	}
	return apiEmitter{tr}
}

type apiEmitter struct{ tr trace.Tracer }

func (a apiEmitter) Prepare(kvs ...attribute.KeyValue) *Attributes {
	return &Attributes{kvs: append([]attribute.KeyValue(nil), kvs...)}
}

func (a apiEmitter) Emit(f Finished) trace.SpanContext {
	ctx := context.Background()
	switch {
	case f.Parent.IsValid():
		ctx = trace.ContextWithRemoteSpanContext(ctx, f.Parent)
	case f.TraceID.IsValid():
		ctx = sampling.WithTraceID(ctx, f.TraceID)
	}
	if f.SpanID.IsValid() {
		ctx = sampling.WithSpanID(ctx, f.SpanID)
	}
	_, sp := a.tr.Start(ctx, f.Name, trace.WithSpanKind(f.Kind), trace.WithTimestamp(f.Start))
	if f.Series != nil {
		sp.SetAttributes(f.Series.kvs...)
	}
	if len(f.Attrs) > 0 {
		own := make([]attribute.KeyValue, len(f.Attrs))
		for i, kv := range f.Attrs {
			own[i] = kv
			if kv.Value.Type() == attribute.STRING {
				own[i] = kv.Key.String(strings.Clone(kv.Value.AsString()))
			}
		}
		sp.SetAttributes(own...)
	}
	if f.Status != codes.Unset {
		sp.SetStatus(f.Status, f.Description)
	}
	sp.End(trace.WithTimestamp(f.End))
	return sp.SpanContext()
}

// separate reports whether own, a span's attributes, can follow a's
// encoding as they are: no key of a repeated, no identity key where a has
// an identity (it would change the span's service).
func (a *Attributes) separate(own []attribute.KeyValue) bool {
	for _, kv := range own {
		h := keyBits(kv.Key)
		if a.keys[h>>6]&(1<<(h&63)) != 0 && indexKey(a.kvs, kv.Key) >= 0 {
			return false
		}
		if len(a.ident) > 0 && perservice.IsResourceKey(kv.Key) {
			return false
		}
	}
	return true
}

// maxFree bounds the records kept for reuse: more than the spans live at
// once on a busy agent, few enough to be small (a few hundred kB).
const maxFree = 256

// record returns a free record, or a new one.
func (p *TracerProvider) record() *record {
	p.freeMu.Lock()
	if n := len(p.free); n > 0 {
		r := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.freeMu.Unlock()
		return r
	}
	p.freeMu.Unlock()
	return new(record)
}

// release keeps rec for reuse, unless it grew too large or enough are kept.
func (p *TracerProvider) release(rec *record) {
	if cap(rec.buf) > maxPooledBuf || cap(rec.attrs) > 4*maxAttributes {
		return
	}
	rec.reset()
	p.freeMu.Lock()
	if len(p.free) < maxFree {
		p.free = append(p.free, rec)
	}
	p.freeMu.Unlock()
}

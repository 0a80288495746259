package spans

import (
	"context"
	"hash/maphash"
	"reflect"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/exporters/perservice"
)

// record holds what a live span accumulates; it goes back to the
// provider's pool when the span ends, with its buffers' capacity.
type record struct {
	attrs         []attribute.KeyValue
	events        []event
	links         []trace.Link
	droppedEvents int
	droppedLinks  int

	ident []attribute.KeyValue // identity attributes, at End
	buf   []byte               // the encoded span, at End

	// what the encoding takes besides (the span handle keeps only its
	// span context: it outlives the record)
	head head

	// parent holds Emit's parent span context for the sampler
	parent sampling.Context
}

type event struct {
	name  string
	time  int64
	attrs []attribute.KeyValue
}

func (r *record) addLink(l trace.Link) {
	if !l.SpanContext.IsValid() {
		return
	}
	if len(r.links) >= maxLinks {
		r.droppedLinks++
		return
	}
	r.links = append(r.links, l)
}

// reset empties r for the next span. The attribute slices are not
// cleared: the next span overwrites them, and clearing pointerful memory
// costs write barriers while the collector marks; what they still point to
// until then is one span's strings per pooled record.
func (r *record) reset() {
	r.attrs = r.attrs[:0]
	clear(r.events)
	r.events = r.events[:0]
	clear(r.links)
	r.links = r.links[:0]
	r.ident = r.ident[:0]
	r.droppedEvents, r.droppedLinks = 0, 0
	r.buf = r.buf[:0]
	r.head = head{}
}

// maxPooledBuf keeps a span with a huge attribute from pinning its buffer.
const maxPooledBuf = 64 << 10

// span is a recording span. Its record is released at End; the span
// itself stays valid (SpanContext, IsRecording) for whoever still holds it.
//
// A span is also the context Start returns (its parent context with the
// span in it), which saves the trace API's context allocation per span.
type span struct {
	embedded.Span
	parentCtx context.Context
	t         *tracer
	sc        trace.SpanContext

	mu  sync.Mutex
	rec *record // nil once ended
}

var _ trace.Span = (*span)(nil)

// spanKey is the key under which trace.SpanFromContext looks for the
// span, learnt by asking it once; nil: not learnt, Start then wraps the
// context as trace.ContextWithSpan does.
var spanKey = func() any {
	var k keySpy
	trace.SpanFromContext(&k)
	return k.key
}()

func init() {
	// the key must be answered, and the span found: else the API's way
	probe := &span{parentCtx: context.Background()}
	if spanKey != nil && trace.SpanFromContext(probe) != probe {
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

// context returns the context holding s: s itself when spanKey is known.
func (s *span) context() context.Context {
	if spanKey == nil {
		return trace.ContextWithSpan(s.parentCtx, s)
	}
	return s
}

// Deadline, Done, Err and Value make s the context.Context Start returns.
func (s *span) Deadline() (time.Time, bool) { return s.parentCtx.Deadline() }
func (s *span) Done() <-chan struct{}       { return s.parentCtx.Done() }
func (s *span) Err() error                  { return s.parentCtx.Err() }
func (s *span) Value(key any) any {
	if key == spanKey && spanKey != nil {
		return s
	}
	return s.parentCtx.Value(key)
}

func (s *span) SpanContext() trace.SpanContext { return s.sc }

func (s *span) IsRecording() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec != nil
}

func (s *span) SetAttributes(kv ...attribute.KeyValue) {
	s.mu.Lock()
	if s.rec != nil {
		s.rec.attrs = append(s.rec.attrs, kv...)
	}
	s.mu.Unlock()
}

func (s *span) SetName(name string) {
	s.mu.Lock()
	if s.rec != nil {
		s.rec.head.name = name
	}
	s.mu.Unlock()
}

// SetStatus follows the SDK: Ok is final, an Error keeps its description,
// Unset changes nothing.
func (s *span) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec == nil || code == codes.Unset || s.rec.head.status == codes.Ok {
		return
	}
	h := &s.rec.head
	h.status = code
	h.desc = ""
	if code == codes.Error {
		h.desc = description
	}
}

func (s *span) AddEvent(name string, opts ...trace.EventOption) {
	cfg := trace.NewEventConfig(opts...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addEvent(name, cfg)
}

func (s *span) addEvent(name string, cfg trace.EventConfig) {
	r := s.rec
	if r == nil {
		return
	}
	if len(r.events) >= maxEvents {
		r.droppedEvents++
		return
	}
	r.events = append(r.events, event{name: name, time: cfg.Timestamp().UnixNano(), attrs: cfg.Attributes()})
}

// RecordError adds an "exception" event, as the SDK does.
func (s *span) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	opts = append(opts, trace.WithAttributes(
		semconv.ExceptionType(typeName(err)),
		semconv.ExceptionMessage(err.Error()),
	))
	cfg := trace.NewEventConfig(opts...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addEvent(semconv.ExceptionEventName, cfg)
}

func (s *span) AddLink(l trace.Link) {
	s.mu.Lock()
	if s.rec != nil {
		s.rec.addLink(l)
	}
	s.mu.Unlock()
}

func (s *span) TracerProvider() trace.TracerProvider { return s.t.p }

// End encodes the span and queues it for export.
func (s *span) End(opts ...trace.SpanEndOption) {
	s.mu.Lock()
	rec := s.rec
	s.rec = nil
	s.mu.Unlock()
	if rec == nil {
		return
	}
	var end int64
	if len(opts) > 0 {
		cfg := trace.NewSpanEndConfig(opts...)
		if ts := cfg.Timestamp(); !ts.IsZero() {
			end = ts.UnixNano()
		}
	}
	if end == 0 {
		end = time.Now().UnixNano()
	}
	s.encode(rec, end)
	s.t.p.enqueue(s.t, rec, nil)
	s.t.p.release(rec)
}

// head is what a span's encoding takes besides its attributes, events
// and links (in its record).
type head struct {
	sc, parent trace.SpanContext
	kind       trace.SpanKind
	name       string
	start, end int64
	status     codes.Code
	desc       string
}

// encode writes the span into rec.buf.
func (s *span) encode(rec *record, end int64) {
	rec.head.sc, rec.head.end = s.sc, end
	encodeSpan(rec, &rec.head, nil)
}

// encodeSpan writes the span into rec.buf as a ScopeSpans.spans field,
// leaving out its identity attributes (collected in rec.ident), which
// belong to its service's resource. With series, the series' attributes
// (already encoded, identity left out) come first and rec.attrs are the
// span's own, which repeat no series key and hold no identity key
// (Tracer.Emit sees to it).
func encodeSpan(rec *record, h *head, series *Attributes) {
	attrs := rec.attrs
	service := false
	if series == nil {
		attrs = dedupe(rec.attrs)
		for i := range attrs {
			if attrs[i].Key == perservice.ServiceName {
				service = true
				break
			}
		}
	}
	// The span goes straight into rec.buf after its field tag and a
	// two-byte length, fixed up at the end: no second copy of the body.
	b := appendTag(rec.buf[:0], fScopeSpansSpans, protowire.BytesType)
	lenAt := len(b)
	b = append(b, 0, 0)
	tid, sid := h.sc.TraceID(), h.sc.SpanID()
	b = appendBytes(b, fSpanTraceID, tid[:])
	b = appendBytes(b, fSpanSpanID, sid[:])
	if ts := h.sc.TraceState(); ts.Len() > 0 {
		b = appendString(b, fSpanTraceState, ts.String())
	}
	if h.parent.IsValid() {
		psid := h.parent.SpanID()
		b = appendBytes(b, fSpanParentSpanID, psid[:])
	}
	b = appendString(b, fSpanName, h.name)
	b = appendVarint(b, fSpanKind, uint64(h.kind))
	b = appendFixed64(b, fSpanStart, uint64(h.start))
	b = appendFixed64(b, fSpanEnd, uint64(h.end))
	kept, dropped := 0, 0
	if series != nil {
		b = append(b, series.enc...)
		kept, dropped = series.kept, series.dropped
	}
	for _, kv := range attrs {
		if service && perservice.IsResourceKey(kv.Key) {
			rec.ident = append(rec.ident, kv)
			continue
		}
		if kept == maxAttributes {
			dropped++
			continue
		}
		b = appendKeyValue(b, fSpanAttributes, kv)
		kept++
	}
	if dropped > 0 {
		b = appendVarint(b, fSpanDroppedAttributes, uint64(dropped))
	}
	for _, e := range rec.events {
		b = appendEvent(b, e)
	}
	if rec.droppedEvents > 0 {
		b = appendVarint(b, fSpanDroppedEvents, uint64(rec.droppedEvents))
	}
	for _, l := range rec.links {
		b = appendLink(b, l)
	}
	if rec.droppedLinks > 0 {
		b = appendVarint(b, fSpanDroppedLinks, uint64(rec.droppedLinks))
	}
	b = appendStatus(b, h.status, h.desc)
	b = appendFixed32(b, fSpanFlags, spanFlags(h.sc.TraceFlags(), h.parent))
	rec.buf = fixLength(b, lenAt)
}

// fixLength writes the length of the message after b[lenAt:lenAt+2] (the
// two bytes reserved for it) as its varint, moving the body when the
// varint is not two bytes long.
func fixLength(b []byte, lenAt int) []byte {
	size := len(b) - lenAt - 2
	switch {
	case size < 1<<7:
		b[lenAt] = byte(size)
		copy(b[lenAt+1:], b[lenAt+2:])
		return b[:len(b)-1]
	case size < 1<<14:
		b[lenAt] = byte(size&0x7f | 0x80)
		b[lenAt+1] = byte(size >> 7)
		return b
	}
	body := append([]byte(nil), b[lenAt+2:]...)
	b = appendUvarint(b[:lenAt], uint64(size))
	return append(b, body...)
}

func appendEvent(b []byte, e event) []byte {
	attrs := dedupe(e.attrs)
	kept := min(len(attrs), maxAttributes)
	size := 1 + 8 + 1 + stringSize(e.name)
	for _, kv := range attrs[:kept] {
		size += 1 + protowire.SizeBytes(keyValueSize(kv))
	}
	if kept < len(attrs) {
		size += 1 + protowire.SizeVarint(uint64(len(attrs)-kept))
	}
	b = appendTagLen(b, fSpanEvents, size)
	b = appendFixed64(b, fEventTime, uint64(e.time))
	b = appendString(b, fEventName, e.name)
	for _, kv := range attrs[:kept] {
		b = appendKeyValue(b, fEventAttributes, kv)
	}
	if kept < len(attrs) {
		b = appendVarint(b, fEventDroppedAttributes, uint64(len(attrs)-kept))
	}
	return b
}

func appendLink(b []byte, l trace.Link) []byte {
	attrs := dedupe(append([]attribute.KeyValue(nil), l.Attributes...))
	kept := min(len(attrs), maxAttributes)
	ts := l.SpanContext.TraceState().String()
	size := 1 + protowire.SizeBytes(16) + 1 + protowire.SizeBytes(8) + 1 + 4
	if ts != "" {
		size += 1 + stringSize(ts)
	}
	for _, kv := range attrs[:kept] {
		size += 1 + protowire.SizeBytes(keyValueSize(kv))
	}
	if kept < len(attrs) {
		size += 1 + protowire.SizeVarint(uint64(len(attrs)-kept))
	}
	tid, sid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
	b = appendTagLen(b, fSpanLinks, size)
	b = appendBytes(b, fLinkTraceID, tid[:])
	b = appendBytes(b, fLinkSpanID, sid[:])
	if ts != "" {
		b = appendString(b, fLinkTraceState, ts)
	}
	for _, kv := range attrs[:kept] {
		b = appendKeyValue(b, fLinkAttributes, kv)
	}
	if kept < len(attrs) {
		b = appendVarint(b, fLinkDroppedAttributes, uint64(len(attrs)-kept))
	}
	return appendFixed32(b, fLinkFlags, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
}

// dedupe keeps, in place, the last value of every key at the place of its
// first occurrence, as the SDK does. A 256-bit filter on a cheap key hash
// sends only the keys that may repeat to a scan.
func dedupe(kvs []attribute.KeyValue) []attribute.KeyValue {
	var seen [4]uint64
	n := 0
	for i := range kvs {
		kv := kvs[i]
		h := keyBits(kv.Key)
		w, m := h>>6, uint64(1)<<(h&63)
		if seen[w]&m != 0 {
			if j := indexKey(kvs[:n], kv.Key); j >= 0 {
				kvs[j] = kv
				continue
			}
		}
		seen[w] |= m
		if n != i {
			kvs[n] = kv
		}
		n++
	}
	return kvs[:n]
}

func keyBits(k attribute.Key) uint {
	n := len(k)
	if n == 0 {
		return 0
	}
	h := uint(n)*0x9e37 ^ uint(k[n-1])*0x85eb ^ uint(k[n/2])*0xc2b2 ^ uint(k[0])*0x27d4
	return (h ^ h>>8) & 0xff
}

func indexKey(kvs []attribute.KeyValue, k attribute.Key) int {
	for i := range kvs {
		if kvs[i].Key == k {
			return i
		}
	}
	return -1
}

func keyValueSize(kv attribute.KeyValue) int {
	return 1 + stringSize(string(kv.Key)) + 1 + protowire.SizeBytes(anyValueSize(kv.Value))
}

func appendTagLen(b []byte, f protowire.Number, size int) []byte {
	b = appendTag(b, f, protowire.BytesType)
	return appendUvarint(b, uint64(size))
}

var seed = maphash.MakeSeed()

// identityHash does not depend on the attributes' order.
func identityHash(ident []attribute.KeyValue) uint64 {
	var h uint64
	for _, kv := range ident {
		h += maphash.Comparable(seed, kv)
	}
	return h
}

// sameOrder reports whether a and b hold equal attributes in the same
// order: the usual case, spans of one series sharing its attribute slice.
func sameOrder(a, b []attribute.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sameSet reports whether a and b, each without repeated keys, hold the
// same attributes in any order.
func sameSet(a, b []attribute.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	if sameOrder(a, b) {
		return true
	}
	for _, kv := range b {
		if j := indexKey(a, kv.Key); j < 0 || a[j] != kv {
			return false
		}
	}
	return true
}

// typeName names an error's type for exception.type, as the SDK does.
func typeName(err error) string {
	t := reflect.TypeOf(err)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String() // a pointer or another unnamed type
	}
	return t.PkgPath() + "." + t.Name()
}

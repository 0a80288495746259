package spans

import (
	"math"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the OTLP messages this package writes
// (opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto,
// resource/v1/resource.proto). Encoding them directly, into reused buffers,
// is what makes a span cost a few hundred nanoseconds instead of the SDK's
// span objects, attribute sets and reflection-driven marshalling.
const (
	// ResourceSpans
	fResourceSpansResource   protowire.Number = 1
	fResourceSpansScopeSpans protowire.Number = 2
	fResourceSpansSchemaURL  protowire.Number = 3
	// Resource
	fResourceAttributes protowire.Number = 1
	// ScopeSpans
	fScopeSpansScope     protowire.Number = 1
	fScopeSpansSpans     protowire.Number = 2
	fScopeSpansSchemaURL protowire.Number = 3
	// InstrumentationScope
	fScopeName       protowire.Number = 1
	fScopeVersion    protowire.Number = 2
	fScopeAttributes protowire.Number = 3
	// Span
	fSpanTraceID           protowire.Number = 1
	fSpanSpanID            protowire.Number = 2
	fSpanTraceState        protowire.Number = 3
	fSpanParentSpanID      protowire.Number = 4
	fSpanName              protowire.Number = 5
	fSpanKind              protowire.Number = 6
	fSpanStart             protowire.Number = 7
	fSpanEnd               protowire.Number = 8
	fSpanAttributes        protowire.Number = 9
	fSpanDroppedAttributes protowire.Number = 10
	fSpanEvents            protowire.Number = 11
	fSpanDroppedEvents     protowire.Number = 12
	fSpanLinks             protowire.Number = 13
	fSpanDroppedLinks      protowire.Number = 14
	fSpanStatus            protowire.Number = 15
	fSpanFlags             protowire.Number = 16
	// Span.Event
	fEventTime              protowire.Number = 1
	fEventName              protowire.Number = 2
	fEventAttributes        protowire.Number = 3
	fEventDroppedAttributes protowire.Number = 4
	// Span.Link
	fLinkTraceID           protowire.Number = 1
	fLinkSpanID            protowire.Number = 2
	fLinkTraceState        protowire.Number = 3
	fLinkAttributes        protowire.Number = 4
	fLinkDroppedAttributes protowire.Number = 5
	fLinkFlags             protowire.Number = 6
	// Status
	fStatusMessage protowire.Number = 2
	fStatusCode    protowire.Number = 3
	// KeyValue
	fKVKey   protowire.Number = 1
	fKVValue protowire.Number = 2
	// AnyValue
	fAnyString protowire.Number = 1
	fAnyBool   protowire.Number = 2
	fAnyInt    protowire.Number = 3
	fAnyDouble protowire.Number = 4
	fAnyArray  protowire.Number = 5
	// ArrayValue
	fArrayValues protowire.Number = 1
)

// Span flags (SpanFlags): the low byte is the W3C trace flags; these say
// that whether the parent is remote is known, and that it is.
const (
	flagHasIsRemote uint32 = 0x100
	flagIsRemote    uint32 = 0x200
)

// OTLP status codes (Status.StatusCode); the API's codes are numbered
// differently (codes.Error is 1, codes.Ok 2).
const (
	statusOK    = 1
	statusError = 2
)

// appendUvarint is protowire.AppendVarint with the one-byte case (nearly
// every tag, length and small integer here) inlined.
func appendUvarint(b []byte, v uint64) []byte {
	if v < 0x80 {
		return append(b, byte(v))
	}
	return protowire.AppendVarint(b, v)
}

func appendTag(b []byte, f protowire.Number, t protowire.Type) []byte {
	return appendUvarint(b, protowire.EncodeTag(f, t))
}

func appendString(b []byte, f protowire.Number, s string) []byte {
	b = appendTag(b, f, protowire.BytesType)
	return append(appendUvarint(b, uint64(len(s))), s...)
}

func appendBytes(b []byte, f protowire.Number, v []byte) []byte {
	b = appendTag(b, f, protowire.BytesType)
	return append(appendUvarint(b, uint64(len(v))), v...)
}

func appendVarint(b []byte, f protowire.Number, v uint64) []byte {
	b = appendTag(b, f, protowire.VarintType)
	return appendUvarint(b, v)
}

func appendFixed64(b []byte, f protowire.Number, v uint64) []byte {
	b = appendTag(b, f, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendFixed32(b []byte, f protowire.Number, v uint32) []byte {
	b = appendTag(b, f, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, v)
}

// stringSize is the size of a string field's value (length and bytes).
func stringSize(s string) int { return protowire.SizeBytes(len(s)) }

// anyValueSize is the size of v encoded as an AnyValue message (without its
// own tag and length).
func anyValueSize(v attribute.Value) int {
	switch v.Type() {
	case attribute.BOOL:
		return 1 + 1
	case attribute.INT64:
		return 1 + protowire.SizeVarint(uint64(v.AsInt64()))
	case attribute.FLOAT64:
		return 1 + 8
	case attribute.STRING:
		return 1 + stringSize(v.AsString())
	case attribute.BOOLSLICE, attribute.INT64SLICE, attribute.FLOAT64SLICE, attribute.STRINGSLICE:
		n := arrayValueSize(v)
		return 1 + protowire.SizeBytes(n)
	}
	return 0 // INVALID: an empty AnyValue, as the SDK's exporter sends
}

// arrayValueSize is the size of a slice value's ArrayValue message.
func arrayValueSize(v attribute.Value) int {
	n := 0
	switch v.Type() {
	case attribute.BOOLSLICE:
		n = len(v.AsBoolSlice()) * (1 + protowire.SizeBytes(2))
	case attribute.INT64SLICE:
		for _, x := range v.AsInt64Slice() {
			n += 1 + protowire.SizeBytes(1+protowire.SizeVarint(uint64(x)))
		}
	case attribute.FLOAT64SLICE:
		n = len(v.AsFloat64Slice()) * (1 + protowire.SizeBytes(9))
	case attribute.STRINGSLICE:
		for _, s := range v.AsStringSlice() {
			n += 1 + protowire.SizeBytes(1+stringSize(s))
		}
	}
	return n
}

// appendAnyValue appends the fields of v's AnyValue message.
func appendAnyValue(b []byte, v attribute.Value) []byte {
	switch v.Type() {
	case attribute.BOOL:
		return appendVarint(b, fAnyBool, protowire.EncodeBool(v.AsBool()))
	case attribute.INT64:
		return appendVarint(b, fAnyInt, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		return appendFixed64(b, fAnyDouble, math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		return appendString(b, fAnyString, v.AsString())
	case attribute.BOOLSLICE, attribute.INT64SLICE, attribute.FLOAT64SLICE, attribute.STRINGSLICE:
		b = appendTag(b, fAnyArray, protowire.BytesType)
		b = appendUvarint(b, uint64(arrayValueSize(v)))
		return appendArrayValues(b, v)
	}
	return b
}

func appendArrayValues(b []byte, v attribute.Value) []byte {
	elem := func(b []byte, size int) []byte {
		b = appendTag(b, fArrayValues, protowire.BytesType)
		return appendUvarint(b, uint64(size))
	}
	switch v.Type() {
	case attribute.BOOLSLICE:
		for _, x := range v.AsBoolSlice() {
			b = appendVarint(elem(b, 2), fAnyBool, protowire.EncodeBool(x))
		}
	case attribute.INT64SLICE:
		for _, x := range v.AsInt64Slice() {
			b = appendVarint(elem(b, 1+protowire.SizeVarint(uint64(x))), fAnyInt, uint64(x))
		}
	case attribute.FLOAT64SLICE:
		for _, x := range v.AsFloat64Slice() {
			b = appendFixed64(elem(b, 9), fAnyDouble, math.Float64bits(x))
		}
	case attribute.STRINGSLICE:
		for _, s := range v.AsStringSlice() {
			b = appendString(elem(b, 1+stringSize(s)), fAnyString, s)
		}
	}
	return b
}

// appendKeyValue appends kv as field f (a repeated KeyValue). Scalars and
// strings, nearly every attribute, are sized and written in one switch.
func appendKeyValue(b []byte, f protowire.Number, kv attribute.KeyValue) []byte {
	key := string(kv.Key)
	keySize := 1 + stringSize(key)
	switch kv.Value.Type() {
	case attribute.STRING:
		v := kv.Value.AsString()
		vs := 1 + stringSize(v)
		b = appendTagLen(b, f, keySize+1+protowire.SizeBytes(vs))
		b = appendString(b, fKVKey, key)
		b = appendTagLen(b, fKVValue, vs)
		return appendString(b, fAnyString, v)
	case attribute.INT64:
		v := uint64(kv.Value.AsInt64())
		vs := 1 + protowire.SizeVarint(v)
		b = appendTagLen(b, f, keySize+1+protowire.SizeBytes(vs))
		b = appendString(b, fKVKey, key)
		b = appendTagLen(b, fKVValue, vs)
		return appendVarint(b, fAnyInt, v)
	}
	vs := anyValueSize(kv.Value)
	b = appendTagLen(b, f, keySize+1+protowire.SizeBytes(vs))
	b = appendString(b, fKVKey, key)
	b = appendTagLen(b, fKVValue, vs)
	return appendAnyValue(b, kv.Value)
}

// appendMessage appends body as the length-delimited field f.
func appendMessage(b []byte, f protowire.Number, body []byte) []byte {
	return appendBytes(b, f, body)
}

// encodeResource returns the Resource message body for attrs.
func encodeResource(attrs []attribute.KeyValue) []byte {
	var b []byte
	for _, kv := range attrs {
		b = appendKeyValue(b, fResourceAttributes, kv)
	}
	return b
}

// encodeScope returns the InstrumentationScope message body.
func encodeScope(name, version string, attrs []attribute.KeyValue) []byte {
	var b []byte
	if name != "" {
		b = appendString(b, fScopeName, name)
	}
	if version != "" {
		b = appendString(b, fScopeVersion, version)
	}
	for _, kv := range attrs {
		b = appendKeyValue(b, fScopeAttributes, kv)
	}
	return b
}

// appendStatus appends the span's Status field, if it has one.
func appendStatus(b []byte, code codes.Code, desc string) []byte {
	var c uint64
	switch code {
	case codes.Ok:
		c = statusOK
	case codes.Error:
		c = statusError
	default:
		return b
	}
	size := 1 + protowire.SizeVarint(c)
	if desc != "" {
		size += 1 + stringSize(desc)
	}
	b = appendTag(b, fSpanStatus, protowire.BytesType)
	b = appendUvarint(b, uint64(size))
	if desc != "" {
		b = appendString(b, fStatusMessage, desc)
	}
	return appendVarint(b, fStatusCode, c)
}

// spanFlags are the Span.flags and Span.Link.flags of a span context whose
// parent (or linked span) is sc.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | flagHasIsRemote
	if parent.IsRemote() {
		f |= flagIsRemote
	}
	return f
}

// Package l7 is the contract between the L7 capture layer and the protocols
// it carries. The layer (collectors/l7/capture and the kernel's L7 capture)
// tracks connections, classifies them, captures their bytes by the
// protocol's capture policy and hands each connection's records, in order, to
// the parser its protocol made for it. A parser turns records into
// exchanges: one request and its response, or a one-way message. It never
// looks anything up: its connection is handed to it, and what it finds goes
// to the Sink it is given.
//
// A protocol lives in its own sub-package (http2, postgres, redis, ...),
// is pure Go (no kernel, no exporter), fuzzed, and allocates nothing per
// exchange once a connection is warm.
package l7

import (
	"net/netip"

	"go.opentelemetry.io/otel/attribute"
)

// Dir is the direction of a record on the wire, from the client's point of
// view. The layer derives it from the observed end's role and the call
// (a server's read is ToServer), so parsers never see "read" or "write".
type Dir uint8

const (
	ToServer Dir = iota // client → server: requests
	ToClient            // server → client: responses, greetings, pushes
)

func (d Dir) String() string {
	if d == ToServer {
		return "to_server"
	}
	return "to_client"
}

// Role is which end of the connection the observed process is.
type Role uint8

const (
	RoleClient Role = iota + 1
	RoleServer
)

// Source is where a connection's plaintext comes from.
type Source uint8

const (
	SourceSyscall    Source = iota + 1 // read/write system calls (tracepoints)
	SourceOpenSSL                      // SSL_read/SSL_write uprobes (libssl or a static build)
	SourceGoTLS                        // Go crypto/tls (*Conn).Read/Write uprobes
	SourceKernelFunc                   // kernel socket functions (fentry/kprobe)
)

func (s Source) String() string {
	switch s {
	case SourceSyscall:
		return "syscall"
	case SourceOpenSSL:
		return "openssl"
	case SourceGoTLS:
		return "gotls"
	case SourceKernelFunc:
		return "kernel"
	}
	return "unknown"
}

// TLS reports whether the plaintext came from a TLS library (url.scheme
// https, and the like).
func (s Source) TLS() bool { return s == SourceOpenSSL || s == SourceGoTLS }

// Conn is one tracked connection as the observed process sees it. The layer
// owns it; a parser may keep the pointer for the connection's life and read
// it, never write it.
type Conn struct {
	ID     uint64 // unique for the agent's lifetime
	PID    uint32 // the process the records are attributed to
	Role   Role
	Source Source
	Local  netip.AddrPort
	Peer   netip.AddrPort
	// Midstream: the connection existed before the agent started, so its
	// first record may begin in the middle of a message (and stateful
	// decoders, such as HPACK's dynamic table, start without their state).
	Midstream bool
}

// Record is what one call moved in one direction, as the protocol's
// capture policy kept it.
type Record struct {
	Dir Dir
	// Data is the captured bytes: the call's first bytes (Data is shorter
	// than Total when the policy kept a prefix). Valid only during Feed.
	Data []byte
	// Total is the number of bytes the call moved.
	Total uint64
	// Tail is the call's last bytes when Data stops short of them
	// (policies that keep head and tail, for a terminator at the end of a
	// long response); nil otherwise. Valid only during Feed.
	Tail []byte
	// Segs is what the policy kept of the call past Data, in call order
	// (HTTP/2's frame headers and header blocks further in a long call);
	// empty otherwise. Valid only during Feed.
	Segs Segs
	// Start and End are CLOCK_MONOTONIC nanoseconds: the call's entry and
	// return.
	Start, End uint64
}

// Segs is a record's segments past its prefix as the kernel wrote them
// (bpf/l7.c seg_out): each an offset in the call (u32 LE), a length (u16
// LE) and that many bytes.
type Segs []byte

// SegHdr is the size of a segment's descriptor.
const SegHdr = 6

// Next returns the first segment, its offset in the call and bytes, and the
// segments after it; ok is false at the end or when the rest is
// malformed (a length past the record).
func (s Segs) Next() (off uint64, b []byte, rest Segs, ok bool) {
	if len(s) < SegHdr {
		return 0, nil, nil, false
	}
	off = uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24
	n := int(s[4]) | int(s[5])<<8
	if len(s) < SegHdr+n {
		return 0, nil, nil, false
	}
	return off, s[SegHdr : SegHdr+n : SegHdr+n], s[SegHdr+n:], true
}

// Parser turns one connection's records into exchanges. The layer calls it
// from one goroutine, in record order.
type Parser interface {
	// Feed takes the next record.
	Feed(r *Record, out Sink)
	// Lost says records of direction dir were lost before the next Feed
	// (ring buffer full, capture bound): the parser resynchronises and
	// counts what it gave up through out.Drop.
	Lost(dir Dir, out Sink)
	// Close ends the connection at end (monotonic ns): requests still
	// waiting are given up and counted.
	Close(end uint64, out Sink)
}

// Protocol is one protocol the layer can carry.
type Protocol interface {
	// Name is the protocol's short name: the value of its collector flag
	// and of the protocol attribute on the layer's self-metrics
	// ("http", "http2", "postgresql", "mysql", "redis", "memcached", "kafka").
	Name() string
	// Metrics declares the metrics its exchanges are recorded on, by the
	// observed end's role.
	Metrics(role Role) []MetricSpec
	// NewParser returns the parser of one new connection.
	NewParser(c *Conn) Parser
}

// Capture is what a protocol asks of the kernel's capture; the layer
// applies it in the kernel, per connection, from the connection's decision
// on.
type Capture struct {
	// Bytes is how much of each call's start the kernel keeps (at most
	// 4096); 0: the layer's shared setting (l7.capture_bytes).
	Bytes int
	// ClientSide: an exchange is recorded once, from the client's side
	// when the client is on this host. The kernel gives up the server side
	// of a connection whose client end it tracks (loopback, a Unix socket,
	// another network namespace's address alike) before any record is
	// sent; a client not tracked (remote, or left out by the filters) is
	// recorded from the server's side with the client as the peer.
	ClientSide bool
	// Multiplexed: a connection's requests and responses may be read and
	// written at the same time, by two threads (HTTP/2 and gRPC, Kafka
	// clients), each response paired by its stream or correlation id. The
	// layer then learns a direction's lost records from that direction's
	// own records only: what one direction's record says of the other may
	// be ahead of a record still on its way.
	Multiplexed bool
}

// CapturePolicy is implemented by a protocol with capture needs of its own.
type CapturePolicy interface {
	Capture() Capture
}

// Upgrade is the request that switched its connection to another
// protocol: an HTTP/1.1 request with "Upgrade: h2c" answered 101, which
// HTTP/2 takes as its stream 1. Its slices are valid during Upgraded only.
type Upgrade struct {
	// Method, Target (its query string cut) and Host are the request's.
	Method, Target, Host []byte
	// Start is the request's first call's entry, End the 101's return
	// (monotonic ns).
	Start, End uint64
	// Rest is what the call that carried the 101 moved after its head:
	// the new protocol's first bytes from the server.
	Rest []byte
}

// Upgrader is a Protocol that takes over connections another protocol
// upgraded to it (the layer hands an h2c upgrade from HTTP/1 to HTTP/2).
type Upgrader interface {
	// Upgraded returns the parser of connection c from the upgrade on;
	// the records after the upgrade follow.
	Upgraded(c *Conn, u *Upgrade) Parser
}

// MetricKind is how an exchange is recorded on a metric.
type MetricKind uint8

const (
	// Duration: a histogram of End-Start in seconds.
	Duration MetricKind = iota
	// MessageCount: a counter of Exchange.Messages (messages sent or
	// consumed, where a protocol batches them).
	MessageCount
)

// MetricSpec declares one metric. Names, units and attributes follow the
// OpenTelemetry semantic conventions; anything they lack is under otelbee.
type MetricSpec struct {
	Name        string // e.g. db.client.operation.duration
	Unit        string // s, {message}
	Description string
	Kind        MetricKind
	// Buckets are explicit histogram bounds (Duration); nil: the
	// conventions' default for durations.
	Buckets []float64
	// Index is the position of this metric in Exchange's per-metric
	// selection (Exchange.Metric): an exchange is recorded only on the
	// metric it names.
	Index int
}

// MaxAttrs bounds the attributes of one exchange.
const MaxAttrs = 12

// Exchange is one request and its response, or one one-way message, as the
// parser saw it. The parser owns it and may reuse it after Sink returns; the
// sink copies what it keeps. Attribute values must be bounded in cardinality
// (the layer caps series per service, but a parser must not put raw
// literals, keys or ids into them).
type Exchange struct {
	// Metric is the MetricSpec.Index this exchange is recorded on.
	Metric int
	// Start is the request's first record's entry, End the response's
	// last record's return (monotonic ns).
	Start, End uint64
	// RequestSize and ResponseSize are bytes on the wire; -1 when unknown.
	RequestSize, ResponseSize int64
	// Messages is what a MessageCount metric adds (0 for Duration).
	Messages int64
	// SpanName follows the protocol's conventions ("SELECT users",
	// "GET /users/{id}", "grpc.health.v1.Health/Check").
	SpanName string
	// Attrs go on the metric and the span: bounded values only.
	Attrs [MaxAttrs]attribute.KeyValue
	NAttr int
	// SpanAttrs go on the span only (db.query.text when enabled, ...).
	SpanAttrs [MaxAttrs]attribute.KeyValue
	NSpanAttr int
	// Error is error.type ("" on success); it is added to Attrs by the
	// layer. StatusError marks the span as failed.
	Error       string
	StatusError bool
	// The incoming trace context, when the request carried one
	// (traceparent): the span becomes its child.
	HasParent    bool
	TraceID      [16]byte
	ParentSpanID [8]byte
	TraceFlags   byte
}

// Add appends a metric attribute; past MaxAttrs it is dropped (a parser
// bug, caught by its tests).
func (x *Exchange) Add(kv attribute.KeyValue) {
	if x.NAttr < MaxAttrs {
		x.Attrs[x.NAttr] = kv
		x.NAttr++
	}
}

// AddSpan appends a span-only attribute.
func (x *Exchange) AddSpan(kv attribute.KeyValue) {
	if x.NSpanAttr < MaxAttrs {
		x.SpanAttrs[x.NSpanAttr] = kv
		x.NSpanAttr++
	}
}

// Reset clears x for reuse without freeing its arrays.
func (x *Exchange) Reset() { *x = Exchange{} }

// Sink receives what parsers find. The layer implements it: it adds the
// connection's identity (service, peer, network attributes), records the
// metrics and, when sampled, the span.
type Sink interface {
	// Exchange records one exchange of connection c.
	Exchange(c *Conn, x *Exchange)
	// Drop counts n requests or messages given up, with a reason from the
	// parser's fixed set ("lost", "incomplete", "malformed", "overflow",
	// "unpaired", "undecodable"): the layer exports them per service as
	// otelbee.l7.exchanges.dropped{protocol, reason}.
	Drop(c *Conn, reason string, n int)
}

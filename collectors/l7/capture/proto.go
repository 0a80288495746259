package capture

import (
	"time"
)

// Proto is a protocol as the kernel classifies it (bpf/l7.c enum l7_proto).
type Proto uint8

// The protocols the kernel's classifier knows.
const (
	ProtoUndecided = Proto(l7L7ProtoL7PROTO_UNDECIDED)
	ProtoHTTP1     = Proto(l7L7ProtoL7PROTO_HTTP1)
	ProtoHTTP2     = Proto(l7L7ProtoL7PROTO_HTTP2)
	ProtoPostgres  = Proto(l7L7ProtoL7PROTO_POSTGRES)
	ProtoMySQL     = Proto(l7L7ProtoL7PROTO_MYSQL)
	ProtoRedis     = Proto(l7L7ProtoL7PROTO_REDIS)
	ProtoMemcached = Proto(l7L7ProtoL7PROTO_MEMCACHED)
	ProtoKafka     = Proto(l7L7ProtoL7PROTO_KAFKA)
	protoMax       = Proto(l7L7ProtoL7PROTO_MAX)
)

// protoNames are the protocols' names: their collector names and the
// protocol attribute of the layer's self-metrics.
var protoNames = [protoMax]string{
	ProtoUndecided: "undecided",
	ProtoHTTP1:     "http",
	ProtoHTTP2:     "http2",
	ProtoPostgres:  "postgresql",
	ProtoMySQL:     "mysql",
	ProtoRedis:     "redis",
	ProtoMemcached: "memcached",
	ProtoKafka:     "kafka",
}

func (p Proto) String() string {
	if p < protoMax {
		return protoNames[p]
	}
	return "unknown"
}

// ProtoByName returns the protocol named name (a collector name), if the
// kernel classifies it.
func ProtoByName(name string) (Proto, bool) {
	for i, n := range protoNames {
		if i > 0 && n == name {
			return Proto(i), true
		}
	}
	return 0, false
}

// Handler is what a protocol's collector gives the engine: the records of
// each connection its protocol was decided for, in order, from the Run
// goroutine. A connection's handler state (a parser) lives in Conn.State.
// Protocols written against the l7 contract do not implement this: the
// engine adapts them (protocol.go); HTTP/1 implements it directly, for the
// kernel's extras it uses (segments, transport errors, dropped request
// starts).
type Handler interface {
	// Open starts a connection (r is its open record).
	Open(c *Conn, r *Record)
	// Data takes the connection's next record.
	Data(c *Conn, r *Record)
	// Lost says records of the connection were lost before the next Data
	// or Close (the ring buffer was full), in either direction (a
	// DirLoser is told which, where the engine can tell).
	Lost(c *Conn)
	// End ends the connection at end (monotonic ns): closed, or its
	// process exited (exited). lostStart: its last request start was
	// dropped and got no response since.
	End(c *Conn, end uint64, lostStart, exited bool)
	// Housekeep runs every housekeeping interval, on the Run goroutine:
	// retire what exited processes left (isDead reports a process gone).
	Housekeep(isDead func(uint32) bool, now time.Time)
}

// DirLoser is a Handler told which directions lost records: the kernel
// numbers each direction's records apart (Engine.sequence).
type DirLoser interface {
	LostDirs(c *Conn, toServer, toClient bool)
}

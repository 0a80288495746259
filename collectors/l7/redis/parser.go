// Package redis is the Redis protocol of the L7 layer: RESP2 and RESP3
// commands paired with their replies in order (pipelining and MULTI/EXEC
// included), errors by their prefix, the database index from SELECT, and
// pub/sub messages counted apart from the commands. Keys, values and
// arguments never leave the parser: only the command name, bounded to the
// commands Redis has, and the error prefix, bounded to the ones Redis sends.
package redis

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"

	"github.com/otelbee/otelbee/collectors/l7"
)

// Name is the protocol's name (collector flag, self-metric attribute).
const Name = "redis"

// Metric indexes (l7.MetricSpec.Index, l7.Exchange.Metric).
const (
	MetricDuration = iota // db.client.operation.duration
	MetricPubSub          // otelbee.redis.pubsub.messages
)

const (
	// OtherOperation is db.operation.name for a command Redis does not
	// have (a typo, a module's command, garbage).
	OtherOperation = "_OTHER"
	// maxPending bounds the commands waiting for a reply on one connection
	// (a pipeline deeper than this is counted as overflow).
	maxPending = 1024
	// maxDB is the largest database index named in db.namespace (Redis
	// has 16 by default; a larger index is left out rather than minted).
	maxDB = 255
)

// DurationBuckets are the database conventions' advised bounds for
// db.client.operation.duration.
var DurationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}

var (
	systemAttr = attribute.String("db.system.name", "redis")
	opIndex    = map[string]uint16{}
	opAttrs    []attribute.KeyValue
	nsAttrs    [maxDB + 1]attribute.KeyValue
	errAttrs   = map[string]attribute.KeyValue{}
	otherErr   = attribute.String("db.response.status_code", OtherOperation)
	// errorPrefixes are the error codes Redis and its common modules send;
	// any other prefix is _OTHER (a script's redis.error_reply can make
	// up any word).
	errorPrefixes = []string{
		"ASK", "BUSY", "BUSYGROUP", "BUSYKEY", "CLUSTERDOWN", "CROSSSLOT", "ERR",
		"EXECABORT", "INVALIDOBJ", "LOADING", "MASTERDOWN", "MISCONF", "MOVED",
		"NOAUTH", "NOGROUP", "NOPERM", "NOPROTO", "NOREPLICAS", "NOSCRIPT",
		"NOTBUSY", "OOM", "READONLY", "TRYAGAIN", "UNBLOCKED", "UNKILLABLE",
		"WRONGPASS", "WRONGTYPE",
	}
)

const otherOp = 0

func init() {
	opAttrs = append(opAttrs, attribute.String("db.operation.name", OtherOperation))
	for _, c := range commands {
		opIndex[c] = uint16(len(opAttrs))
		opAttrs = append(opAttrs, attribute.String("db.operation.name", c))
	}
	for i := range nsAttrs {
		nsAttrs[i] = attribute.String("db.namespace", strconv.Itoa(i))
	}
	for _, e := range errorPrefixes {
		errAttrs[e] = attribute.String("db.response.status_code", e)
	}
}

// Protocol is Redis for the L7 layer.
type Protocol struct{}

// New returns the Redis protocol.
func New() *Protocol { return &Protocol{} }

// Name implements l7.Protocol.
func (*Protocol) Name() string { return Name }

// Metrics implements l7.Protocol: the same series whichever end is observed
// (the layer names the peer).
func (*Protocol) Metrics(l7.Role) []l7.MetricSpec {
	return []l7.MetricSpec{
		{
			Name:        "db.client.operation.duration",
			Unit:        "s",
			Description: "Duration of database client operations.",
			Kind:        l7.Duration,
			Buckets:     DurationBuckets,
			Index:       MetricDuration,
		},
		{
			Name:        "otelbee.redis.pubsub.messages",
			Unit:        "{message}",
			Description: "Pub/sub messages Redis delivered to subscribers.",
			Kind:        l7.MessageCount,
			Index:       MetricPubSub,
		},
	}
}

// Capture implements l7.CapturePolicy: an operation is recorded once, from
// the client's side when the client is on this host (the kernel gives up
// the server side of such a connection).
func (*Protocol) Capture() l7.Capture { return l7.Capture{ClientSide: true} }

// NewParser implements l7.Protocol.
func (*Protocol) NewParser(c *l7.Conn) l7.Parser {
	p := &parser{c: c, fifo: l7.NewFIFO[request](8), fifoCap: 8}
	p.scan[l7.ToServer].inline = true
	if c != nil && c.Midstream {
		// The first record may start inside a command; wait for the
		// client's next turn, and the database index is unknown.
		p.lost[l7.ToServer], p.lost[l7.ToClient], p.sawReply, p.db = true, true, true, -1
	}
	return p
}

type reqKind uint8

const (
	kindPlain reqKind = iota
	kindSelect
	kindSubscribe   // SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: one confirmation per channel
	kindUnsubscribe // the UNSUBSCRIBE family: per channel, or at least one without any
	kindMonitor
)

type request struct {
	start  uint64
	size   int64
	resp   int64 // reply bytes so far (subscribe family)
	op     uint16
	kind   reqKind
	db     int16 // SELECT's index, -1 when not one Redis accepts
	expect int32 // confirmations still due (subscribe family)
}

type parser struct {
	c    *l7.Conn
	scan [2]scanner // by l7.Dir
	// msgStart is the Start of the record each direction's current value
	// began in.
	msgStart [2]uint64
	fifo     *l7.FIFO[request]
	fifoCap  int
	// untracked counts commands refused by a full FIFO (already counted
	// as overflow): their replies come after every tracked one's, and are
	// consumed without an exchange.
	untracked int
	x         l7.Exchange
	db        int // -1: unknown
	// subscribed: RESP2 replies may be pushes (message, pmessage,
	// smessage). monitoring: the server streams MONITOR lines.
	subscribed, monitoring bool
	// lost: the direction's place was lost (bytes missed or unreadable);
	// its records are skipped up to the client's next turn, a record to
	// the server after one to the client (sawReply), where both
	// directions start afresh. While commands are lost, each reply still
	// read stands for one of them (counted as incomplete); while replies
	// are lost, the commands waiting are given up at the turn.
	lost     [2]bool
	sawReply bool
	// why is the drop reason of the current loss.
	why string
}

// Feed implements l7.Parser.
func (p *parser) Feed(r *l7.Record, out l7.Sink) {
	if p.lost[l7.ToServer] || p.lost[l7.ToClient] {
		if r.Dir == l7.ToClient {
			p.sawReply = true
			if p.lost[l7.ToClient] {
				return
			}
		} else if p.sawReply {
			p.turn(out)
			if len(r.Data) == 0 || !commandStart(r.Data[0]) {
				p.lost[l7.ToServer] = true
				return
			}
			p.lost[l7.ToServer] = false
		} else if p.lost[l7.ToServer] {
			return
		}
	}
	data, tail := r.Data, r.Tail
	gap := int64(r.Total) - int64(len(data)) - int64(len(tail))
	if gap < 0 {
		// Tail overlaps Data (or Total undercounts): keep what is new.
		if int64(len(tail)) > -gap {
			tail = tail[-gap:]
		} else {
			tail = nil
		}
		gap = 0
	}
	if !p.feedBytes(r, data, out) {
		return
	}
	if gap > 0 {
		done, bad := p.scan[r.Dir].gap(gap)
		if bad {
			p.lose(r.Dir, "incomplete", out)
			return
		}
		if done {
			p.message(r, out)
		}
	}
	p.feedBytes(r, tail, out)
}

func commandStart(b byte) bool {
	return b == '*' || (b|0x20 >= 'a' && b|0x20 <= 'z')
}

func (p *parser) feedBytes(r *l7.Record, b []byte, out l7.Sink) bool {
	s := &p.scan[r.Dir]
	for len(b) > 0 {
		if !s.inMsg {
			p.msgStart[r.Dir] = r.Start
		}
		n, done, bad := s.feed(b)
		if bad {
			p.lose(r.Dir, "malformed", out)
			return false
		}
		b = b[n:]
		if done {
			p.message(r, out)
		}
	}
	return true
}

func (p *parser) message(r *l7.Record, out l7.Sink) {
	if r.Dir == l7.ToServer {
		p.request(&p.scan[l7.ToServer].msg, out)
	} else {
		p.reply(&p.scan[l7.ToClient].msg, r.End, out)
	}
}

func (p *parser) request(m *message, out l7.Sink) {
	if m.NLeaves == 0 || m.Leaves[0].kind == '*' {
		// An empty array or a nested one: not a command Redis runs.
		out.Drop(p.c, "malformed", 1)
		return
	}
	if p.untracked > 0 || p.fifo.Len() == maxPending {
		p.untracked++
		out.Drop(p.c, "overflow", 1)
		return
	}
	if p.fifo.Len() == p.fifoCap {
		p.grow()
	}
	rq := p.fifo.Push()
	rq.start, rq.size, rq.db = p.msgStart[l7.ToServer], m.Size, -1
	rq.op = lookupOp(&m.Leaves[0])
	args := int32(m.Count - 1)
	if m.Kind == 'i' {
		args = int32(m.NLeaves - 1) // what was kept of the line: enough to know "none"
	}
	switch opName(rq.op) {
	case "SELECT":
		rq.kind = kindSelect
		if m.NLeaves > 1 && !m.Leaves[1].cut {
			if v, ok := smallInt(m.Leaves[1].bytes()); ok {
				rq.db = int16(v)
			}
		}
	case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE":
		rq.kind, rq.expect = kindSubscribe, max(args, 1)
	case "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE":
		rq.kind, rq.expect = kindUnsubscribe, max(args, 1)
	case "MONITOR":
		rq.kind = kindMonitor
	}
}

// grow doubles the FIFO up to maxPending, keeping its order; deep
// pipelines are rare, so a connection starts small.
func (p *parser) grow() {
	n := min(2*p.fifoCap, maxPending)
	if n <= p.fifoCap {
		return
	}
	f := l7.NewFIFO[request](n)
	for p.fifo.Len() > 0 {
		*f.Push() = *p.fifo.Front()
		p.fifo.Pop()
	}
	p.fifo, p.fifoCap = f, n
}

var (
	kindMessage = []string{"message", "pmessage", "smessage"}
	kindConfirm = []string{"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe"}
)

func oneOf(b []byte, set []string) bool {
	for _, s := range set {
		if string(b) == s {
			return true
		}
	}
	return false
}

func (p *parser) reply(m *message, end uint64, out l7.Sink) {
	push := m.Kind == '>'
	if push || (p.subscribed && m.Kind == '*') {
		if m.NLeaves > 0 {
			k := m.Leaves[0].bytes()
			switch {
			case oneOf(k, kindMessage):
				p.pubsubMessage(end, out)
				return
			case oneOf(k, kindConfirm):
				p.confirm(m, end, out)
				return
			}
		}
		if push {
			return // client-side caching invalidations and the like: not replies
		}
	}
	if m.Kind == '*' && m.NLeaves > 0 && oneOf(m.Leaves[0].bytes(), kindConfirm) {
		if rq := p.fifo.Front(); rq != nil && (rq.kind == kindSubscribe || rq.kind == kindUnsubscribe) {
			p.confirm(m, end, out)
			return
		}
	}
	if p.monitoring && m.Kind == '+' && m.NLeaves > 0 {
		if l := m.Leaves[0].bytes(); len(l) > 0 && l[0] >= '0' && l[0] <= '9' {
			return // a MONITOR line
		}
	}
	rq := p.fifo.Front()
	if rq == nil {
		switch {
		case p.untracked > 0:
			p.untracked--
		case p.lost[l7.ToServer]:
			out.Drop(p.c, p.why, 1) // the reply of a command whose bytes were lost
		default:
			out.Drop(p.c, "unpaired", 1)
		}
		return
	}
	errCode, errAttr := replyError(m)
	switch rq.kind {
	case kindSelect:
		if errCode == "" && rq.db >= 0 {
			p.db = int(rq.db)
		}
	case kindMonitor:
		if errCode == "" {
			p.monitoring = true
		}
	}
	p.emit(rq, end, m.Size, errCode, errAttr, out)
	p.fifo.Pop()
}

// confirm takes a (un)subscribe confirmation: the command it answers is
// done at its last one.
func (p *parser) confirm(m *message, end uint64, out l7.Sink) {
	if m.NLeaves > 2 && m.Leaves[2].kind == ':' {
		v, ok := smallInt(m.Leaves[2].bytes())
		p.subscribed = !ok || v > 0
	}
	rq := p.fifo.Front()
	if rq == nil || (rq.kind != kindSubscribe && rq.kind != kindUnsubscribe) {
		return // a further confirmation of an UNSUBSCRIBE without channels
	}
	rq.resp += m.Size
	rq.expect--
	if rq.expect > 0 {
		return
	}
	p.emit(rq, end, rq.resp, "", attribute.KeyValue{}, out)
	p.fifo.Pop()
}

func (p *parser) pubsubMessage(end uint64, out l7.Sink) {
	x := &p.x
	x.Reset()
	x.Metric, x.Start, x.End = MetricPubSub, end, end
	x.RequestSize, x.ResponseSize, x.Messages = -1, -1, 1
	x.SpanName = "message"
	x.Add(systemAttr)
	out.Exchange(p.c, x)
}

func (p *parser) emit(rq *request, end uint64, respSize int64, errCode string, errAttr attribute.KeyValue, out l7.Sink) {
	x := &p.x
	x.Reset()
	x.Metric, x.Start, x.End = MetricDuration, rq.start, end
	x.RequestSize, x.ResponseSize = rq.size, respSize
	x.SpanName = opName(rq.op)
	x.Add(systemAttr)
	x.Add(opAttrs[rq.op])
	if p.db >= 0 && p.db <= maxDB {
		x.Add(nsAttrs[p.db])
	}
	if errCode != "" {
		x.Add(errAttr)
		x.Error, x.StatusError = errCode, true
	}
	out.Exchange(p.c, x)
}

// replyError returns the error prefix of an error reply, bounded to the
// known ones, and its attribute.
func replyError(m *message) (string, attribute.KeyValue) {
	if (m.Kind != '-' && m.Kind != '!') || m.NLeaves == 0 {
		return "", attribute.KeyValue{}
	}
	b := m.Leaves[0].bytes()
	for i, c := range b {
		if c == ' ' {
			b = b[:i]
			break
		}
	}
	if a, ok := errAttrs[string(b)]; ok {
		return a.Value.AsString(), a
	}
	return OtherOperation, otherErr
}

func lookupOp(l *leaf) uint16 {
	if l.cut || l.n == 0 {
		return otherOp
	}
	var up [leafMax]byte
	b := l.bytes()
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		up[i] = c
	}
	if i, ok := opIndex[string(up[:len(b)])]; ok {
		return i
	}
	return otherOp
}

func opName(op uint16) string { return opAttrs[op].Value.AsString() }

func smallInt(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 6 {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, v <= maxDB
}

// lose gives up dir's place after its bytes were lost or could not be
// read. Commands already parsed keep their place while only commands are
// lost; when replies are lost, the commands waiting are given up at the turn.
func (p *parser) lose(dir l7.Dir, reason string, out l7.Sink) {
	if !p.lost[l7.ToServer] && !p.lost[l7.ToClient] {
		p.why = reason
		p.sawReply = dir == l7.ToClient
	}
	p.lost[dir] = true
	p.scan[dir].reset()
}

// turn is the client's next turn after a loss: every reply due has come, so
// commands still waiting lost theirs.
func (p *parser) turn(out l7.Sink) {
	if p.lost[l7.ToClient] {
		if n := p.fifo.Len(); n > 0 {
			out.Drop(p.c, p.why, n)
		}
		p.fifo.Clear()
		p.untracked = 0
		p.scan[l7.ToClient].reset()
		p.lost[l7.ToClient] = false
	}
	p.scan[l7.ToServer].reset()
	p.sawReply = false
}

// Lost implements l7.Parser.
func (p *parser) Lost(dir l7.Dir, out l7.Sink) { p.lose(dir, "lost", out) }

// Close implements l7.Parser.
func (p *parser) Close(_ uint64, out l7.Sink) {
	if n := p.fifo.Len(); n > 0 {
		out.Drop(p.c, "incomplete", n)
	}
	p.fifo.Clear()
}

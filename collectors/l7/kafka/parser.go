// Package kafka is the Kafka protocol of the L7 layer: requests paired with
// their responses by correlation id, every API named, and for Produce and
// Fetch the topics, partitions and message counts (records counted from the
// record batch headers), across the API versions clients use, flexible
// (compact and tagged-field) versions and topic ids included. Record keys
// and values never leave the parser; topic names are capped per process.
package kafka

import (
	"encoding/binary"
	"strconv"
	"strings"
	"unicode"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/attribute"

	"github.com/otelbee/otelbee/collectors/l7"
)

// Name is the protocol's name.
const Name = "kafka"

// Metric indexes.
const (
	MetricDuration = iota // messaging.client.operation.duration
	MetricSent            // messaging.client.sent.messages
	MetricConsumed        // messaging.client.consumed.messages
	MetricOverflow        // otelbee.kafka.destination.overflow
)

const (
	apiProduce      = 0
	apiFetch        = 1
	apiMetadata     = 3
	apiOffsetCommit = 8
	apiFindCoord    = 10
	apiJoinGroup    = 11
	apiHeartbeat    = 12
	apiLeaveGroup   = 13
	apiSyncGroup    = 14
	apiVersions     = 18

	maxPending = 1024
	// maxParts is how many topic-partitions of one Produce are kept for
	// its sent-message counts; more are counted as overflow.
	maxParts   = 32
	maxPartIDs = 1024
	// Other is the value of a bounded attribute past its bound.
	Other = "_OTHER"
)

// DurationBuckets are the messaging conventions' advised bounds.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

var (
	systemAttr = attribute.String("messaging.system", "kafka")
	// flexFrom is the first flexible version of each API (kmsg's table):
	// from it on, headers carry tagged fields and strings are compact.
	flexFrom [kmsg.MaxKey + 1]int16
	opAttrs  [kmsg.MaxKey + 1]attribute.KeyValue
	opNames  [kmsg.MaxKey + 1]string
	otherOp  = attribute.String("messaging.operation.name", Other)
	typeAttr = map[int16]attribute.KeyValue{
		apiProduce:      attribute.String("messaging.operation.type", "send"),
		apiFetch:        attribute.String("messaging.operation.type", "receive"),
		apiOffsetCommit: attribute.String("messaging.operation.type", "settle"),
	}
	partAttrs [maxPartIDs]attribute.KeyValue
	otherPart = attribute.String("messaging.destination.partition.id", Other)
	errNames  = map[int16]string{}
)

func init() {
	for k := int16(0); k <= kmsg.MaxKey; k++ {
		flexFrom[k] = -1
		r := kmsg.RequestForKey(k)
		if r == nil {
			continue
		}
		for v := int16(0); v <= r.MaxVersion(); v++ {
			r.SetVersion(v)
			if r.IsFlexible() {
				flexFrom[k] = v
				break
			}
		}
		name := snake(kmsg.NameForKey(k))
		switch k {
		case apiProduce:
			name = "send"
		case apiFetch:
			name = "poll"
		case apiOffsetCommit:
			name = "commit"
		}
		opNames[k] = name
		opAttrs[k] = attribute.String("messaging.operation.name", name)
	}
	for i := range partAttrs {
		partAttrs[i] = attribute.String("messaging.destination.partition.id", strconv.Itoa(i))
	}
	for code := int16(-1); code < 200; code++ {
		if e := kerr.ErrorForCode(code); e != nil && code != 0 {
			if ke, ok := e.(*kerr.Error); ok {
				errNames[code] = ke.Message
			}
		}
	}
}

// snake turns an API name (OffsetCommit) into offset_commit.
func snake(s string) string {
	var b strings.Builder
	prevLower := false
	for _, r := range s {
		if unicode.IsUpper(r) {
			if prevLower {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
			prevLower = false
		} else {
			prevLower = true
		}
		b.WriteRune(r)
	}
	return b.String()
}

func flexible(api, version int16) bool {
	return api >= 0 && int(api) < len(flexFrom) && flexFrom[api] >= 0 && version >= flexFrom[api]
}

func errorName(code int16) string {
	if n, ok := errNames[code]; ok {
		return n
	}
	return Other
}

// Protocol is Kafka for the L7 layer. Its topic tables are shared by every
// connection (a topic id learned from one connection's Metadata names the
// topic of another's Fetch).
type Protocol struct {
	topics       *topics
	captureBytes int
}

// Options bound what the protocol keeps.
type Options struct {
	// MaxTopics caps the topics named per process; the rest are _OTHER,
	// counted on otelbee.kafka.destination.overflow. Default 100.
	MaxTopics int
	// CaptureBytes is how much of each read and write the kernel keeps
	// for Kafka connections (64-4096). Default 4096.
	CaptureBytes int
}

// New returns the Kafka protocol.
func New(o Options) *Protocol {
	if o.MaxTopics <= 0 {
		o.MaxTopics = 100
	}
	if o.CaptureBytes <= 0 {
		o.CaptureBytes = 4096
	}
	return &Protocol{topics: newTopics(o.MaxTopics), captureBytes: o.CaptureBytes}
}

// Name implements l7.Protocol.
func (*Protocol) Name() string { return Name }

// Metrics implements l7.Protocol.
func (*Protocol) Metrics(l7.Role) []l7.MetricSpec {
	return []l7.MetricSpec{
		{Name: "messaging.client.operation.duration", Unit: "s", Description: "Duration of messaging operation initiated by a producer or consumer client.",
			Kind: l7.Duration, Buckets: DurationBuckets, Index: MetricDuration},
		{Name: "messaging.client.sent.messages", Unit: "{message}", Description: "Number of messages producer attempted to send to the broker.",
			Kind: l7.MessageCount, Index: MetricSent},
		{Name: "messaging.client.consumed.messages", Unit: "{message}", Description: "Number of messages that were delivered to the application.",
			Kind: l7.MessageCount, Index: MetricConsumed},
		{Name: "otelbee.kafka.destination.overflow", Unit: "{exchange}", Description: "Kafka exchanges whose topic was recorded as _OTHER: past the topics kept per process.",
			Kind: l7.MessageCount, Index: MetricOverflow},
	}
}

// Capture implements l7.CapturePolicy: an exchange is recorded once, from
// the client's side when the client is on this host (the kernel gives up
// the server side of such a connection), and each call's first
// Options.CaptureBytes are kept (the record batch headers of Produce and
// Fetch lie past the shared 1 KiB prefix). Clients write requests while
// reading earlier responses on another thread (Multiplexed), the responses
// paired by correlation id.
func (p *Protocol) Capture() l7.Capture {
	return l7.Capture{ClientSide: true, Bytes: p.captureBytes, Multiplexed: true}
}

// NewParser implements l7.Protocol.
func (p *Protocol) NewParser(c *l7.Conn) l7.Parser {
	ps := &parser{c: c, t: p.topics, pending: l7.NewByID[int32, request](maxPending)}
	if c != nil && c.Midstream {
		ps.lost[l7.ToServer], ps.lost[l7.ToClient] = true, true
	}
	return ps
}

type part struct {
	topic    *topicEntry // nil: a topic id no Metadata named
	over     bool
	id       int32
	messages int64
}

type request struct {
	api, version int16
	start        uint64
	size         int64
	// parts are a Produce's topic-partitions and message counts.
	parts  [maxParts]part
	nparts int
	// incomplete: a Produce's batch headers were not all kept.
	incomplete bool
	// topic is the single topic of the request, when it has one.
	topic     *topicEntry
	topicOver bool
	hasTopic  bool
	multi     bool
}

type parser struct {
	c       *l7.Conn
	t       *topics
	fr      [2]frame
	lost    [2]bool
	pending *l7.ByID[int32, request]
	x       l7.Exchange
	// lossy: a response was lost since the oldest request waiting; as a
	// broker answers a connection's requests in order, a response
	// gives up the requests sent before it.
	lossy bool
	// reqLost: requests were lost, so a response may have none.
	reqLost bool
}

// Feed implements l7.Parser.
func (p *parser) Feed(r *l7.Record, out l7.Sink) {
	if p.lost[r.Dir] {
		if !p.resumes(r) {
			return
		}
		p.lost[r.Dir] = false
	}
	data, tail := r.Data, r.Tail
	gap := int64(r.Total) - int64(len(data)) - int64(len(tail))
	if gap < 0 {
		if int64(len(tail)) > -gap {
			tail = tail[-gap:]
		} else {
			tail = nil
		}
		gap = 0
	}
	if !p.bytes(r, data, out) {
		return
	}
	if gap > 0 {
		f := &p.fr[r.Dir]
		if !f.inFrame || f.sizeN < 4 || f.got+gap > f.length {
			p.lose(r.Dir, out)
			return
		}
		f.got += gap
		if f.got == f.length {
			p.frameDone(r, out)
		}
	}
	p.bytes(r, tail, out)
}

// resumes reports whether a record of a lost direction starts a frame: a
// plausible length and, for a request, a known API; for a response, a
// correlation id waiting.
func (p *parser) resumes(r *l7.Record) bool {
	b := r.Data
	if len(b) < 8 {
		return false
	}
	n := int64(binary.BigEndian.Uint32(b))
	if n < 4 || n > maxFrame {
		return false
	}
	if r.Dir == l7.ToServer {
		api, v := int16(binary.BigEndian.Uint16(b[4:])), int16(binary.BigEndian.Uint16(b[6:]))
		return api >= 0 && api <= kmsg.MaxKey && opNames[api] != "" && v >= 0 && v < 64
	}
	return p.pending.Get(int32(binary.BigEndian.Uint32(b[4:]))) != nil
}

func (p *parser) lose(dir l7.Dir, out l7.Sink) {
	p.lost[dir] = true
	p.lossy = p.lossy || dir == l7.ToClient
	p.reqLost = p.reqLost || dir == l7.ToServer
	p.fr[dir].reset()
}

func (p *parser) bytes(r *l7.Record, b []byte, out l7.Sink) bool {
	f := &p.fr[r.Dir]
	for len(b) > 0 {
		if !f.inFrame {
			f.inFrame, f.start = true, r.Start
		}
		if f.sizeN < 4 {
			k := copy(f.size[f.sizeN:], b)
			f.sizeN += k
			b = b[k:]
			if f.sizeN < 4 {
				return true
			}
			f.length = int64(binary.BigEndian.Uint32(f.size[:]))
			if f.length < 4 || f.length > maxFrame {
				out.Drop(p.c, "malformed", 1)
				p.lose(r.Dir, out)
				return false
			}
			continue
		}
		k := min(int64(len(b)), f.length-f.got)
		f.keep(b[:k])
		f.got += k
		b = b[k:]
		if f.got == f.length {
			p.frameDone(r, out)
		}
	}
	return true
}

func (p *parser) frameDone(r *l7.Record, out l7.Sink) {
	f := &p.fr[r.Dir]
	if r.Dir == l7.ToServer {
		p.request(f, r, out)
	} else {
		p.response(f, r, out)
	}
	f.reset()
}

func (p *parser) request(f *frame, r *l7.Record, out l7.Sink) {
	c := cursor{f: f}
	api, version, corr := c.i16(), c.i16(), c.i32()
	if !c.ok() || api < 0 || api > kmsg.MaxKey || opNames[api] == "" {
		out.Drop(p.c, "malformed", 1)
		return
	}
	c.skipStr(false) // client id: a nullable int16 string in every header version
	flex := flexible(api, version)
	c.tags(flex)
	rq, replaced := p.pending.Add(corr)
	if replaced {
		out.Drop(p.c, "unpaired", 1)
	}
	if rq == nil {
		out.Drop(p.c, "overflow", 1)
		return
	}
	rq.api, rq.version, rq.start, rq.size = api, version, f.start, f.length+4
	if api == apiProduce {
		if acks := p.produce(&c, rq, flex); acks == 0 && c.ok() {
			// acks=0: the broker sends no response.
			p.sent(rq, r.End, 0, out)
			p.pending.Remove(corr)
		}
	}
}

// produce reads a Produce request's topics, partitions and record counts;
// it returns acks (-2 when unread).
func (p *parser) produce(c *cursor, rq *request, flex bool) int16 {
	v := rq.version
	if v >= 3 {
		c.skipStr(flex) // transactional id
	}
	acks := c.i16()
	c.skip(4) // timeout
	if !c.ok() {
		rq.incomplete = true
		return -2
	}
	nt := c.array(flex)
	for i := 0; i < nt && c.ok(); i++ {
		topic, over, ok := p.topic(c, v >= 13, flex)
		np := c.array(flex)
		for j := 0; j < np && c.ok(); j++ {
			id := c.i32()
			n := c.length(flex, true)
			var count int64
			complete := true
			if n > 0 {
				count, complete = c.batches(n)
			}
			if !complete {
				rq.incomplete = true
			}
			c.tags(flex)
			if rq.nparts < maxParts && c.ok() {
				rq.parts[rq.nparts] = part{topic: topic, over: over, id: id, messages: count}
				rq.nparts++
			} else if c.ok() {
				rq.incomplete = true
			}
			p.noteTopic(rq, topic, over, ok)
		}
		c.tags(flex)
	}
	if !c.ok() {
		rq.incomplete = true
	}
	return acks
}

// topic reads a topic name (or, from the versions that use them, a topic
// id) and returns its bounded attribute.
func (p *parser) topic(c *cursor, byID, flex bool) (*topicEntry, bool, bool) {
	pid := uint32(0)
	if p.c != nil {
		pid = p.c.PID
	}
	if byID {
		b := c.take(16)
		if b == nil {
			return nil, false, false
		}
		var id [16]byte
		copy(id[:], b)
		return p.t.byID(pid, id)
	}
	b := c.str(flex)
	if b == nil {
		return nil, false, false
	}
	a, over := p.t.name(pid, b)
	return a, over, true
}

func (p *parser) noteTopic(rq *request, topic *topicEntry, over, ok bool) {
	if !ok {
		rq.multi = true
		return
	}
	if !rq.hasTopic {
		rq.topic, rq.topicOver, rq.hasTopic = topic, over, true
	} else if rq.topic != topic {
		rq.multi = true
	}
}

func (p *parser) response(f *frame, r *l7.Record, out l7.Sink) {
	c := cursor{f: f}
	corr := c.i32()
	rq := p.pending.Get(corr)
	if !c.ok() || rq == nil {
		if p.reqLost {
			out.Drop(p.c, "incomplete", 1) // its request was in what the capture did not keep
		} else {
			out.Drop(p.c, "unpaired", 1)
		}
		return
	}
	if p.lossy {
		p.giveUpBefore(corr, out)
	}
	if rq.api != apiVersions {
		c.tags(flexible(rq.api, rq.version))
	}
	flex := flexible(rq.api, rq.version)
	var code int16
	switch rq.api {
	case apiProduce:
		code = p.produceResponse(&c, rq, flex)
	case apiFetch:
		code = p.fetch(&c, rq, r.End, flex, out)
	case apiMetadata:
		p.metadata(&c, rq.version, flex)
	case apiJoinGroup:
		code = p.groupError(&c, rq.version >= 2)
	case apiSyncGroup, apiHeartbeat, apiLeaveGroup:
		code = p.groupError(&c, rq.version >= 1)
	case apiFindCoord:
		if rq.version < 4 {
			code = p.groupError(&c, rq.version >= 1)
		}
	case apiOffsetCommit:
		code = p.commitResponse(&c, rq, flex)
	}
	p.emit(rq, r.End, f.length+4, code, out)
	if rq.api == apiProduce {
		p.sent(rq, r.End, code, out)
	}
	p.pending.Remove(corr)
}

func (p *parser) groupError(c *cursor, throttle bool) int16 {
	if throttle {
		c.skip(4)
	}
	code := c.i16()
	if !c.ok() {
		return 0
	}
	return code
}

// produceResponse returns the first partition error.
func (p *parser) produceResponse(c *cursor, rq *request, flex bool) int16 {
	v := rq.version
	var first int16
	nt := c.array(flex)
	for i := 0; i < nt && c.ok(); i++ {
		if v >= 13 {
			c.skip(16)
		} else {
			c.skipStr(flex)
		}
		np := c.array(flex)
		for j := 0; j < np && c.ok(); j++ {
			c.skip(4)
			if code := c.i16(); code != 0 && first == 0 && c.ok() {
				first = code
			}
			c.skip(8)
			if v >= 2 {
				c.skip(8)
			}
			if v >= 5 {
				c.skip(8)
			}
			if v >= 8 {
				ne := c.array(flex)
				for k := 0; k < ne && c.ok(); k++ {
					c.skip(4)
					c.skipStr(flex)
					c.tags(flex)
				}
				c.skipStr(flex)
			}
			c.tags(flex)
		}
		c.tags(flex)
	}
	return first
}

func (p *parser) commitResponse(c *cursor, rq *request, flex bool) int16 {
	if rq.version >= 3 {
		c.skip(4)
	}
	var first int16
	nt := c.array(flex)
	for i := 0; i < nt && c.ok(); i++ {
		c.skipStr(flex)
		np := c.array(flex)
		for j := 0; j < np && c.ok(); j++ {
			c.skip(4)
			if code := c.i16(); code != 0 && first == 0 && c.ok() {
				first = code
			}
			c.tags(flex)
		}
		c.tags(flex)
	}
	return first
}

// fetch counts a Fetch response's records per topic-partition and returns
// the first error.
func (p *parser) fetch(c *cursor, rq *request, end uint64, flex bool, out l7.Sink) int16 {
	v := rq.version
	var first int16
	if v >= 1 {
		c.skip(4)
	}
	if v >= 7 {
		first = c.i16()
		c.skip(4)
	}
	incomplete := 0
	nt := c.array(flex)
	for i := 0; i < nt && c.ok(); i++ {
		topic, over, ok := p.topic(c, v >= 13, flex)
		np := c.array(flex)
		for j := 0; j < np && c.ok(); j++ {
			id := c.i32()
			if code := c.i16(); code != 0 && first == 0 && c.ok() {
				first = code
			}
			c.skip(8)
			if v >= 4 {
				c.skip(8)
			}
			if v >= 5 {
				c.skip(8)
			}
			if v >= 4 {
				na := c.length(flex, true)
				for k := int64(0); k < na && c.ok(); k++ {
					c.skip(16)
					c.tags(flex)
				}
			}
			if v >= 11 {
				c.skip(4)
			}
			n := c.length(flex, true)
			var count int64
			complete := true
			if n > 0 {
				count, complete = c.batches(n)
			}
			c.tags(flex)
			if !c.ok() {
				break
			}
			if !complete {
				incomplete++
			}
			p.noteTopic(rq, topic, over, ok)
			if count > 0 {
				p.messages(MetricConsumed, rq, end, topic, over, ok, id, count, 0, out)
			}
		}
		c.tags(flex)
	}
	if !c.ok() {
		incomplete++
	}
	if incomplete > 0 {
		// Partitions whose batch headers (or topic) the capture did not
		// keep: their messages are not counted.
		out.Drop(p.c, "incomplete", incomplete)
	}
	return first
}

// metadata learns topic ids (from version 10 on) for the Fetch and Produce
// versions that name topics by id.
func (p *parser) metadata(c *cursor, v int16, flex bool) {
	if v < 10 {
		return
	}
	c.skip(4)
	nb := c.array(flex)
	for i := 0; i < nb && c.ok(); i++ {
		c.skip(4)
		c.skipStr(flex)
		c.skip(4)
		c.skipStr(flex)
		c.tags(flex)
	}
	c.skipStr(flex)
	c.skip(4)
	nt := c.array(flex)
	for i := 0; i < nt && c.ok(); i++ {
		c.skip(2)
		name := c.str(flex)
		id := c.take(16)
		if name != nil && id != nil {
			var k [16]byte
			copy(k[:], id)
			p.t.learn(k, name)
		}
		c.skip(1)
		np := c.array(flex)
		for j := 0; j < np && c.ok(); j++ {
			c.skip(2 + 4 + 4)
			if v >= 7 {
				c.skip(4)
			}
			c.skip(4 * int64(c.array(flex)))
			c.skip(4 * int64(c.array(flex)))
			if v >= 5 {
				c.skip(4 * int64(c.array(flex)))
			}
			c.tags(flex)
		}
		if v >= 8 {
			c.skip(4)
		}
		c.tags(flex)
	}
}

func (p *parser) base(x *l7.Exchange, rq *request) {
	x.Add(systemAttr)
	if opNames[rq.api] != "" {
		x.Add(opAttrs[rq.api])
	} else {
		x.Add(otherOp)
	}
	if a, ok := typeAttr[rq.api]; ok {
		x.Add(a)
	}
}

func (p *parser) emit(rq *request, end uint64, respSize int64, code int16, out l7.Sink) {
	x := &p.x
	x.Reset()
	x.Metric, x.Start, x.End = MetricDuration, rq.start, end
	x.RequestSize, x.ResponseSize = rq.size, respSize
	p.base(x, rq)
	x.SpanName = opNames[rq.api]
	if rq.hasTopic && !rq.multi {
		x.Add(rq.topic.attr)
		switch rq.api {
		case apiProduce:
			x.SpanName = rq.topic.send
		case apiFetch:
			x.SpanName = rq.topic.poll
		}
		if rq.topicOver {
			p.overflow(rq, end, out)
		}
	}
	if code != 0 {
		x.Error, x.StatusError = errorName(code), true
	}
	out.Exchange(p.c, x)
}

func (p *parser) overflow(rq *request, end uint64, out l7.Sink) {
	x := &p.x
	x.Reset()
	x.Metric, x.Start, x.End, x.Messages = MetricOverflow, end, end, 1
	x.RequestSize, x.ResponseSize = -1, -1
	x.Add(systemAttr)
	out.Exchange(p.c, x)
}

// sent records a Produce's messages per topic-partition.
func (p *parser) sent(rq *request, end uint64, code int16, out l7.Sink) {
	for i := range rq.parts[:rq.nparts] {
		pt := &rq.parts[i]
		if pt.messages > 0 {
			p.messages(MetricSent, rq, end, pt.topic, pt.over, pt.topic != nil, pt.id, pt.messages, code, out)
		}
	}
	if rq.incomplete {
		out.Drop(p.c, "incomplete", 1)
	}
}

func (p *parser) messages(metric int, rq *request, end uint64, topic *topicEntry, over, ok bool, id int32, n int64, code int16, out l7.Sink) {
	x := &p.x
	x.Reset()
	x.Metric, x.Start, x.End, x.Messages = metric, rq.start, end, n
	x.RequestSize, x.ResponseSize = -1, -1
	p.base(x, rq)
	if ok {
		x.Add(topic.attr)
	}
	if id >= 0 && id < maxPartIDs {
		x.Add(partAttrs[id])
	} else {
		x.Add(otherPart)
	}
	if code != 0 {
		x.Error = errorName(code)
	}
	out.Exchange(p.c, x)
	if over {
		p.overflow(rq, end, out)
	}
}

// giveUpBefore drops the requests sent before corr (ids grow per
// connection): their responses were in what was lost.
func (p *parser) giveUpBefore(corr int32, out l7.Sink) {
	var old []int32
	p.pending.Each(func(id int32, _ *request) {
		if id < corr {
			old = append(old, id)
		}
	})
	for _, id := range old {
		p.pending.Remove(id)
	}
	if len(old) > 0 {
		out.Drop(p.c, "lost", len(old))
	}
	p.lossy = false
}

// Lost implements l7.Parser: the direction resumes at a record that starts
// a frame; requests whose responses were lost are counted at Close.
func (p *parser) Lost(dir l7.Dir, out l7.Sink) { p.lose(dir, out) }

// Close implements l7.Parser.
func (p *parser) Close(_ uint64, out l7.Sink) {
	if n := p.pending.Len(); n > 0 {
		out.Drop(p.c, "incomplete", n)
	}
	p.pending.Clear()
}

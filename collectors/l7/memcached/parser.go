// Package memcached is the memcached text protocol for the L7 layer:
// retrieval (get, gets, gat, gats with any number of keys), storage (set,
// add, replace, append, prepend, cas), delete, incr, decr, touch, the meta
// commands and the rest, paired with their replies in order. A command sent
// with noreply (or quit) gets no reply: it is counted apart and never shifts
// the pairing. Keys and values never leave the parser; data blocks are
// skipped by their declared length, so a head-and-tail capture of a large
// value keeps the connection's place.
package memcached

import (
	"bytes"

	"go.opentelemetry.io/otel/attribute"

	"github.com/otelbee/otelbee/collectors/l7"
)

// Name is the protocol's name.
const Name = "memcached"

// Metric indexes.
const (
	MetricDuration = iota // db.client.operation.duration
	MetricNoReply         // otelbee.memcached.noreply.operations
)

const (
	// OtherOperation is db.operation.name for a command memcached does not
	// have.
	OtherOperation = "_OTHER"
	maxPending     = 1024
	// maxLine is what is kept of a line: a command with a 250-byte key and
	// its numbers. Longer lines (a get of many keys) are read past.
	maxLine = 512
	// maxLineLen bounds a line without its end (memcached's own limit is
	// 2048 for commands; a get of many keys can be longer).
	maxLineLen = 64 << 10
	maxData    = 1 << 31
)

// DurationBuckets are the database conventions' advised bounds.
var DurationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}

type kind uint8

const (
	kindSimple    kind = iota // one line
	kindRetrieval             // VALUE lines with data, then END
	kindStats                 // STAT lines, then END
	kindMetaData              // a line, with a data block after VA
	kindNoReply               // quit: nothing comes back
)

type command struct {
	name string
	kind kind
	// data is the position of the data block's length in the command
	// line (storage commands), 0 when there is none.
	data int
}

var commands = []command{
	{"get", kindRetrieval, 0}, {"gets", kindRetrieval, 0}, {"gat", kindRetrieval, 0}, {"gats", kindRetrieval, 0},
	{"set", kindSimple, 4}, {"add", kindSimple, 4}, {"replace", kindSimple, 4}, {"append", kindSimple, 4},
	{"prepend", kindSimple, 4}, {"cas", kindSimple, 4},
	{"delete", kindSimple, 0}, {"incr", kindSimple, 0}, {"decr", kindSimple, 0}, {"touch", kindSimple, 0},
	{"stats", kindStats, 0}, {"version", kindSimple, 0}, {"flush_all", kindSimple, 0}, {"verbosity", kindSimple, 0},
	{"quit", kindNoReply, 0}, {"cache_memlimit", kindSimple, 0}, {"shutdown", kindSimple, 0},
	{"mg", kindMetaData, 0}, {"ms", kindSimple, 2}, {"md", kindSimple, 0}, {"ma", kindMetaData, 0},
	{"mn", kindSimple, 0}, {"me", kindSimple, 0},
}

var (
	systemAttr = attribute.String("db.system.name", "memcached")
	opIndex    = map[string]uint8{}
	opAttrs    []attribute.KeyValue
	// statusAttrs are the replies worth a series of their own: misses,
	// refusals and errors (a success is the absence of one).
	statusAttrs = map[string]attribute.KeyValue{}
	errorWords  = map[string]bool{"ERROR": true, "CLIENT_ERROR": true, "SERVER_ERROR": true}
)

const otherOp = 0

func init() {
	opAttrs = append(opAttrs, attribute.String("db.operation.name", OtherOperation))
	commands = append([]command{{OtherOperation, kindSimple, 0}}, commands...)
	for i, c := range commands[1:] {
		opIndex[c.name] = uint8(i + 1)
		opAttrs = append(opAttrs, attribute.String("db.operation.name", c.name))
	}
	for _, w := range []string{"NOT_STORED", "EXISTS", "NOT_FOUND", "NS", "EX", "NF", "EN", "ERROR", "CLIENT_ERROR", "SERVER_ERROR"} {
		statusAttrs[w] = attribute.String("db.response.status_code", w)
	}
}

// Protocol is memcached for the L7 layer.
type Protocol struct{}

// New returns the memcached protocol.
func New() *Protocol { return &Protocol{} }

// Name implements l7.Protocol.
func (*Protocol) Name() string { return Name }

// Metrics implements l7.Protocol.
func (*Protocol) Metrics(l7.Role) []l7.MetricSpec {
	return []l7.MetricSpec{
		{Name: "db.client.operation.duration", Unit: "s", Description: "Duration of database client operations.",
			Kind: l7.Duration, Buckets: DurationBuckets, Index: MetricDuration},
		{Name: "otelbee.memcached.noreply.operations", Unit: "{operation}",
			Description: "Memcached commands sent with noreply (and quit): no reply, so no duration.",
			Kind:        l7.MessageCount, Index: MetricNoReply},
	}
}

// Capture implements l7.CapturePolicy: an operation is recorded once, from
// the client's side when the client is on this host (the kernel gives up
// the server side of such a connection).
func (*Protocol) Capture() l7.Capture { return l7.Capture{ClientSide: true} }

// NewParser implements l7.Protocol.
func (*Protocol) NewParser(c *l7.Conn) l7.Parser {
	p := &parser{c: c, fifo: l7.NewFIFO[request](8), fifoCap: 8}
	if c != nil && c.Midstream {
		p.lost[l7.ToServer], p.lost[l7.ToClient], p.sawReply = true, true, true
	}
	return p
}

type request struct {
	start uint64
	size  int64
	op    uint8
	// resp is the reply bytes so far (a retrieval's VALUE lines and
	// blocks).
	resp int64
}

// stream is one direction's place: a line being read, or a data block
// being skipped.
type stream struct {
	line    [maxLine]byte
	lineN   int
	lineLen int
	skip    int64
	// size is the bytes of the current command or reply so far; inMsg
	// whether one has begun.
	size  int64
	inMsg bool
	start uint64
}

func (s *stream) reset() { *s = stream{} }

type parser struct {
	c       *l7.Conn
	st      [2]stream
	fifo    *l7.FIFO[request]
	fifoCap int
	// pending: the command whose data block is being read (its line is
	// parsed; it is pushed once the block has passed, so a noreply one
	// never is).
	pending    request
	pendNo     bool
	inBlock    bool
	untracked  int
	x          l7.Exchange
	lost       [2]bool
	sawReply   bool
	why        string
	replyBlock bool // the data block being skipped belongs to a reply (VALUE, VA)
	replyEnd   bool // the reply is complete once its block has passed (VA)
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
			if len(r.Data) == 0 || r.Data[0] < 'a' || r.Data[0] > 'z' {
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
		s := &p.st[r.Dir]
		if s.skip < gap {
			p.lose(r.Dir, "incomplete", out)
			return
		}
		s.skip -= gap
		s.size += gap
		if s.skip == 0 {
			p.blockDone(r, out)
		}
	}
	p.bytes(r, tail, out)
}

func (p *parser) bytes(r *l7.Record, b []byte, out l7.Sink) bool {
	s := &p.st[r.Dir]
	for len(b) > 0 {
		if !s.inMsg {
			s.inMsg, s.start, s.size = true, r.Start, 0
		}
		if s.skip > 0 {
			k := min(int64(len(b)), s.skip)
			s.skip -= k
			s.size += k
			b = b[k:]
			if s.skip == 0 {
				p.blockDone(r, out)
			}
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.addLine(b)
			s.size += int64(len(b))
			if s.lineLen > maxLineLen {
				p.lose(r.Dir, "malformed", out)
				return false
			}
			return true
		}
		s.addLine(b[:i+1])
		s.size += int64(i + 1)
		b = b[i+1:]
		ln, cut := s.takeLine()
		var ok bool
		if r.Dir == l7.ToServer {
			ok = p.requestLine(s, ln, cut, out)
		} else {
			ok = p.replyLine(s, ln, cut, r.End, out)
		}
		if !ok {
			p.lose(r.Dir, "malformed", out)
			return false
		}
	}
	return true
}

func (s *stream) addLine(b []byte) {
	if s.lineN < len(s.line) {
		s.lineN += copy(s.line[s.lineN:], b)
	}
	s.lineLen += len(b)
}

// takeLine returns the line without its end, and whether it was cut.
func (s *stream) takeLine() ([]byte, bool) {
	ln, cut := s.line[:s.lineN], s.lineLen > s.lineN
	s.lineN, s.lineLen = 0, 0
	if !cut {
		ln = bytes.TrimSuffix(ln[:len(ln)-1], []byte{'\r'})
	}
	return ln, cut
}

// field returns the i-th space-separated word of ln.
func field(ln []byte, i int) []byte {
	for {
		for len(ln) > 0 && ln[0] == ' ' {
			ln = ln[1:]
		}
		if len(ln) == 0 {
			return nil
		}
		j := bytes.IndexByte(ln, ' ')
		if j < 0 {
			j = len(ln)
		}
		if i == 0 {
			return ln[:j]
		}
		i--
		ln = ln[j:]
	}
}

func lastField(ln []byte) []byte {
	ln = bytes.TrimRight(ln, " ")
	return ln[bytes.LastIndexByte(ln, ' ')+1:]
}

func number(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, v <= maxData
}

func (p *parser) requestLine(s *stream, ln []byte, cut bool, out l7.Sink) bool {
	if len(ln) == 0 {
		s.inMsg = false
		return true // memcached answers an empty line with ERROR; so do we, as _OTHER
	}
	op := otherOp
	var w [16]byte
	if name := field(ln, 0); len(name) <= len(w) {
		n := copy(w[:], name)
		for i := range n {
			if c := w[i]; c >= 'A' && c <= 'Z' {
				w[i] = c + 'a' - 'A'
			}
		}
		if i, ok := opIndex[string(w[:n])]; ok {
			op = int(i)
		}
	}
	c := &commands[op]
	rq := request{start: s.start, op: uint8(op)}
	noreply := !cut && string(lastField(ln)) == "noreply"
	if c.data > 0 {
		if cut {
			return false
		}
		n, ok := number(field(ln, c.data))
		if !ok {
			return false
		}
		p.pending, p.pendNo, p.inBlock = rq, noreply, true
		s.skip = n + 2
		return true
	}
	rq.size = s.size
	s.inMsg = false
	p.push(rq, noreply || c.kind == kindNoReply, out)
	return true
}

// blockDone ends a data block: a storage command is complete, or a reply's
// VALUE block has passed.
func (p *parser) blockDone(r *l7.Record, out l7.Sink) {
	s := &p.st[r.Dir]
	if r.Dir == l7.ToServer {
		if p.inBlock {
			p.inBlock = false
			p.pending.size = s.size
			s.inMsg = false
			p.push(p.pending, p.pendNo, out)
		}
		return
	}
	if p.replyEnd {
		p.replyEnd = false
		p.complete(s, r.End, nil, out)
	}
}

func (p *parser) push(rq request, noreply bool, out l7.Sink) {
	if noreply {
		x := &p.x
		x.Reset()
		x.Metric, x.Start, x.End, x.Messages = MetricNoReply, rq.start, rq.start, 1
		x.RequestSize, x.ResponseSize = rq.size, -1
		x.SpanName = commands[rq.op].name
		x.Add(systemAttr)
		x.Add(opAttrs[rq.op])
		out.Exchange(p.c, x)
		return
	}
	if p.untracked > 0 || p.fifo.Len() == maxPending {
		p.untracked++
		out.Drop(p.c, "overflow", 1)
		return
	}
	if p.fifo.Len() == p.fifoCap {
		n := min(2*p.fifoCap, maxPending)
		f := l7.NewFIFO[request](n)
		for p.fifo.Len() > 0 {
			*f.Push() = *p.fifo.Front()
			p.fifo.Pop()
		}
		p.fifo, p.fifoCap = f, n
	}
	*p.fifo.Push() = rq
}

func (p *parser) replyLine(s *stream, ln []byte, cut bool, end uint64, out l7.Sink) bool {
	word := field(ln, 0)
	k := kindSimple
	if rq := p.fifo.Front(); rq != nil {
		k = commands[rq.op].kind
	}
	if errorWords[string(word)] {
		p.complete(s, end, word, out)
		return true
	}
	switch {
	case string(word) == "VALUE" || (string(word) == "VA" && k == kindMetaData):
		// VALUE <key> <flags> <bytes> [<cas>] / VA <size> <flags>*
		i := 3
		if string(word) == "VA" {
			i = 1
		}
		if cut && string(word) == "VALUE" {
			return false
		}
		n, ok := number(field(ln, i))
		if !ok {
			return false
		}
		s.skip = n + 2
		p.replyEnd = string(word) == "VA"
		return true
	case k == kindRetrieval || k == kindStats:
		if string(word) != "END" && (k != kindStats || string(word) != "STAT") {
			return false
		}
		if string(word) == "END" {
			p.complete(s, end, nil, out)
		}
		return true
	}
	p.complete(s, end, word, out)
	return true
}

// complete pairs the reply that just ended, whose status word is status,
// with the oldest command.
func (p *parser) complete(s *stream, end uint64, status []byte, out l7.Sink) {
	size := s.size
	s.inMsg = false
	rq := p.fifo.Front()
	if rq == nil {
		switch {
		case p.untracked > 0:
			p.untracked--
		case p.lost[l7.ToServer]:
			out.Drop(p.c, p.why, 1)
		default:
			out.Drop(p.c, "unpaired", 1)
		}
		return
	}
	x := &p.x
	x.Reset()
	x.Metric, x.Start, x.End = MetricDuration, rq.start, end
	x.RequestSize, x.ResponseSize = rq.size, size
	x.SpanName = commands[rq.op].name
	x.Add(systemAttr)
	x.Add(opAttrs[rq.op])
	if a, ok := statusAttrs[string(status)]; ok {
		x.Add(a)
		if errorWords[string(status)] {
			x.Error, x.StatusError = a.Value.AsString(), true
		}
	}
	out.Exchange(p.c, x)
	p.fifo.Pop()
}

func (p *parser) lose(dir l7.Dir, reason string, out l7.Sink) {
	if !p.lost[l7.ToServer] && !p.lost[l7.ToClient] {
		p.why = reason
		p.sawReply = dir == l7.ToClient
	}
	p.lost[dir] = true
	p.st[dir].reset()
	if dir == l7.ToServer {
		p.inBlock = false
	} else {
		p.replyEnd = false
	}
}

func (p *parser) turn(out l7.Sink) {
	if p.lost[l7.ToClient] {
		if n := p.fifo.Len(); n > 0 {
			out.Drop(p.c, p.why, n)
		}
		p.fifo.Clear()
		p.untracked = 0
		p.st[l7.ToClient].reset()
		p.replyEnd = false
		p.lost[l7.ToClient] = false
	}
	p.st[l7.ToServer].reset()
	p.inBlock = false
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

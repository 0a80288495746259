// Package mysql is the MySQL and MariaDB client/server protocol as an L7
// protocol: the server's greeting (which names the product), the
// handshake response's database, COM_QUERY, COM_STMT_PREPARE and
// COM_STMT_EXECUTE (statement ids mapped to their text), COM_INIT_DB, ERR
// packets with their error codes, and result sets followed to their last
// EOF or OK packet (several, when the server says more results follow). A
// connection that turns to TLS (an SSL request in the handshake) or to
// compression is left alone here.
//
// One operation is one COM_QUERY or COM_STMT_EXECUTE, from the command to
// the end of its last result, or a COM_STMT_PREPARE that failed (the
// statement never ran). A successful prepare is no operation of its own.
package mysql

import (
	"encoding/binary"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"

	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/dbwire"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
)

// Name is the protocol's name.
const Name = "mysql"

// Options configure the protocol. Zero values take the defaults.
type Options struct {
	// QueryText puts db.query.text, literals replaced, on spans.
	QueryText bool
	// MaxStatements caps the prepared statements remembered per
	// connection.
	MaxStatements int
	// MaxSummaries and MaxCollections cap distinct db.query.summary and
	// db.collection.name values; past them the value is _OTHER, counted.
	MaxSummaries, MaxCollections int
	// MaxPending caps commands in flight per connection.
	MaxPending int
}

// Protocol is the MySQL protocol; safe for concurrent use by its parsers.
type Protocol struct {
	opt Options
	sum *sqlsummary.Summarizer

	mu    sync.Mutex
	ns    map[string]string
	codes map[uint16]string
}

// New returns the protocol.
func New(o Options) *Protocol {
	if o.MaxStatements <= 0 {
		o.MaxStatements = 256
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 64
	}
	return &Protocol{
		opt: o,
		sum: sqlsummary.New(sqlsummary.Options{Dialect: sqlsummary.MySQL, MaxSummaries: o.MaxSummaries,
			MaxCollections: o.MaxCollections, QueryText: o.QueryText}),
		ns:    map[string]string{},
		codes: map[uint16]string{},
	}
}

func (p *Protocol) Name() string { return Name }

// Metrics: db.client.operation.duration, and the counters of what
// could not be named (dbwire.Metrics).
func (p *Protocol) Metrics(l7.Role) []l7.MetricSpec { return dbwire.Metrics() }

func (p *Protocol) namespace(b []byte) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.ns[string(b)]; ok {
		return v
	}
	if len(p.ns) >= 256 {
		return sqlsummary.Other
	}
	v := string(b)
	p.ns[v] = v
	return v
}

func (p *Protocol) code(c uint16) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.codes[c]; ok {
		return v
	}
	v := strconv.Itoa(int(c))
	p.codes[c] = v // at most 65536, and servers use a few thousand
	return v
}

type phase uint8

const (
	phaseGreeting phase = iota
	phaseHandshake
	phaseAuth
	phaseCommand
	phaseDone
)

type kind uint8

const (
	kQuery kind = iota + 1
	kExecute
	kPrepare
	kInitDB
	kOther
)

type rstate uint8

const (
	rFirst   rstate = iota // the response's first packet
	rColumns               // column definitions
	rColEOF                // the EOF after them (without CLIENT_DEPRECATE_EOF)
	rRows                  // rows, to the EOF or OK that ends them
	rSkip                  // a prepare's parameter and column definitions
)

type pending struct {
	kind  kind
	info  sqlsummary.Info
	known bool
	start uint64
	db    string // COM_INIT_DB's schema
	state rstate
	n     int // definitions left
}

const (
	capConnectWithDB   = 0x8
	capCompress        = 0x20
	capProtocol41      = 0x200
	capSSL             = 0x800
	capSecureConn      = 0x8000
	capPluginAuthLenc  = 1 << 21
	capDeprecateEOF    = 1 << 24
	capQueryAttributes = 1 << 27
	statusMoreResults  = 0x8
)

type entry struct {
	info  sqlsummary.Info
	known bool
}

type parser struct {
	p      *Protocol
	c      *l7.Conn
	out    l7.Sink
	phase  phase
	system attribute.KeyValue
	db     string

	serverCaps   uint32
	sslStopped   bool // stopped at an SSL request on the syscall source
	deprecateEOF bool
	queryAttrs   bool

	// seq is the sequence id the server's next packet must carry
	seq      uint8
	seqKnown bool

	cli, srv dbwire.Stream
	q        *l7.FIFO[pending]
	stmts    map[uint32]entry
	lost     bool
	x        l7.Exchange
}

var (
	systemMySQL   = attribute.Key("db.system.name").String("mysql")
	systemMariaDB = attribute.Key("db.system.name").String("mariadb")
)

// Capture implements l7.CapturePolicy: an operation is recorded once, from
// the client's side when the client is on this host (the kernel gives up
// the server side of such a connection).
func (p *Protocol) Capture() l7.Capture { return l7.Capture{ClientSide: true} }

// NewParser returns the parser of one connection.
func (p *Protocol) NewParser(c *l7.Conn) l7.Parser {
	ps := &parser{p: p, c: c, system: systemMySQL, q: l7.NewFIFO[pending](p.opt.MaxPending), stmts: map[uint32]entry{}}
	switch {
	case c.Midstream:
		ps.phase = phaseCommand
	case c.Source.TLS():
		// the greeting and the SSL request went in clear on the socket;
		// the plaintext begins with the full handshake response
		ps.phase = phaseHandshake
	}
	return ps
}

func (ps *parser) Feed(r *l7.Record, out l7.Sink) {
	if ps.phase == phaseDone && ps.sslStopped && ps.c.Source.TLS() {
		// the TLS data source took the connection over: its plaintext
		// goes on with the full handshake response
		ps.phase, ps.sslStopped = phaseHandshake, false
		ps.cli.Reset()
		ps.srv.Reset()
	}
	if ps.phase == phaseDone {
		return
	}
	ps.out = out
	defer func() { ps.out = nil }()
	if r.Dir == l7.ToServer {
		if !ps.cli.Feed((*client)(ps), r.Data, r.Tail, r.Total, r.Start, r.End) && !ps.lost && ps.q.Len() > 0 {
			ps.giveUp("lost")
			out.Drop(ps.c, "lost", 1)
			ps.lost = true
		}
		return
	}
	if !ps.srv.Feed((*server)(ps), r.Data, r.Tail, r.Total, r.Start, r.End) || !ps.srv.AtBoundary() {
		// out of step, or a call that began inside a packet and was
		// taken for one: look for the end of the result in its last bytes
		t := r.Tail
		if t == nil {
			t = r.Data
		}
		ps.tailEnd(t, r.End)
	}
}

// tailEnd looks, in the last bytes of a call read out of step, for the
// packet that ends a result: an EOF or OK (0xFE) or ERR ending exactly at
// the call's end.
func (ps *parser) tailEnd(t []byte, end uint64) {
	f := ps.q.Front()
	if f == nil || ps.lost || (f.kind != kQuery && f.kind != kExecute) {
		return
	}
	for i := len(t) - 4 - 5; i >= 0; i-- {
		l := int(t[i]) | int(t[i+1])<<8 | int(t[i+2])<<16
		if i+4+l != len(t) {
			continue
		}
		b := t[i+4:]
		switch {
		case b[0] == 0xFE && (l >= 5 && l < 9 || ps.deprecateEOF && l >= 7 && l < 0xFFFFFF):
			more := false
			if l >= 5 && l < 9 {
				more = binary.LittleEndian.Uint16(b[3:])&statusMoreResults != 0
			}
			// the stream resumes at the next call; the sequence ids of
			// what follows are not known
			ps.srv.Reset()
			ps.seqKnown = false
			if more {
				f.state = rFirst
			} else {
				ps.finish(f, end, "")
			}
			return
		case b[0] == 0xFF && l >= 3:
			ps.srv.Reset()
			ps.finish(f, end, ps.p.code(binary.LittleEndian.Uint16(b[1:])))
			return
		}
	}
}

func (ps *parser) Lost(dir l7.Dir, out l7.Sink) {
	ps.out = out
	ps.giveUp("lost")
	ps.out = nil
	ps.lost = ps.phase == phaseCommand
	ps.cli.Reset()
	ps.srv.Reset()
}

func (ps *parser) Close(end uint64, out l7.Sink) {
	ps.out = out
	ps.giveUp("incomplete")
	ps.out = nil
}

func (ps *parser) giveUp(reason string) {
	n := 0
	for ; ps.q.Len() > 0; ps.q.Pop() {
		if k := ps.q.Front().kind; k == kQuery || k == kExecute {
			n++
		}
	}
	if n > 0 && ps.out != nil {
		ps.out.Drop(ps.c, reason, n)
	}
}

type client parser

func (c *client) HeaderLen() int { return 4 }

func (c *client) BodyLen(h []byte) (int, int, bool) {
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	if c.phase == phaseCommand && h[3] != 0 {
		return n, 0, true // a long packet's continuation, LOCAL INFILE data
	}
	return n, dbwire.MaxKeep, true
}

func (c *client) Message(h, body []byte, cut bool, start, end uint64) {
	ps := (*parser)(c)
	switch ps.phase {
	case phaseHandshake:
		ps.handshake(body)
		return
	case phaseCommand:
	default:
		return
	}
	ps.seq, ps.seqKnown = h[3]+1, true
	if h[3] != 0 || len(body) == 0 {
		return
	}
	if ps.lost {
		// commands after a loss are not paired until the server is
		// quiet again: the next command
		ps.lost = false
	}
	switch body[0] {
	case 0x03: // COM_QUERY
		q := body[1:]
		if ps.queryAttrs {
			// parameter count and parameter set count (lenenc); with
			// parameters, their values come before the text
			if len(q) >= 2 && q[0] == 0 {
				q = q[2:]
			} else {
				q = nil
			}
		}
		ps.push(kQuery, ps.lookup(q, cut), true, start, "")
	case 0x16: // COM_STMT_PREPARE
		ps.push(kPrepare, ps.lookup(body[1:], cut), true, start, "")
	case 0x17: // COM_STMT_EXECUTE
		if len(body) < 5 {
			return
		}
		e, ok := ps.stmts[binary.LittleEndian.Uint32(body[1:])]
		ps.push(kExecute, e.info, ok, start, "")
	case 0x19: // COM_STMT_CLOSE: no response
		if len(body) >= 5 {
			delete(ps.stmts, binary.LittleEndian.Uint32(body[1:]))
		}
	case 0x18, 0x01: // COM_STMT_SEND_LONG_DATA, COM_QUIT: no response
	case 0x02: // COM_INIT_DB
		ps.push(kInitDB, sqlsummary.Info{}, true, start, ps.p.namespace(body[1:]))
	case 0x11: // COM_CHANGE_USER: authentication again
		ps.phase = phaseAuth
	default:
		ps.push(kOther, sqlsummary.Info{}, true, start, "")
	}
}

// lookup summarizes a query text; a cut text loses its last, perhaps
// partial, word.
func (ps *parser) lookup(q []byte, cut bool) sqlsummary.Info {
	if cut {
		i := len(q) - 1
		for i >= 0 && q[i] != ' ' && q[i] != '\n' && q[i] != '\t' {
			i--
		}
		q = q[:max(i, 0)]
	}
	if len(q) == 0 {
		return sqlsummary.Info{}
	}
	return ps.p.sum.Lookup(q)
}

func (ps *parser) push(k kind, info sqlsummary.Info, known bool, start uint64, db string) {
	e := ps.q.Push()
	if e == nil {
		if k == kQuery || k == kExecute {
			ps.out.Drop(ps.c, "overflow", 1)
		}
		return
	}
	*e = pending{kind: k, info: info, known: known, start: start, db: db}
}

func (ps *parser) handshake(b []byte) {
	ps.phase = phaseAuth
	if len(b) < 4 {
		return
	}
	caps := binary.LittleEndian.Uint32(b)
	if caps&capProtocol41 == 0 {
		return // protocol 3.20: not followed further, but commands still parse
	}
	if caps&capSSL != 0 && !ps.c.Source.TLS() {
		// TLS follows: the TLS data source, when it sees the plaintext,
		// hands it to this connection (Feed resumes) or to a new one
		ps.phase, ps.sslStopped = phaseDone, true
		return
	}
	if caps&capCompress != 0 {
		ps.phase = phaseDone // compression: not followed
		return
	}
	ps.deprecateEOF = caps&capDeprecateEOF != 0 && ps.serverCaps&capDeprecateEOF != 0
	ps.queryAttrs = caps&capQueryAttributes != 0 && ps.serverCaps&capQueryAttributes != 0
	if len(b) < 32 || caps&capConnectWithDB == 0 {
		return
	}
	r := b[32:]
	_, r = cut0(r) // user
	switch {
	case caps&capPluginAuthLenc != 0:
		n, w := lenenc(r)
		if w == 0 || uint64(len(r)-w) < n {
			return
		}
		r = r[w+int(n):]
	case caps&capSecureConn != 0:
		if len(r) < 1 || len(r)-1 < int(r[0]) {
			return
		}
		r = r[1+int(r[0]):]
	default:
		_, r = cut0(r)
	}
	if db, rest := cut0(r); len(db) > 0 && rest != nil {
		ps.db = ps.p.namespace(db)
	}
}

type server parser

func (s *server) HeaderLen() int { return 4 }

func (s *server) BodyLen(h []byte) (int, int, bool) {
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	if s.phase == phaseGreeting {
		return n, 256, true
	}
	if s.phase == phaseCommand && s.seqKnown {
		// packets of a response count up from the command's: a header
		// read out of step (a call that began inside a row) shows here
		if h[3] != s.seq {
			return 0, 0, false
		}
		s.seq++
	}
	return n, 32, true
}

func (s *server) Message(h, body []byte, cut bool, start, end uint64) {
	ps := (*parser)(s)
	if len(body) == 0 {
		return
	}
	l := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	switch ps.phase {
	case phaseGreeting:
		ps.greeting(body)
		return
	case phaseAuth:
		if body[0] == 0x00 || body[0] == 0xFF {
			ps.phase = phaseCommand
		}
		return
	case phaseCommand:
	default:
		return
	}
	f := ps.q.Front()
	if f == nil || ps.lost {
		return
	}
	b0 := body[0]
	if b0 == 0xFF && (f.state != rColumns && f.state != rSkip) {
		code := ""
		if len(body) >= 3 {
			code = ps.p.code(binary.LittleEndian.Uint16(body[1:]))
		}
		ps.finish(f, end, code)
		return
	}
	switch f.state {
	case rFirst:
		switch {
		case b0 == 0x00 && f.kind == kPrepare && len(body) >= 9:
			id := binary.LittleEndian.Uint32(body[1:])
			cols, params := int(binary.LittleEndian.Uint16(body[5:])), int(binary.LittleEndian.Uint16(body[7:]))
			if _, ok := ps.stmts[id]; ok || len(ps.stmts) < ps.p.opt.MaxStatements {
				ps.stmts[id] = entry{f.info, true}
			}
			n := cols + params
			if !ps.deprecateEOF {
				n += b2i(cols > 0) + b2i(params > 0)
			}
			if n == 0 {
				ps.q.Pop()
				return
			}
			f.state, f.n = rSkip, n
		case b0 == 0x00 || (b0 == 0xFE && l < 9):
			if f.kind == kInitDB && b0 == 0x00 {
				ps.db = f.db
			}
			if ps.more(body, b0 == 0xFE) {
				return
			}
			ps.finish(f, end, "")
		case b0 == 0xFB:
			// LOCAL INFILE: the client sends the file, then the server's OK
		case f.kind == kQuery || f.kind == kExecute:
			n, w := lenenc(body)
			if w == 0 || n == 0 {
				ps.finish(f, end, "")
				return
			}
			f.state, f.n = rColumns, int(min(n, 1<<16))
		default:
			ps.finish(f, end, "")
		}
	case rColumns:
		if f.n--; f.n <= 0 {
			f.state = rColEOF
			if ps.deprecateEOF {
				f.state = rRows
			}
		}
	case rColEOF:
		if b0 == 0xFE && l < 9 {
			f.state = rRows
			return
		}
		// a row where an EOF was due: the connection deprecated EOF (a
		// handshake we did not see)
		ps.deprecateEOF = true
		f.state = rRows
	case rRows:
		if b0 == 0xFE && l < 0xFFFFFF && (l < 9 || ps.deprecateEOF) {
			if ps.more(body, l < 9 && !ps.deprecateEOF) {
				f.state = rFirst
				return
			}
			ps.finish(f, end, "")
		}
	case rSkip:
		if f.n--; f.n <= 0 {
			ps.q.Pop()
		}
	}
}

// more reports whether an OK or EOF packet says more results follow.
func (ps *parser) more(b []byte, eof bool) bool {
	if eof {
		return len(b) >= 5 && binary.LittleEndian.Uint16(b[3:])&statusMoreResults != 0
	}
	r := b[1:]
	for range 2 { // affected rows, last insert id
		_, w := lenenc(r)
		if w == 0 {
			return false
		}
		r = r[w:]
	}
	return len(r) >= 2 && binary.LittleEndian.Uint16(r)&statusMoreResults != 0
}

func (ps *parser) greeting(b []byte) {
	ps.phase = phaseHandshake
	if b[0] != 10 {
		if b[0] == 0xFF {
			ps.phase = phaseDone // refused (too many connections, host blocked)
		}
		return
	}
	ver, r := cut0(b[1:])
	if containsFold(ver, "mariadb") {
		ps.system = systemMariaDB
	}
	// connection id (4), auth data part 1 (8), filler (1), capabilities
	// low (2), charset (1), status (2), capabilities high (2)
	if len(r) >= 20 {
		ps.serverCaps = uint32(binary.LittleEndian.Uint16(r[13:])) | uint32(binary.LittleEndian.Uint16(r[18:]))<<16
	}
}

// finish records f (unless it was a successful prepare or another command
// that is no operation) and pops it.
func (ps *parser) finish(f *pending, end uint64, code string) {
	if f.kind == kQuery || f.kind == kExecute || (f.kind == kPrepare && code != "") {
		ps.emit(f, end, code)
	}
	ps.q.Pop()
}

func (ps *parser) emit(f *pending, end uint64, code string) {
	x := &ps.x
	x.Reset()
	x.Start, x.End = f.start, end
	x.RequestSize, x.ResponseSize = -1, -1
	x.Add(ps.system)
	if ps.db != "" {
		x.Add(attribute.String("db.namespace", ps.db))
	}
	in := ps.p.sum.Bound(ps.c.PID, f.info)
	if in.Operation != "" {
		x.Add(attribute.String("db.operation.name", in.Operation))
	}
	if in.Collection != "" {
		x.Add(attribute.String("db.collection.name", in.Collection))
	}
	if in.Summary != "" {
		x.Add(attribute.String("db.query.summary", in.Summary))
	}
	switch {
	case in.Summary != "":
		x.SpanName = in.Summary
	case in.Operation != "":
		x.SpanName = in.Operation
	default:
		x.SpanName = ps.system.Value.AsString()
	}
	if code != "" {
		x.Add(attribute.String("db.response.status_code", code))
		x.Error = code
		x.StatusError = true
	}
	if in.Text != "" {
		x.AddSpan(attribute.String("db.query.text", in.Text))
	}
	ps.out.Exchange(ps.c, x)
	if in.Overflow {
		dbwire.Count(ps.out, ps.c, x, dbwire.MetricOverflow, ps.system, end)
	}
	if !f.known {
		dbwire.Count(ps.out, ps.c, x, dbwire.MetricUnknown, ps.system, end)
	}
}

// lenenc decodes a length-encoded integer; w is its width, 0 when b is too
// short or does not hold one.
func lenenc(b []byte) (v uint64, w int) {
	if len(b) == 0 {
		return 0, 0
	}
	switch c := b[0]; {
	case c < 0xFB:
		return uint64(c), 1
	case c == 0xFC && len(b) >= 3:
		return uint64(binary.LittleEndian.Uint16(b[1:])), 3
	case c == 0xFD && len(b) >= 4:
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, 4
	case c == 0xFE && len(b) >= 9:
		return binary.LittleEndian.Uint64(b[1:]), 9
	}
	return 0, 0
}

func cut0(b []byte) (before, after []byte) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func containsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		ok := true
		for j := 0; j < len(s); j++ {
			c := b[i+j]
			if c >= 'A' && c <= 'Z' {
				c += 32
			}
			if c != s[j] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

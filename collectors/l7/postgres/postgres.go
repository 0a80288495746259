// Package postgres is the PostgreSQL wire protocol (version 3) as an L7
// protocol: simple and extended queries (pipelined, named and unnamed
// prepared statements mapped to their text), COPY as one operation,
// ErrorResponse's SQLSTATE, and the startup message's database. A
// connection upgraded by SSLRequest or GSSENCRequest is left alone here: its
// plaintext, if the TLS data source can see it, comes as a connection of
// its own that begins with the startup message.
//
// One operation is one simple Query message (from it to its
// ReadyForQuery, so COPY and multi-statement strings are one operation), or
// one Execute (to its CommandComplete, EmptyQueryResponse,
// PortalSuspended or ErrorResponse), or a Parse, Bind or Describe that
// failed (the statement never ran; the Executes after it up to Sync are
// skipped by the server and are no operations).
package postgres

import (
	"encoding/binary"
	"sync"

	"go.opentelemetry.io/otel/attribute"

	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/dbwire"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
)

// Name is the protocol's name and db.system.name's value.
const Name = "postgresql"

// Options configure the protocol. Zero values take the defaults.
type Options struct {
	// QueryText puts db.query.text, literals replaced, on spans.
	QueryText bool
	// MaxStatements caps the named prepared statements (and named portals)
	// remembered per connection; an Execute of one past it has no
	// summary and is counted.
	MaxStatements int
	// MaxSummaries and MaxCollections cap distinct db.query.summary and
	// db.collection.name values (agent-wide for the protocol); past them
	// the value is _OTHER and counted.
	MaxSummaries, MaxCollections int
	// MaxPending caps requests in flight per connection (pipelining).
	MaxPending int
}

const (
	defaultMaxStatements = 256
	defaultMaxPending    = 256
	maxNamespaces        = 256
)

// Protocol is the PostgreSQL protocol. It is safe for concurrent use by
// the parsers it makes.
type Protocol struct {
	opt Options
	sum *sqlsummary.Summarizer

	mu sync.Mutex
	ns map[string]string // interned db.namespace values
}

// New returns the protocol.
func New(o Options) *Protocol {
	if o.MaxStatements <= 0 {
		o.MaxStatements = defaultMaxStatements
	}
	if o.MaxPending <= 0 {
		o.MaxPending = defaultMaxPending
	}
	return &Protocol{
		opt: o,
		sum: sqlsummary.New(sqlsummary.Options{Dialect: sqlsummary.Postgres, MaxSummaries: o.MaxSummaries,
			MaxCollections: o.MaxCollections, QueryText: o.QueryText}),
		ns: make(map[string]string),
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
	if len(p.ns) >= maxNamespaces {
		return sqlsummary.Other
	}
	v := string(b)
	p.ns[v] = v
	return v
}

type phase uint8

const (
	phaseStartup phase = iota // the client's next message has no type byte
	phaseSSL                  // SSLRequest sent: the server answers one byte
	phaseGSS                  // GSSENCRequest sent: likewise
	phaseNormal
	phaseDone // encrypted or cancelled: nothing more to read
)

type kind uint8

const (
	kSimple kind = iota + 1
	kParse
	kBind
	kDescribe
	kExecute
	kClose
	kSync
)

type pending struct {
	kind  kind
	info  sqlsummary.Info
	known bool
	start uint64
	// failed simple queries wait for ReadyForQuery with their code
	failed bool
	code   string
}

// Capture implements l7.CapturePolicy: an operation is recorded once, from
// the client's side when the client is on this host (the kernel gives up
// the server side of such a connection).
func (p *Protocol) Capture() l7.Capture { return l7.Capture{ClientSide: true} }

// NewParser returns the parser of one connection.
func (p *Protocol) NewParser(c *l7.Conn) l7.Parser {
	ps := &parser{p: p, c: c, q: l7.NewFIFO[pending](p.opt.MaxPending),
		stmts: make(map[string]entry), portals: make(map[string]entry)}
	if c.Midstream {
		ps.phase = phaseNormal
	}
	return ps
}

// entry is a prepared statement or portal; known is false for a portal
// bound to a statement whose text was never seen.
type entry struct {
	info  sqlsummary.Info
	known bool
}

type parser struct {
	p     *Protocol
	c     *l7.Conn
	out   l7.Sink
	phase phase
	db    string
	// sslStopped: stopped at an SSLRequest answered S on the syscall
	// source; resumed if the TLS source feeds this connection
	sslStopped bool

	cli, srv dbwire.Stream

	// prepared statements and portals by name; the unnamed ones apart
	stmts, portals         map[string]entry
	unnamedStmt, unnPortal entry

	q *l7.FIFO[pending]
	// lost: records went missing; requests are not paired until the
	// server's next ReadyForQuery puts both directions in step again.
	lost bool
	// copyIn: the server asked for COPY data; the client sends nothing
	// but CopyData until CopyDone or CopyFail, and a long stream of it
	// may be out of step without any request lost.
	copyIn bool

	x l7.Exchange
}

func (ps *parser) Feed(r *l7.Record, out l7.Sink) {
	ps.out = out
	defer func() { ps.out = nil }()
	if ps.phase == phaseDone && ps.sslStopped && ps.c.Source.TLS() {
		// the TLS data source took the connection over: its plaintext
		// begins with the startup message
		ps.phase, ps.sslStopped = phaseStartup, false
		ps.cli.Reset()
		ps.srv.Reset()
	}
	if ps.phase == phaseDone {
		return
	}
	if r.Dir == l7.ToServer {
		if !ps.cli.Feed((*client)(ps), r.Data, r.Tail, r.Total, r.Start, r.End) && !ps.lost && !ps.copyIn {
			// requests in bytes the capture left out: their responses
			// cannot be paired until the server is ready again
			ps.giveUp("lost")
			out.Drop(ps.c, "lost", 1)
			ps.lost = true
		}
		return
	}
	data, total := r.Data, r.Total
	if ps.phase == phaseSSL || ps.phase == phaseGSS {
		if len(data) == 0 {
			return
		}
		if (ps.phase == phaseSSL && data[0] == 'S') || (ps.phase == phaseGSS && data[0] == 'G') {
			ps.phase, ps.sslStopped = phaseDone, true // the rest is encrypted
			return
		}
		ps.phase = phaseStartup
		data, total = data[1:], total-1
	}
	inStep := ps.srv.Feed((*server)(ps), data, r.Tail, total, r.Start, r.End)
	t := r.Tail
	if t == nil {
		t = data
	}
	if n := len(t); (!inStep || !ps.srv.AtBoundary()) && n >= 6 && t[n-6] == 'Z' && binary.BigEndian.Uint32(t[n-5:]) == 5 {
		// Out of step in a long response, or a call that began inside a
		// message and was taken for one: a response ends with
		// ReadyForQuery, and this call ends with one.
		ps.srv.Reset()
		// the Executes before the Sync completed in the bytes left out
		// (an error in them would have ended the response short)
		for f := ps.q.Front(); f != nil && f.kind != kSync && f.kind != kSimple; f = ps.q.Front() {
			if f.kind == kExecute {
				ps.emit(f, r.End, "")
			}
			ps.q.Pop()
		}
		ps.serverMessage('Z', t[n-1:], r.End)
	}
}

func (ps *parser) Lost(dir l7.Dir, out l7.Sink) {
	ps.out = out
	ps.giveUp("lost")
	ps.out = nil
	ps.lost = true
	ps.cli.Reset()
	ps.srv.Reset()
}

func (ps *parser) Close(end uint64, out l7.Sink) {
	ps.out = out
	ps.giveUp("incomplete")
	ps.out = nil
}

// giveUp counts the operations waiting and forgets every request.
func (ps *parser) giveUp(reason string) {
	n := 0
	for ps.q.Len() > 0 {
		if f := ps.q.Front(); f.kind == kSimple || f.kind == kExecute {
			n++
		}
		ps.q.Pop()
	}
	if n > 0 && ps.out != nil {
		ps.out.Drop(ps.c, reason, n)
	}
}

// client frames the client's messages.
type client parser

func (c *client) HeaderLen() int {
	if c.phase == phaseStartup {
		return 4
	}
	return 5
}

func (c *client) BodyLen(h []byte) (int, int, bool) {
	if len(h) == 4 {
		n := int(binary.BigEndian.Uint32(h)) - 4
		return n, n, n >= 4 && n <= 10000
	}
	n := int(int32(binary.BigEndian.Uint32(h[1:]))) - 4
	if n < 0 {
		return 0, 0, false
	}
	switch h[0] {
	case 'Q', 'P':
		return n, dbwire.MaxKeep, true
	case 'B', 'C':
		return n, 256, true // portal and statement names
	case 'E':
		return n, 128, true
	case 'D':
		return n, 1, true
	case 'S', 'H', 'X', 'd', 'c', 'f', 'F', 'p':
		return n, 0, true
	}
	return 0, 0, false
}

func (c *client) Message(h, body []byte, cut bool, start, end uint64) {
	ps := (*parser)(c)
	if len(h) == 4 {
		ps.startup(body)
		return
	}
	if ps.copyIn {
		return // CopyData, or bytes of it read out of step
	}
	switch h[0] {
	case 'Q':
		ps.push(kSimple, ps.lookup(cstring(body)), true, start)
	case 'F':
		ps.push(kSimple, sqlsummary.Info{}, true, start)
	case 'P':
		name, rest := cut0(body)
		info := ps.lookup(cstring(rest))
		ps.keep(ps.stmts, &ps.unnamedStmt, name, entry{info, true})
		ps.push(kParse, info, true, start)
	case 'B':
		portal, rest := cut0(body)
		stmt, _ := cut0(rest)
		e := ps.find(ps.stmts, &ps.unnamedStmt, stmt)
		ps.keep(ps.portals, &ps.unnPortal, portal, e)
		ps.push(kBind, e.info, e.known, start)
	case 'E':
		portal, _ := cut0(body)
		e := ps.find(ps.portals, &ps.unnPortal, portal)
		ps.push(kExecute, e.info, e.known, start)
	case 'D':
		ps.push(kDescribe, sqlsummary.Info{}, true, start)
	case 'C':
		if len(body) > 0 {
			name, _ := cut0(body[1:])
			if body[0] == 'S' {
				ps.forget(ps.stmts, &ps.unnamedStmt, name)
			} else {
				ps.forget(ps.portals, &ps.unnPortal, name)
			}
		}
		ps.push(kClose, sqlsummary.Info{}, true, start)
	case 'S':
		ps.push(kSync, sqlsummary.Info{}, true, start)
	}
}

func (ps *parser) startup(body []byte) {
	if len(body) < 4 {
		return
	}
	switch code := binary.BigEndian.Uint32(body); code {
	case 80877103:
		ps.phase = phaseSSL
		return
	case 80877104:
		ps.phase = phaseGSS
		return
	case 80877102: // CancelRequest: a connection of its own, nothing follows
		ps.phase = phaseDone
		return
	}
	ps.phase = phaseNormal
	// name\0value\0 pairs; the database defaults to the user's name
	var user, db []byte
	for b := body[4:]; len(b) > 0 && b[0] != 0; {
		var k, v []byte
		k, b = cut0(b)
		v, b = cut0(b)
		switch string(k) {
		case "user":
			user = v
		case "database":
			db = v
		}
	}
	if len(db) == 0 {
		db = user
	}
	if len(db) > 0 {
		ps.db = ps.p.namespace(db)
	}
}

func (ps *parser) lookup(q []byte) sqlsummary.Info {
	if len(q) == 0 {
		return sqlsummary.Info{}
	}
	return ps.p.sum.Lookup(q)
}

// keep remembers a statement or portal under name; past MaxStatements a
// new name is not kept, and its uses are unknown.
func (ps *parser) keep(m map[string]entry, unnamed *entry, name []byte, e entry) {
	if len(name) == 0 {
		*unnamed = e
		return
	}
	if _, ok := m[string(name)]; ok || len(m) < ps.p.opt.MaxStatements {
		m[string(name)] = e
	}
}

func (ps *parser) find(m map[string]entry, unnamed *entry, name []byte) entry {
	if len(name) == 0 {
		return *unnamed
	}
	return m[string(name)]
}

func (ps *parser) forget(m map[string]entry, unnamed *entry, name []byte) {
	if len(name) == 0 {
		*unnamed = entry{}
		return
	}
	delete(m, string(name))
}

func (ps *parser) push(k kind, info sqlsummary.Info, known bool, start uint64) {
	if ps.lost {
		if k == kSimple || k == kExecute {
			ps.out.Drop(ps.c, "lost", 1)
		}
		return
	}
	e := ps.q.Push()
	if e == nil {
		if k == kSimple || k == kExecute {
			ps.out.Drop(ps.c, "overflow", 1)
		}
		return
	}
	*e = pending{kind: k, info: info, known: known, start: start}
}

// server frames the server's messages.
type server parser

func (s *server) HeaderLen() int { return 5 }

func (s *server) BodyLen(h []byte) (int, int, bool) {
	n := int(int32(binary.BigEndian.Uint32(h[1:]))) - 4
	if n < 0 {
		return 0, 0, false
	}
	// lengths the protocol fixes or bounds: a call that begins inside a
	// message is rarely taken for one
	switch h[0] {
	case 'E', 'N':
		return n, 512, n < 1<<16
	case 'Z':
		return n, 1, n == 1
	case '1', '2', '3', 'n', 's', 'I', 'c':
		return n, 0, n == 0
	case 'K':
		return n, 0, n == 8
	case 'C', 'S':
		return n, 0, n < 1<<12
	case 'R', 'T', 'D', 't', 'G', 'H', 'W', 'd', 'A', 'V', 'v':
		return n, 0, true
	}
	return 0, 0, false
}

func (s *server) Message(h, body []byte, cut bool, start, end uint64) {
	(*parser)(s).serverMessage(h[0], body, end)
}

func (ps *parser) serverMessage(t byte, body []byte, end uint64) {
	switch t {
	case 'G':
		ps.copyIn = true
	case 'Z', 'E', 'C':
		ps.copyIn = false
	}
	if ps.lost {
		if t == 'Z' {
			ps.lost = false
		}
		return
	}
	f := ps.q.Front()
	if f == nil {
		return // startup, notices, notifications
	}
	switch t {
	case 'E':
		code := sqlstate(body)
		switch f.kind {
		case kSimple:
			f.failed, f.code = true, code
		case kParse, kBind, kDescribe, kExecute:
			ps.emit(f, end, code)
			ps.q.Pop()
			// the server skips everything up to Sync
			for g := ps.q.Front(); g != nil && g.kind != kSync; g = ps.q.Front() {
				ps.q.Pop()
			}
		}
	case 'Z':
		for g := ps.q.Front(); g != nil; g = ps.q.Front() {
			k := g.kind
			if k == kSimple {
				c := g.code
				if !g.failed {
					c = ""
				}
				ps.emit(g, end, c)
			} else if k == kExecute {
				ps.out.Drop(ps.c, "unpaired", 1)
			}
			ps.q.Pop()
			if k == kSimple || k == kSync {
				break
			}
		}
	case '1':
		ps.popIf(kParse)
	case '2':
		ps.popIf(kBind)
	case '3':
		ps.popIf(kClose)
	case 'T', 'n':
		// a Describe's answer ends with its row description (a statement's
		// has its ParameterDescription, 't', before it)
		ps.popIf(kDescribe)
	case 'C', 'I', 's':
		if f.kind == kExecute {
			ps.emit(f, end, "")
			ps.q.Pop()
		}
	}
}

func (ps *parser) popIf(k kind) {
	if f := ps.q.Front(); f != nil && f.kind == k {
		ps.q.Pop()
	}
}

var keySystem = attribute.Key("db.system.name").String(Name)

// emit records the operation f; code is its SQLSTATE when it failed.
func (ps *parser) emit(f *pending, end uint64, code string) {
	x := &ps.x
	x.Reset()
	x.Start, x.End = f.start, end
	x.RequestSize, x.ResponseSize = -1, -1
	x.Add(keySystem)
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
		x.SpanName = Name
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
		dbwire.Count(ps.out, ps.c, x, dbwire.MetricOverflow, keySystem, end)
	}
	if !f.known {
		dbwire.Count(ps.out, ps.c, x, dbwire.MetricUnknown, keySystem, end)
	}
}

// sqlstate returns ErrorResponse's code field, interned.
func sqlstate(body []byte) string {
	for len(body) > 0 && body[0] != 0 {
		t := body[0]
		var v []byte
		v, body = cut0(body[1:])
		if t == 'C' {
			return internCode(v)
		}
	}
	return "_OTHER"
}

var (
	codeMu sync.Mutex
	codes  = map[string]string{}
)

// internCode keeps SQLSTATE values: five characters of [0-9A-Z], and at
// most a few hundred of them.
func internCode(v []byte) string {
	if len(v) != 5 {
		return sqlsummary.Other
	}
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') {
			return sqlsummary.Other
		}
	}
	codeMu.Lock()
	defer codeMu.Unlock()
	if s, ok := codes[string(v)]; ok {
		return s
	}
	if len(codes) >= 1024 {
		return sqlsummary.Other
	}
	s := string(v)
	codes[s] = s
	return s
}

// cut0 splits b at its first NUL.
func cut0(b []byte) (before, after []byte) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

// cstring is the query text b holds up to its NUL; when the capture or
// the kept bytes stopped short of the NUL, the last word may be cut and
// is left out (a table "it" is not the table "items").
func cstring(b []byte) []byte {
	s, rest := cut0(b)
	if rest != nil {
		return s
	}
	for i := len(s) - 1; i >= 0; i-- {
		if c := s[i]; c == ' ' || c == '\n' || c == '\t' || c == '\r' {
			return s[:i]
		}
	}
	return nil
}

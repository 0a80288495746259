package capture

import (
	"bytes"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/l7"
)

// fakeHTTP1 notes an h2c upgrade at a record holding a 101, as the HTTP/1
// collector does from its parser.
type fakeHTTP1 struct {
	ended, data int
	took        bool
}

func (h *fakeHTTP1) Open(c *Conn, r *Record) {}
func (h *fakeHTTP1) Data(c *Conn, r *Record) {
	h.data++
	if bytes.HasPrefix(r.Data, []byte("HTTP/1.1 101")) {
		h.took = c.SetUpgrade(l7.Upgrade{Method: []byte("GET"), Target: []byte("/ok"), Host: []byte("h"), Start: 1, End: 2})
	}
}
func (h *fakeHTTP1) Lost(c *Conn)                                    {}
func (h *fakeHTTP1) End(c *Conn, end uint64, lostStart, exited bool) { h.ended++ }
func (h *fakeHTTP1) Housekeep(func(uint32) bool, time.Time)          {}

// upProto records how its parsers began and what they were fed.
type upProto struct {
	upgraded []string
	opened   int
	fed      [][]byte
	lost     []l7.Dir
}

func (p *upProto) Name() string                    { return "http2" }
func (p *upProto) Metrics(l7.Role) []l7.MetricSpec { return nil }
func (p *upProto) NewParser(c *l7.Conn) l7.Parser  { p.opened++; return (*upParser)(p) }
func (p *upProto) Upgraded(c *l7.Conn, u *l7.Upgrade) l7.Parser {
	p.upgraded = append(p.upgraded, string(u.Method)+" "+string(u.Target)+" "+string(u.Host))
	return (*upParser)(p)
}

type upParser upProto

func (p *upParser) Feed(r *l7.Record, _ l7.Sink) {
	p.fed = append(p.fed, append([]byte(nil), r.Data...))
}
func (p *upParser) Lost(d l7.Dir, _ l7.Sink) { p.lost = append(p.lost, d) }
func (p *upParser) Close(uint64, l7.Sink)    {}

// TestH2CHandOver: a connection the kernel re-decided as HTTP/2 at a 101
// (its records' proto changes) goes from the HTTP/1 handler, which ends
// it, to the HTTP/2 protocol's upgraded parser, with the upgrade request
// and the HTTP/2 bytes that followed the 101's head in its record.
func TestH2CHandOver(t *testing.T) {
	for _, withH2 := range []bool{true, false} {
		e := NewEngine(collectors.Deps{}, DefaultConfig())
		h1 := &fakeHTTP1{}
		e.Register(ProtoHTTP1, h1)
		p := &upProto{}
		if withH2 {
			e.Register(ProtoHTTP2, &protocolHandler{p: p, sink: NewSink(e, p)})
		}
		rec := func(typ uint8, seq uint32, proto Proto, read bool, data string) *Record {
			return &Record{Type: typ, TGID: 7, FD: 3, StartNs: 1, Seq: seq, Proto: proto, Read: read,
				Role: uint8(l7HttpRoleROLE_CLIENT), Data: []byte(data), Total: uint64(len(data))}
		}
		e.Handle(rec(TypeOpen, 0, ProtoHTTP1, false, ""))
		e.Handle(rec(TypeData, 1, ProtoHTTP1, false, "GET /ok HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"))
		e.Handle(rec(TypeData, 2, ProtoHTTP1, true, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nSETTINGS"))
		if !withH2 {
			if h1.took || h1.data != 2 {
				t.Fatalf("without http2: the upgrade taken (%v), %d records", h1.took, h1.data)
			}
			continue
		}
		e.Handle(rec(TypeData, 3, ProtoHTTP2, false, "PRI * HTTP/2.0"))
		if !h1.took || h1.ended != 1 || h1.data != 2 {
			t.Fatalf("HTTP/1: took %v, ended %d, %d records", h1.took, h1.ended, h1.data)
		}
		if len(p.upgraded) != 1 || p.upgraded[0] != "GET /ok h" || p.opened != 0 {
			t.Fatalf("upgraded %q, opened %d", p.upgraded, p.opened)
		}
		if len(p.fed) != 2 || string(p.fed[0]) != "SETTINGS" || string(p.fed[1]) != "PRI * HTTP/2.0" {
			t.Fatalf("fed %q", p.fed)
		}
	}
}

// TestLostByDirection: a sequence gap is told to the parser for the
// directions it took, from the data records' count of response-direction
// records before them: a lost response does not resynchronise the request
// direction (HTTP/2's HPACK table of the other direction survives).
func TestLostByDirection(t *testing.T) {
	e := NewEngine(collectors.Deps{}, DefaultConfig())
	p := &upProto{}
	e.Register(ProtoHTTP2, &protocolHandler{p: p, sink: NewSink(e, p)})
	// a client: its writes are requests, its reads responses
	rec := func(typ uint8, seq, resp uint32, read bool) *Record {
		return &Record{Type: typ, TGID: 7, FD: 3, StartNs: 1, Seq: seq, RespRecords: resp, Proto: ProtoHTTP2,
			Read: read, Role: uint8(l7HttpRoleROLE_CLIENT), Data: []byte("x"), Total: 1}
	}
	e.Handle(rec(TypeOpen, 0, 0, false))
	e.Handle(rec(TypeData, 1, 0, false)) // request
	e.Handle(rec(TypeData, 2, 0, true))  // response
	// seq 3 (a response) lost
	e.Handle(rec(TypeData, 4, 2, false))
	if len(p.lost) != 1 || p.lost[0] != l7.ToClient {
		t.Fatalf("a lost response: lost %v", p.lost)
	}
	// seq 5 (a request) lost
	p.lost = nil
	e.Handle(rec(TypeData, 6, 2, true))
	if len(p.lost) != 1 || p.lost[0] != l7.ToServer {
		t.Fatalf("a lost request: lost %v", p.lost)
	}
	// seq 7 and 8, one of each, lost
	p.lost = nil
	e.Handle(rec(TypeData, 9, 4, false))
	if len(p.lost) != 2 {
		t.Fatalf("both lost: lost %v", p.lost)
	}
}

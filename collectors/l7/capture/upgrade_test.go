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
		// req, resp: the records of each direction before this one
		rec := func(typ uint8, req, resp uint32, proto Proto, read bool, data string) *Record {
			return &Record{Type: typ, TGID: 7, FD: 3, StartNs: 1, ReqRecords: req, RespRecords: resp, Proto: proto, Read: read,
				Role: uint8(l7HttpRoleROLE_CLIENT), Data: []byte(data), Total: uint64(len(data))}
		}
		e.Handle(rec(TypeOpen, 0, 0, ProtoHTTP1, false, ""))
		e.Handle(rec(TypeData, 0, 0, ProtoHTTP1, false, "GET /ok HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"))
		e.Handle(rec(TypeData, 1, 0, ProtoHTTP1, true, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nSETTINGS"))
		if !withH2 {
			if h1.took || h1.data != 2 {
				t.Fatalf("without http2: the upgrade taken (%v), %d records", h1.took, h1.data)
			}
			continue
		}
		e.Handle(rec(TypeData, 1, 1, ProtoHTTP2, false, "PRI * HTTP/2.0"))
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

// TestLostByDirection: the kernel numbers each direction's records apart;
// a gap is told to the parser for the direction it is in. A gap in the
// other direction's count a record carries is told before the record to a
// protocol that answers in order, and never to a multiplexed one, whose
// other direction may have a record still on its way (a server reading
// and writing one connection on two CPUs at once): that record, arriving
// after, is no loss.
func TestLostByDirection(t *testing.T) {
	type step struct {
		read      bool   // a client: its writes are requests, its reads responses
		req, resp uint32 // the records of each direction before it
		close     bool
		lost      []l7.Dir // told before this record
		ended     bool     // close: the handler told both lost (a response lost)
	}
	req := func(req, resp uint32, lost ...l7.Dir) step { return step{req: req, resp: resp, lost: lost} }
	resp := func(req, resp uint32, lost ...l7.Dir) step { return step{read: true, req: req, resp: resp, lost: lost} }
	for _, tc := range []struct {
		name        string
		multiplexed bool
		steps       []step
	}{
		{"in order", false, []step{
			req(0, 0), resp(1, 0),
			req(2, 1, l7.ToServer), // request 1 lost
			resp(3, 1),
			resp(3, 3, l7.ToClient), // response 2 lost
			resp(5, 4, l7.ToServer), // requests 3 and 4 lost, seen from the response
			req(4, 5),               // request 4 arrives after all: no loss twice
			req(5, 5),
			req(7, 5, l7.ToServer),               // request 6 lost
			resp(9, 7, l7.ToServer, l7.ToClient), // one of each
		}},
		{"multiplexed", true, []step{
			req(0, 0), req(1, 0), resp(2, 0),
			resp(3, 1), // request 2 still on its way: not lost
			req(2, 1),  // ... here it is
			req(3, 2),
			resp(5, 3, l7.ToClient), // response 2 lost
			req(5, 3, l7.ToServer),  // request 4 lost
			resp(9, 4),              // requests 6-8 ahead, all on their way
			req(6, 3), req(7, 5), req(8, 5),
		}},
		{"close after a lost request", false, []step{
			req(0, 0), resp(1, 0), {close: true, req: 3, resp: 1},
		}},
		{"close after a lost response", true, []step{
			req(0, 0), resp(1, 0), {close: true, req: 1, resp: 2, ended: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine(collectors.Deps{}, DefaultConfig())
			p := &upProto{}
			e.Register(ProtoHTTP2, &protocolHandler{p: p, sink: NewSink(e, p)})
			if err := e.SetCapture(ProtoHTTP2, l7.Capture{Multiplexed: tc.multiplexed}); err != nil {
				t.Fatal(err)
			}
			e.Handle(&Record{Type: TypeOpen, TGID: 7, FD: 3, StartNs: 1, Proto: ProtoHTTP2, Role: uint8(l7HttpRoleROLE_CLIENT)})
			for i, s := range tc.steps {
				p.lost, p.fed = nil, nil
				r := &Record{Type: TypeData, TGID: 7, FD: 3, StartNs: 1, ReqRecords: s.req, RespRecords: s.resp,
					Proto: ProtoHTTP2, Read: s.read, Role: uint8(l7HttpRoleROLE_CLIENT), Data: []byte("x"), Total: 1}
				if s.close {
					r.Type, r.Data, r.Total = TypeClose, nil, 0
				}
				e.Handle(r)
				want := s.lost
				if s.ended {
					want = []l7.Dir{l7.ToServer, l7.ToClient}
				}
				if len(p.lost) != len(want) || (len(want) > 0 && !slicesEqual(p.lost, want)) {
					t.Fatalf("step %d %+v: lost %v, want %v", i, s, p.lost, want)
				}
				if !s.close && len(p.fed) != 1 {
					t.Fatalf("step %d: fed %d records", i, len(p.fed))
				}
			}
		})
	}
}

func slicesEqual(a, b []l7.Dir) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

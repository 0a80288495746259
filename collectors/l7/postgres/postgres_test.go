package postgres

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
)

func msg(t byte, parts ...string) []byte {
	body := strings.Join(parts, "")
	b := []byte{t, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

func startup(params ...string) []byte {
	body := []byte{0, 3, 0, 0}
	for _, p := range params {
		body = append(append(body, p...), 0)
	}
	body = append(body, 0)
	b := binary.BigEndian.AppendUint32(nil, uint32(4+len(body)))
	return append(b, body...)
}

func cat(m ...[]byte) []byte {
	var b []byte
	for _, x := range m {
		b = append(b, x...)
	}
	return b
}

var (
	rfq     = msg('Z', "I")
	ok      = msg('C', "SELECT 1\x00")
	errBody = "SERROR\x00VERROR\x00C42P01\x00Mrelation does not exist\x00\x00"
)

type step struct {
	dir  l7.Dir
	data []byte
}

func run(t *testing.T, opt Options, c *l7.Conn, steps []step, keys ...string) (*relay.Tally, []*l7.Exchange) {
	t.Helper()
	p := New(opt)
	if c == nil {
		c = &l7.Conn{ID: 1, Role: l7.RoleClient}
	}
	ks := make([]any, 0)
	_ = ks
	tally := relay.NewTally(p)
	var xs []*l7.Exchange
	tally.Check = func(x *l7.Exchange) {
		if x.Metric == 0 {
			y := *x
			xs = append(xs, &y)
		}
	}
	ps := p.NewParser(c)
	for i, s := range steps {
		ps.Feed(&l7.Record{Dir: s.dir, Data: s.data, Total: uint64(len(s.data)), Start: uint64(10 * i), End: uint64(10*i + 5)}, tally)
	}
	ps.Close(1000, tally)
	return tally, xs
}

func attrs(x *l7.Exchange) string {
	var b []string
	for _, a := range x.Attrs[:x.NAttr] {
		b = append(b, fmt.Sprintf("%s=%s", a.Key, a.Value.Emit()))
	}
	for _, a := range x.SpanAttrs[:x.NSpanAttr] {
		b = append(b, fmt.Sprintf("span:%s=%s", a.Key, a.Value.Emit()))
	}
	return x.SpanName + " [" + strings.Join(b, " ") + "] " + x.Error
}

func TestParser(t *testing.T) {
	up := startup("user", "alice", "database", "shop")
	for _, c := range []struct {
		name  string
		opt   Options
		conn  *l7.Conn
		steps []step
		want  []string
		drops map[string]int
	}{
		{name: "simple query", steps: []step{
			{l7.ToServer, up}, {l7.ToClient, cat(msg('R', "\x00\x00\x00\x00"), msg('S', "a\x00b\x00"), rfq)},
			{l7.ToServer, msg('Q', "SELECT * FROM users WHERE id = 1\x00")},
			{l7.ToClient, cat(msg('T', "x"), msg('D', "x"), ok, rfq)},
		}, want: []string{"SELECT users [db.system.name=postgresql db.namespace=shop db.operation.name=SELECT db.collection.name=users db.query.summary=SELECT users] "}},
		{name: "database defaults to the user, query text opt-in", opt: Options{QueryText: true}, steps: []step{
			{l7.ToServer, startup("user", "bob")}, {l7.ToClient, rfq},
			{l7.ToServer, msg('Q', "SELECT 'secret' FROM t\x00")}, {l7.ToClient, cat(ok, rfq)},
		}, want: []string{"SELECT t [db.system.name=postgresql db.namespace=bob db.operation.name=SELECT db.collection.name=t db.query.summary=SELECT t span:db.query.text=SELECT ? FROM t] "}},
		{name: "simple query error", steps: []step{
			{l7.ToServer, up}, {l7.ToClient, rfq},
			{l7.ToServer, msg('Q', "SELECT * FROM nope\x00")},
			{l7.ToClient, cat(msg('E', errBody), rfq)},
		}, want: []string{"SELECT nope [db.system.name=postgresql db.namespace=shop db.operation.name=SELECT db.collection.name=nope db.query.summary=SELECT nope db.response.status_code=42P01] 42P01"}},
		{name: "pipelined extended queries, named and unnamed", conn: &l7.Conn{Midstream: true}, steps: []step{
			{l7.ToServer, cat(msg('P', "s1\x00SELECT a FROM t1 WHERE x = $1\x00\x00\x00"), msg('D', "Ss1\x00"), msg('S'))},
			{l7.ToClient, cat(msg('1'), msg('t', "\x00\x00"), msg('T', "x"), rfq)},
			{l7.ToServer, cat(msg('B', "\x00s1\x00rest"), msg('E', "\x00\x00\x00\x00\x00"),
				msg('P', "\x00INSERT INTO t2 VALUES ($1)\x00\x00\x00"), msg('B', "\x00\x00rest"), msg('E', "\x00\x00\x00\x00\x00"),
				msg('B', "\x00s1\x00rest"), msg('E', "\x00\x00\x00\x00\x00"), msg('S'))},
			{l7.ToClient, cat(msg('2'), msg('D', "row"), ok, msg('1'), msg('2'), msg('C', "INSERT 0 1\x00"))},
			{l7.ToClient, cat(msg('2'), msg('s'), rfq)},
		}, want: []string{
			"SELECT t1 [db.system.name=postgresql db.operation.name=SELECT db.collection.name=t1 db.query.summary=SELECT t1] ",
			"INSERT t2 [db.system.name=postgresql db.operation.name=INSERT db.collection.name=t2 db.query.summary=INSERT t2] ",
			"SELECT t1 [db.system.name=postgresql db.operation.name=SELECT db.collection.name=t1 db.query.summary=SELECT t1] ",
		}},
		{name: "failed parse skips to sync", conn: &l7.Conn{Midstream: true}, steps: []step{
			{l7.ToServer, cat(msg('P', "\x00SELECT * FROM nope\x00\x00\x00"), msg('B', "\x00\x00"), msg('E', "\x00\x00\x00\x00\x00"), msg('S'))},
			{l7.ToClient, cat(msg('E', errBody), rfq)},
			{l7.ToServer, cat(msg('P', "\x00SELECT 1\x00\x00\x00"), msg('B', "\x00\x00"), msg('E', "\x00\x00\x00\x00\x00"), msg('S'))},
			{l7.ToClient, cat(msg('1'), msg('2'), ok, rfq)},
		}, want: []string{
			"SELECT nope [db.system.name=postgresql db.operation.name=SELECT db.collection.name=nope db.query.summary=SELECT nope db.response.status_code=42P01] 42P01",
			"SELECT [db.system.name=postgresql db.operation.name=SELECT db.query.summary=SELECT] ",
		}},
		{name: "COPY is one operation", conn: &l7.Conn{Midstream: true}, steps: []step{
			{l7.ToServer, msg('Q', "COPY items FROM STDIN\x00")},
			{l7.ToClient, msg('G', "\x00\x00\x00")},
			{l7.ToServer, cat(msg('d', "1\tQ\n"), msg('d', "2\tS\n"))},
			{l7.ToServer, msg('c')},
			{l7.ToClient, cat(msg('C', "COPY 2\x00"), rfq)},
		}, want: []string{"COPY items [db.system.name=postgresql db.operation.name=COPY db.collection.name=items db.query.summary=COPY items] "}},
		{name: "SSLRequest answered S: the rest is TLS", steps: []step{
			{l7.ToServer, []byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f}}, {l7.ToClient, []byte("S")},
			{l7.ToServer, msg('Q', "SELECT 1\x00")}, {l7.ToClient, cat(ok, rfq)},
		}},
		{name: "SSLRequest answered N: startup follows", steps: []step{
			{l7.ToServer, []byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f}}, {l7.ToClient, []byte("N")},
			{l7.ToServer, up}, {l7.ToClient, rfq},
			{l7.ToServer, msg('Q', "BEGIN\x00")}, {l7.ToClient, cat(msg('C', "BEGIN\x00"), rfq)},
		}, want: []string{"BEGIN [db.system.name=postgresql db.namespace=shop db.operation.name=BEGIN db.query.summary=BEGIN] "}},
		{name: "unknown prepared statement", conn: &l7.Conn{Midstream: true}, steps: []step{
			{l7.ToServer, cat(msg('B', "\x00old\x00"), msg('E', "\x00\x00\x00\x00\x00"), msg('S'))},
			{l7.ToClient, cat(msg('2'), ok, rfq)},
		}, want: []string{"postgresql [db.system.name=postgresql] "}},
		{name: "open at close", conn: &l7.Conn{Midstream: true}, steps: []step{
			{l7.ToServer, msg('Q', "SELECT pg_sleep(10)\x00")},
		}, drops: map[string]int{"incomplete": 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tally, xs := run(t, c.opt, c.conn, c.steps)
			var got []string
			for _, x := range xs {
				got = append(got, attrs(x))
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			if fmt.Sprint(tally.Drops) != fmt.Sprint(c.drops) && !(len(tally.Drops) == 0 && len(c.drops) == 0) {
				t.Errorf("drops %v, want %v", tally.Drops, c.drops)
			}
		})
	}
}

// A response longer than the capture: its DataRows go by in the bytes left
// out, and the tail still ends it.
func TestHeadAndTail(t *testing.T) {
	var resp []byte
	resp = append(resp, msg('2')...)
	for i := range 500 {
		resp = append(resp, msg('D', fmt.Sprintf("row %d with some bytes", i))...)
	}
	resp = cat(resp, msg('C', "SELECT 500\x00"), rfq)
	req := cat(msg('B', "\x00\x00"), msg('E', "\x00\x00\x00\x00\x00"), msg('S'))
	for _, head := range []int{8, 64, 200, 1024, 4096} {
		p := New(Options{})
		tally := relay.NewTally(p, "db.query.summary")
		ps := p.NewParser(&l7.Conn{Midstream: true})
		feed := func(dir l7.Dir, b []byte) {
			r := l7.Record{Dir: dir, Data: b, Total: uint64(len(b))}
			if len(b) > head {
				r.Data, r.Tail = b[:head], b[len(b)-min(32, len(b)-head):]
			}
			ps.Feed(&r, tally)
		}
		feed(l7.ToServer, cat(msg('P', "\x00SELECT * FROM big\x00\x00\x00"), msg('S')))
		feed(l7.ToClient, cat(msg('1'), rfq))
		for range 3 {
			feed(l7.ToServer, req)
			feed(l7.ToClient, resp)
		}
		if got := tally.String(); got != "db.client.operation.duration SELECT big = 3\n" || len(tally.Drops) != 0 {
			t.Errorf("head %d: %s drops %v", head, got, tally.Drops)
		}
	}
}

func TestStatementsBounded(t *testing.T) {
	p := New(Options{MaxStatements: 2})
	tally := relay.NewTally(p, "db.query.summary")
	ps := p.NewParser(&l7.Conn{Midstream: true})
	for i := range 3 {
		ps.Feed(&l7.Record{Dir: l7.ToServer, Data: msg('P', fmt.Sprintf("s%d\x00SELECT * FROM t%d\x00\x00\x00", i, i))}, tally)
		ps.Feed(&l7.Record{Dir: l7.ToClient, Data: msg('1')}, tally)
	}
	for i := range 3 {
		ps.Feed(&l7.Record{Dir: l7.ToServer, Data: cat(msg('B', fmt.Sprintf("\x00s%d\x00", i)), msg('E', "\x00\x00\x00\x00\x00"), msg('S'))}, tally)
		ps.Feed(&l7.Record{Dir: l7.ToClient, Data: cat(msg('2'), ok, rfq)}, tally)
	}
	want := "db.client.operation.duration - = 1\ndb.client.operation.duration SELECT t0 = 1\ndb.client.operation.duration SELECT t1 = 1\notelbee.db.statement.unknown - = 1\n"
	if got := tally.String(); got != want {
		t.Errorf("got\n%s", got)
	}
}

type nopSink struct{ n int }

func (s *nopSink) Exchange(*l7.Conn, *l7.Exchange) { s.n++ }
func (s *nopSink) Drop(*l7.Conn, string, int)      {}

func warmRecords() []l7.Record {
	return []l7.Record{
		{Dir: l7.ToServer, Data: cat(msg('B', "\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"), msg('E', "\x00\x00\x00\x00\x00"), msg('S'))},
		{Dir: l7.ToClient, Data: cat(msg('2'), msg('D', "\x00\x01\x00\x00\x00\x01x"), ok, rfq)},
		{Dir: l7.ToServer, Data: msg('Q', "SELECT a FROM t WHERE id = 1\x00")},
		{Dir: l7.ToClient, Data: cat(msg('T', "x"), msg('D', "x"), ok, rfq)},
	}
}

func TestWarmAllocations(t *testing.T) {
	p := New(Options{})
	ps := p.NewParser(&l7.Conn{Midstream: true})
	s := &nopSink{}
	ps.Feed(&l7.Record{Dir: l7.ToServer, Data: cat(msg('P', "s1\x00SELECT * FROM t WHERE id = $1\x00\x00\x00"), msg('S'))}, s)
	ps.Feed(&l7.Record{Dir: l7.ToClient, Data: cat(msg('1'), rfq)}, s)
	recs := warmRecords()
	for i := range recs {
		ps.Feed(&recs[i], s)
	}
	n := testing.AllocsPerRun(200, func() {
		for i := range recs {
			ps.Feed(&recs[i], s)
		}
	})
	if n != 0 || s.n != 2*202 {
		t.Fatalf("%v allocations per two exchanges, %d exchanges", n, s.n)
	}
}

func BenchmarkExchange(b *testing.B) {
	p := New(Options{})
	ps := p.NewParser(&l7.Conn{Midstream: true})
	s := &nopSink{}
	ps.Feed(&l7.Record{Dir: l7.ToServer, Data: cat(msg('P', "s1\x00SELECT * FROM t WHERE id = $1\x00\x00\x00"), msg('S'))}, s)
	ps.Feed(&l7.Record{Dir: l7.ToClient, Data: cat(msg('1'), rfq)}, s)
	recs := warmRecords()
	b.ReportAllocs()
	for b.Loop() {
		for i := range recs {
			ps.Feed(&recs[i], s)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(s.n), "ns/exchange")
}

func FuzzParser(f *testing.F) {
	f.Add(startup("user", "u", "database", "d"), cat(msg('R', "\x00\x00\x00\x00"), rfq), msg('Q', "SELECT 1\x00"), cat(ok, rfq), uint8(0))
	f.Add(cat(msg('P', "a\x00SELECT $1\x00\x00\x00"), msg('B', "\x00a\x00"), msg('E', "\x00\x00\x00\x00\x00"), msg('S')),
		cat(msg('1'), msg('2'), msg('E', errBody), rfq), msg('Q', "COPY t FROM STDIN\x00"), msg('G', "\x00\x00\x00"), uint8(3))
	f.Add([]byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f}, []byte("N"), startup("user", "x"), rfq, uint8(7))
	f.Fuzz(func(t *testing.T, c1, s1, c2, s2 []byte, head uint8) {
		for _, mid := range []bool{false, true} {
			p := New(Options{QueryText: true, MaxPending: 4, MaxStatements: 2})
			ps := p.NewParser(&l7.Conn{Midstream: mid})
			s := &nopSink{}
			for i, b := range [][]byte{c1, s1, c2, s2, c1, s1} {
				dir := l7.ToServer
				if i%2 == 1 {
					dir = l7.ToClient
				}
				r := l7.Record{Dir: dir, Data: b, Total: uint64(len(b))}
				if h := int(head); h > 0 && len(b) > h {
					r.Data, r.Tail = b[:h], b[len(b)-min(8, len(b)-h):]
				}
				ps.Feed(&r, s)
				if i == 3 {
					ps.Lost(dir, s)
				}
			}
			ps.Close(0, s)
		}
	})
}

// The server side records what it is handed, whatever the peer: the
// kernel gives up the server end of a connection whose client it tracks
// (Capture().ClientSide; capture's TestPrivilegedClientSidePolicy), so a
// local client is recorded once, by its own side.
func TestServerSide(t *testing.T) {
	if !New(Options{}).Capture().ClientSide {
		t.Error("postgresql must be recorded from the client's side")
	}
	for _, c := range []struct {
		peer string
		want int
	}{{"10.1.2.3:5555", 1}, {"127.0.0.1:5555", 1}, {"[::1]:5555", 1}, {"", 1}} {
		conn := &l7.Conn{Role: l7.RoleServer, Midstream: true}
		if c.peer != "" {
			conn.Peer = netip.MustParseAddrPort(c.peer)
		}
		_, xs := run(t, Options{}, conn, []step{{l7.ToServer, msg('Q', "SELECT 1\x00")}, {l7.ToClient, cat(ok, rfq)}})
		if len(xs) != c.want {
			t.Errorf("server side, peer %q: %d exchanges, want %d", c.peer, len(xs), c.want)
		}
	}
}

func TestSummariesBounded(t *testing.T) {
	p := New(Options{MaxSummaries: 1, MaxCollections: 1})
	tally := relay.NewTally(p, "db.query.summary", "db.collection.name")
	ps := p.NewParser(&l7.Conn{Midstream: true})
	for _, q := range []string{"SELECT * FROM a", "SELECT * FROM b", "SELECT * FROM a WHERE x = 1"} {
		ps.Feed(&l7.Record{Dir: l7.ToServer, Data: msg('Q', q+"\x00")}, tally)
		ps.Feed(&l7.Record{Dir: l7.ToClient, Data: cat(ok, rfq)}, tally)
	}
	want := "db.client.operation.duration SELECT a a = 2\ndb.client.operation.duration _OTHER _OTHER = 1\notelbee.db.query.overflow - - = 1\n"
	if got := tally.String(); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
}

func TestTLSTakesOver(t *testing.T) {
	c := &l7.Conn{Role: l7.RoleClient, Source: l7.SourceSyscall}
	p := New(Options{})
	tally := relay.NewTally(p, "db.namespace", "db.query.summary")
	ps := p.NewParser(c)
	feed := func(dir l7.Dir, b []byte) { ps.Feed(&l7.Record{Dir: dir, Data: b, Total: uint64(len(b))}, tally) }
	feed(l7.ToServer, []byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f})
	feed(l7.ToClient, []byte("S"))
	feed(l7.ToServer, []byte("\x16\x03\x01 ciphertext"))
	c.Source = l7.SourceOpenSSL
	feed(l7.ToServer, startup("user", "u", "database", "shop"))
	feed(l7.ToClient, rfq)
	feed(l7.ToServer, msg('Q', "SELECT * FROM t\x00"))
	feed(l7.ToClient, cat(ok, rfq))
	if got := tally.String(); got != "db.client.operation.duration shop SELECT t = 1\n" {
		t.Errorf("got %q", got)
	}
}

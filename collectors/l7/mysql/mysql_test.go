package mysql

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
)

func pkt(seq byte, body ...string) []byte {
	b := strings.Join(body, "")
	h := []byte{byte(len(b)), byte(len(b) >> 8), byte(len(b) >> 16), seq}
	return append(h, b...)
}

func cat(m ...[]byte) []byte {
	var b []byte
	for _, x := range m {
		b = append(b, x...)
	}
	return b
}

func le32(v uint32) string { return string(binary.LittleEndian.AppendUint32(nil, v)) }
func le16(v uint16) string { return string(binary.LittleEndian.AppendUint16(nil, v)) }

// greeting of a server with the given capabilities and version.
func greeting(version string, caps uint32) []byte {
	return pkt(0, "\x0a", version, "\x00", le32(7), "abcdefgh", "\x00", le16(uint16(caps)), "\x21", le16(2), le16(uint16(caps>>16)), "\x15", strings.Repeat("\x00", 10), "ijklmnopqrst\x00", "mysql_native_password\x00")
}

const (
	serverCaps = capProtocol41 | capSecureConn | capConnectWithDB | capPluginAuthLenc | capDeprecateEOF | capSSL
	clientCaps = capProtocol41 | capSecureConn | capConnectWithDB | capPluginAuthLenc
)

func handshake(caps uint32, db string) []byte {
	return pkt(1, le32(caps), le32(1<<24), "\x21", strings.Repeat("\x00", 23), "root\x00", "\x14", strings.Repeat("x", 20), db, "\x00", "mysql_native_password\x00")
}

var (
	okPkt  = func(seq byte) []byte { return pkt(seq, "\x00\x00\x00", le16(2), le16(0)) }
	eofPkt = func(seq byte, status uint16) []byte { return pkt(seq, "\xfe", le16(0), le16(status)) }
	errPkt = func(seq byte) []byte {
		return pkt(seq, "\xff", le16(1146), "#42S02", "Table 'shop.nope' doesn't exist")
	}
	colDef = func(seq byte) []byte {
		return pkt(seq, "\x03def\x04shop\x05items\x05items\x02id\x02id\x0c", "\x3f\x00", le32(11), "\x03", "\x00\x00", "\x00", "\x00\x00")
	}
	textRow = func(seq byte, v string) []byte { return pkt(seq, string(rune(len(v))), v) }
)

func resultSet(first byte, cols, rows int, deprecate bool) []byte {
	seq := first
	next := func() byte { seq++; return seq - 1 }
	b := pkt(next(), string(rune(cols)))
	for range cols {
		b = append(b, colDef(next())...)
	}
	if !deprecate {
		b = append(b, eofPkt(next(), 2)...)
	}
	for i := range rows {
		b = append(b, textRow(next(), fmt.Sprint(i))...)
	}
	if deprecate {
		return append(b, pkt(next(), "\xfe\x00\x00", le16(2), le16(0))...)
	}
	return append(b, eofPkt(next(), 2)...)
}

type step struct {
	dir  l7.Dir
	data []byte
}

func attrs(x *l7.Exchange) string {
	var b []string
	for _, a := range x.Attrs[:x.NAttr] {
		b = append(b, fmt.Sprintf("%s=%s", a.Key, a.Value.Emit()))
	}
	return x.SpanName + " [" + strings.Join(b, " ") + "] " + x.Error
}

func TestParser(t *testing.T) {
	login := []step{
		{l7.ToClient, greeting("10.11.6-MariaDB-0+deb12u1", serverCaps)},
		{l7.ToServer, handshake(clientCaps, "shop")},
		{l7.ToClient, okPkt(2)},
	}
	for _, c := range []struct {
		name  string
		conn  *l7.Conn
		steps []step
		want  []string
		drops map[string]int
	}{
		{name: "query with a result set", steps: append(login[:3:3],
			step{l7.ToServer, pkt(0, "\x03SELECT id FROM items WHERE id = 3")},
			step{l7.ToClient, resultSet(1, 1, 3, false)}),
			want: []string{"SELECT items [db.system.name=mariadb db.namespace=shop db.operation.name=SELECT db.collection.name=items db.query.summary=SELECT items] "}},
		{name: "error with its code", steps: append(login[:3:3],
			step{l7.ToServer, pkt(0, "\x03SELECT * FROM nope")}, step{l7.ToClient, errPkt(1)}),
			want: []string{"SELECT nope [db.system.name=mariadb db.namespace=shop db.operation.name=SELECT db.collection.name=nope db.query.summary=SELECT nope db.response.status_code=1146] 1146"}},
		{name: "prepare and execute, deprecated EOF", steps: []step{
			{l7.ToClient, greeting("8.0.36", serverCaps)},
			{l7.ToServer, handshake(clientCaps|capDeprecateEOF, "app")}, {l7.ToClient, okPkt(2)},
			{l7.ToServer, pkt(0, "\x16SELECT id FROM items WHERE id = ?")},
			{l7.ToClient, cat(pkt(1, "\x00", le32(5), le16(1), le16(1), "\x00", le16(0)), colDef(2), colDef(3))},
			{l7.ToServer, pkt(0, "\x17", le32(5), "\x00", le32(1), "\x00\x01\x03\x00", le32(3))},
			{l7.ToClient, resultSet(1, 1, 2, true)},
			{l7.ToServer, pkt(0, "\x19", le32(5))},
			{l7.ToServer, pkt(0, "\x17", le32(5), "\x00", le32(1))},
			{l7.ToClient, okPkt(1)},
		}, want: []string{
			"SELECT items [db.system.name=mysql db.namespace=app db.operation.name=SELECT db.collection.name=items db.query.summary=SELECT items] ",
			"mysql [db.system.name=mysql db.namespace=app] ",
		}},
		{name: "failed prepare is a failed operation", steps: append(login[:3:3],
			step{l7.ToServer, pkt(0, "\x16SELECT * FROM nope WHERE id = ?")}, step{l7.ToClient, errPkt(1)}),
			want: []string{"SELECT nope [db.system.name=mariadb db.namespace=shop db.operation.name=SELECT db.collection.name=nope db.query.summary=SELECT nope db.response.status_code=1146] 1146"}},
		{name: "init db changes the namespace; ping is no operation", steps: append(login[:3:3],
			step{l7.ToServer, pkt(0, "\x02other")}, step{l7.ToClient, okPkt(1)},
			step{l7.ToServer, pkt(0, "\x0e")}, step{l7.ToClient, okPkt(1)},
			step{l7.ToServer, pkt(0, "\x03DELETE FROM t")}, step{l7.ToClient, okPkt(1)}),
			want: []string{"DELETE t [db.system.name=mariadb db.namespace=other db.operation.name=DELETE db.collection.name=t db.query.summary=DELETE t] "}},
		{name: "multiple results", steps: append(login[:3:3],
			step{l7.ToServer, pkt(0, "\x03INSERT INTO t VALUES (1); SELECT a FROM t")},
			step{l7.ToClient, pkt(1, "\x01\x00", le16(2|statusMoreResults), le16(0))},
			step{l7.ToClient, resultSet(2, 1, 1, false)}),
			want: []string{"INSERT t SELECT t [db.system.name=mariadb db.namespace=shop db.collection.name=t db.query.summary=INSERT t SELECT t] "}},
		{name: "TLS requested: left alone", steps: []step{
			{l7.ToClient, greeting("8.0.36", serverCaps)},
			{l7.ToServer, pkt(1, le32(clientCaps|capSSL), le32(1<<24), "\x21", strings.Repeat("\x00", 23))},
			{l7.ToServer, pkt(0, "\x03SELECT 1")}, {l7.ToClient, okPkt(1)},
		}},
		{name: "midstream, deprecated EOF learnt from the rows", conn: &l7.Conn{Midstream: true}, steps: []step{
			{l7.ToServer, pkt(0, "\x03SELECT id FROM items")}, {l7.ToClient, resultSet(1, 1, 2, true)},
			{l7.ToServer, pkt(0, "\x03SELECT id FROM items")}, {l7.ToClient, resultSet(1, 1, 0, true)},
		}, want: []string{
			"SELECT items [db.system.name=mysql db.operation.name=SELECT db.collection.name=items db.query.summary=SELECT items] ",
			"SELECT items [db.system.name=mysql db.operation.name=SELECT db.collection.name=items db.query.summary=SELECT items] ",
		}},
		{name: "open at close", conn: &l7.Conn{Midstream: true}, steps: []step{
			{l7.ToServer, pkt(0, "\x03SELECT sleep(10)")},
		}, drops: map[string]int{"incomplete": 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := New(Options{})
			tally := relay.NewTally(p)
			var got []string
			tally.Check = func(x *l7.Exchange) {
				if x.Metric == 0 {
					got = append(got, attrs(x))
				}
			}
			conn := c.conn
			if conn == nil {
				conn = &l7.Conn{}
			}
			ps := p.NewParser(conn)
			for _, s := range c.steps {
				ps.Feed(&l7.Record{Dir: s.dir, Data: s.data, Total: uint64(len(s.data))}, tally)
			}
			ps.Close(0, tally)
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			if len(tally.Drops)+len(c.drops) > 0 && fmt.Sprint(tally.Drops) != fmt.Sprint(c.drops) {
				t.Errorf("drops %v, want %v", tally.Drops, c.drops)
			}
		})
	}
}

func TestHeadAndTail(t *testing.T) {
	for _, deprecate := range []bool{false, true} {
		for _, head := range []int{4, 16, 100, 1024} {
			p := New(Options{})
			tally := relay.NewTally(p, "db.query.summary")
			ps := p.NewParser(&l7.Conn{Midstream: true})
			for range 3 {
				for _, r := range []l7.Record{
					{Dir: l7.ToServer, Data: pkt(0, "\x03SELECT id FROM big")},
					{Dir: l7.ToClient, Data: resultSet(1, 1, 200, deprecate)},
				} {
					if b := r.Data; len(b) > head {
						r.Total = uint64(len(b))
						r.Data, r.Tail = b[:head], b[len(b)-min(32, len(b)-head):]
					} else {
						r.Total = uint64(len(b))
					}
					ps.Feed(&r, tally)
				}
			}
			if got := tally.String(); got != "db.client.operation.duration SELECT big = 3\n" || len(tally.Drops) != 0 {
				t.Errorf("deprecate %v head %d: %s drops %v", deprecate, head, got, tally.Drops)
			}
		}
	}
}

type nopSink struct{ n int }

func (s *nopSink) Exchange(*l7.Conn, *l7.Exchange) { s.n++ }
func (s *nopSink) Drop(*l7.Conn, string, int)      {}

func warm() (l7.Parser, []l7.Record, *nopSink) {
	p := New(Options{})
	ps := p.NewParser(&l7.Conn{Midstream: true})
	s := &nopSink{}
	ps.Feed(&l7.Record{Dir: l7.ToServer, Data: pkt(0, "\x16SELECT id FROM items WHERE id = ?")}, s)
	ps.Feed(&l7.Record{Dir: l7.ToClient, Data: cat(pkt(1, "\x00", le32(5), le16(0), le16(0), "\x00", le16(0)))}, s)
	recs := []l7.Record{
		{Dir: l7.ToServer, Data: pkt(0, "\x17", le32(5), "\x00", le32(1))},
		{Dir: l7.ToClient, Data: resultSet(1, 1, 2, false)},
		{Dir: l7.ToServer, Data: pkt(0, "\x03SELECT id FROM items WHERE id = 4")},
		{Dir: l7.ToClient, Data: resultSet(1, 1, 1, false)},
	}
	for i := range recs {
		ps.Feed(&recs[i], s)
	}
	return ps, recs, s
}

func TestWarmAllocations(t *testing.T) {
	ps, recs, s := warm()
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
	ps, recs, s := warm()
	s.n = 0
	b.ReportAllocs()
	for b.Loop() {
		for i := range recs {
			ps.Feed(&recs[i], s)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(s.n), "ns/exchange")
}

func FuzzParser(f *testing.F) {
	f.Add(greeting("10.11.6-MariaDB", serverCaps), handshake(clientCaps, "shop"), pkt(0, "\x03SELECT 1"), resultSet(1, 1, 2, false), uint8(0))
	f.Add(okPkt(2), pkt(0, "\x16SELECT ?"), pkt(0, "\x17\x01\x00\x00\x00"), cat(pkt(1, "\x00\x01\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00"), colDef(2), colDef(3)), uint8(9))
	f.Fuzz(func(t *testing.T, s1, c1, c2, s2 []byte, head uint8) {
		for _, mid := range []bool{false, true} {
			p := New(Options{QueryText: true, MaxPending: 4, MaxStatements: 2})
			ps := p.NewParser(&l7.Conn{Midstream: mid})
			s := &nopSink{}
			for i, b := range [][]byte{s1, c1, s1, c2, s2, c2, s2} {
				dir := l7.ToServer
				if i == 0 || i == 2 || i == 4 || i == 6 {
					dir = l7.ToClient
				}
				r := l7.Record{Dir: dir, Data: b, Total: uint64(len(b))}
				if h := int(head); h > 0 && len(b) > h {
					r.Data, r.Tail = b[:h], b[len(b)-min(8, len(b)-h):]
				}
				ps.Feed(&r, s)
				if i == 4 {
					ps.Lost(dir, s)
				}
			}
			ps.Close(0, s)
		}
	})
}

// The server side records what it is handed, whatever the peer (the
// kernel leaves out the server end of a tracked client's connection).
func TestServerSide(t *testing.T) {
	if !New(Options{}).Capture().ClientSide {
		t.Error("mysql must be recorded from the client's side")
	}
	for _, c := range []struct {
		peer string
		want int
	}{{"10.1.2.3:5555", 1}, {"127.0.0.1:5555", 1}, {"", 1}} {
		conn := &l7.Conn{Role: l7.RoleServer, Midstream: true}
		if c.peer != "" {
			conn.Peer = netip.MustParseAddrPort(c.peer)
		}
		p := New(Options{})
		s := &nopSink{}
		ps := p.NewParser(conn)
		ps.Feed(&l7.Record{Dir: l7.ToServer, Data: pkt(0, "\x03SELECT 1")}, s)
		ps.Feed(&l7.Record{Dir: l7.ToClient, Data: okPkt(1)}, s)
		if s.n != c.want {
			t.Errorf("server side, peer %q: %d exchanges, want %d", c.peer, s.n, c.want)
		}
	}
}

// The TLS data source's plaintext of a connection begins after the
// greeting and the SSL request, with the full handshake response.
func TestTLSPlaintext(t *testing.T) {
	p := New(Options{})
	tally := relay.NewTally(p, "db.namespace", "db.query.summary")
	ps := p.NewParser(&l7.Conn{Role: l7.RoleClient, Source: l7.SourceOpenSSL})
	for _, r := range []step{
		{l7.ToServer, handshake(clientCaps|capSSL, "shop")}, {l7.ToClient, okPkt(3)},
		{l7.ToServer, pkt(0, "\x03SELECT id FROM items")}, {l7.ToClient, resultSet(1, 1, 2, false)},
	} {
		ps.Feed(&l7.Record{Dir: r.dir, Data: r.data, Total: uint64(len(r.data))}, tally)
	}
	if got := tally.String(); got != "db.client.operation.duration shop SELECT items = 1\n" {
		t.Errorf("got %s", got)
	}
}

// The TLS data source may take over the very connection the syscalls
// classified on its greeting: the parse resumes at the handshake response.
func TestTLSTakesOver(t *testing.T) {
	p := New(Options{})
	tally := relay.NewTally(p, "db.namespace", "db.query.summary")
	c := &l7.Conn{Role: l7.RoleClient, Source: l7.SourceSyscall}
	ps := p.NewParser(c)
	feed := func(dir l7.Dir, b []byte) { ps.Feed(&l7.Record{Dir: dir, Data: b, Total: uint64(len(b))}, tally) }
	feed(l7.ToClient, greeting("10.11.6-MariaDB", serverCaps))
	feed(l7.ToServer, pkt(1, le32(clientCaps|capSSL), le32(1<<24), "\x21", strings.Repeat("\x00", 23)))
	feed(l7.ToServer, []byte("\x16\x03\x01 ciphertext"))
	c.Source = l7.SourceOpenSSL
	feed(l7.ToServer, handshake(clientCaps|capSSL, "shop"))
	feed(l7.ToClient, okPkt(3))
	feed(l7.ToServer, pkt(0, "\x03SELECT id FROM items"))
	feed(l7.ToClient, resultSet(1, 1, 2, false))
	if got := tally.String(); got != "db.client.operation.duration shop SELECT items = 1\n" {
		t.Errorf("got %q", got)
	}
}

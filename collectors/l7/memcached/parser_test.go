package memcached

import (
	"fmt"
	"strings"
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
)

type sink struct {
	got   []string
	drops map[string]int
}

func (s *sink) Exchange(_ *l7.Conn, x *l7.Exchange) {
	var op, st string
	for _, a := range x.Attrs[:x.NAttr] {
		switch a.Key {
		case "db.operation.name":
			op = a.Value.AsString()
		case "db.response.status_code":
			st = "!" + a.Value.AsString()
		}
	}
	if x.Metric == MetricNoReply {
		op = "noreply:" + op
	}
	if x.Error != "" {
		st += "?" + x.Error
	}
	s.got = append(s.got, fmt.Sprintf("%s%s", op, st))
}

func (s *sink) Drop(_ *l7.Conn, reason string, n int) {
	if s.drops == nil {
		s.drops = map[string]int{}
	}
	s.drops[reason] += n
}

type step struct {
	dir        l7.Dir
	data, tail string
	total      int
}

func req(s string) step { return step{dir: l7.ToServer, data: s} }
func rsp(s string) step { return step{dir: l7.ToClient, data: s} }

func run(c *l7.Conn, steps []step) *sink {
	s := &sink{}
	p := New().NewParser(c)
	for i, st := range steps {
		r := l7.Record{Dir: st.dir, Data: []byte(st.data), Total: uint64(len(st.data) + len(st.tail)), Start: uint64(2 * i), End: uint64(2*i + 1)}
		if st.tail != "" {
			r.Tail = []byte(st.tail)
		}
		if st.total > 0 {
			r.Total = uint64(st.total)
		}
		p.Feed(&r, s)
	}
	p.Close(0, s)
	return s
}

func TestParser(t *testing.T) {
	big := strings.Repeat("x", 200000)
	tests := []struct {
		name  string
		steps []step
		want  string
		drops string
	}{
		{"set get", []step{req("set k 0 0 5\r\nhello\r\n"), rsp("STORED\r\n"), req("get k\r\n"), rsp("VALUE k 0 5\r\nhello\r\nEND\r\n")}, "set get", ""},
		{"multi-key gets, a miss", []step{req("gets a b c\r\n"), rsp("VALUE a 0 1 7\r\n1\r\nVALUE c 0 2 8\r\n22\r\nEND\r\n"), req("get z\r\n"), rsp("END\r\n")}, "gets get", ""},
		{"noreply does not shift pairing", []step{
			req("set a 0 0 1 noreply\r\n1\r\ndelete b noreply\r\nincr n 1\r\n"), rsp("NOT_FOUND\r\n"),
			req("add a 0 0 1\r\n2\r\n"), rsp("NOT_STORED\r\n"),
		}, "noreply:set noreply:delete incr!NOT_FOUND add!NOT_STORED", ""},
		{"cas, touch, replace, append, prepend, decr", []step{
			req("cas k 0 0 1 99\r\nv\r\ntouch k 10\r\nreplace k 0 0 2\r\nvv\r\nappend k 0 0 1\r\na\r\nprepend k 0 0 1\r\np\r\ndecr n 3\r\n"),
			rsp("EXISTS\r\nTOUCHED\r\nSTORED\r\nSTORED\r\nSTORED\r\n7\r\n"),
		}, "cas!EXISTS touch replace append prepend decr", ""},
		{"errors", []step{req("bogus\r\nset k 0 0 notanumber\r\n"), rsp("ERROR\r\nCLIENT_ERROR bad command line format\r\n")}, "_OTHER!ERROR?ERROR", "malformed=1"},
		{"server error", []step{req("set k 0 0 1\r\nv\r\n"), rsp("SERVER_ERROR out of memory storing object\r\n")}, "set!SERVER_ERROR?SERVER_ERROR", ""},
		{"stats, version, flush_all, quit", []step{
			req("stats\r\nversion\r\nflush_all\r\n"), rsp("STAT pid 1\r\nSTAT uptime 2\r\nEND\r\nVERSION 1.6.18\r\nOK\r\n"), req("quit\r\n"),
		}, "stats version flush_all noreply:quit", ""},
		{"meta", []step{
			req("mg k v\r\nmg z v\r\nms k 2 T0\r\nhi\r\nmd k\r\nmn\r\n"), rsp("VA 2\r\nhi\r\nEN\r\nHD\r\nHD\r\nMN\r\n"),
		}, "mg mg!EN ms md mn", ""},
		{"cut everywhere", []step{req("get"), req(" k\r"), req("\nset k 0 0 3\r\nab"), req("c\r\n"), rsp("VAL"), rsp("UE k 0 3\r\nab"), rsp("c\r\nEN"), rsp("D\r\nSTO"), rsp("RED\r\n")}, "get set", ""},
		{"large values past the capture", []step{
			{dir: l7.ToServer, data: ("set k 0 0 200000\r\n" + big)[:4096], total: 200000 + 20, tail: big[:30] + "\r\n"}, rsp("STORED\r\n"),
			req("get k\r\n"), {dir: l7.ToClient, data: ("VALUE k 0 200000\r\n" + big)[:4096], total: 200000 + 25, tail: big[:27] + "\r\nEND\r\n"},
		}, "set get", ""},
		{"a lost reply gives up what waits, resumes at the next turn", []step{
			req("get a b\r\nget c\r\n"), {dir: l7.ToClient, data: "VALUE a 0 1\r\n1\r\nVALUE b", total: 5000}, rsp("END\r\n"),
			req("get d\r\n"), rsp("END\r\n"),
		}, "get", "incomplete=2"},
		{"unpaired", []step{rsp("STORED\r\n"), req("get d\r\n"), rsp("END\r\n")}, "get", "unpaired=1"},
		{"close with a command waiting", []step{req("get d\r\n")}, "", "incomplete=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(&l7.Conn{}, tt.steps)
			if got := strings.Join(s.got, " "); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			var d []string
			for _, k := range []string{"lost", "incomplete", "malformed", "overflow", "unpaired"} {
				if s.drops[k] > 0 {
					d = append(d, fmt.Sprintf("%s=%d", k, s.drops[k]))
				}
			}
			if got := strings.Join(d, " "); got != tt.drops {
				t.Errorf("drops %q, want %q", got, tt.drops)
			}
		})
	}
}

func FuzzParser(f *testing.F) {
	f.Add([]byte("set k 0 0 5 noreply\r\nhello\r\nget k l\r\n"), []byte("VALUE k 0 5\r\nhello\r\nEND\r\n"), uint16(7), uint16(9), uint16(0))
	f.Add([]byte("mg k v\r\nstats\r\n"), []byte("VA 2\r\nhi\r\nSTAT a 1\r\nEND\r\n"), uint16(3), uint16(4), uint16(10))
	f.Fuzz(func(t *testing.T, reqs, rsps []byte, i, j, gap uint16) {
		whole := feedAll(reqs, rsps, len(reqs), len(rsps), 0)
		cut := feedAll(reqs, rsps, int(i)%(len(reqs)+1), int(j)%(len(rsps)+1), 0)
		if len(whole.drops) == 0 && len(cut.drops) == 0 && strings.Join(whole.got, " ") != strings.Join(cut.got, " ") {
			t.Fatalf("whole %q, cut %q", whole.got, cut.got)
		}
		feedAll(reqs, rsps, int(i)%(len(reqs)+1), int(j)%(len(rsps)+1), int(gap))
	})
}

func feedAll(reqs, rsps []byte, i, j, gap int) *sink {
	s := &sink{}
	p := New().NewParser(&l7.Conn{})
	rec := func(d l7.Dir, b []byte) {
		r := l7.Record{Dir: d, Data: b, Total: uint64(len(b))}
		if h := gap / 2; gap > 0 && len(b) > 2*h {
			r.Data, r.Tail = b[:h], b[len(b)-h:]
		}
		p.Feed(&r, s)
	}
	rec(l7.ToServer, reqs[:i])
	rec(l7.ToServer, reqs[i:])
	rec(l7.ToClient, rsps[:j])
	rec(l7.ToClient, rsps[j:])
	p.Lost(l7.ToServer, s)
	rec(l7.ToClient, rsps)
	rec(l7.ToServer, reqs)
	rec(l7.ToClient, rsps)
	p.Close(0, s)
	return s
}

type nopSink struct{ n int }

func (s *nopSink) Exchange(*l7.Conn, *l7.Exchange) { s.n++ }
func (s *nopSink) Drop(*l7.Conn, string, int)      {}

// BenchmarkExchange: a set and a get on a warm connection, 0 allocations.
func BenchmarkExchange(b *testing.B) {
	recs := []l7.Record{
		{Dir: l7.ToServer, Data: []byte("set key:000000001 0 0 3\r\nxxx\r\n")},
		{Dir: l7.ToClient, Data: []byte("STORED\r\n")},
		{Dir: l7.ToServer, Data: []byte("get key:000000001\r\n")},
		{Dir: l7.ToClient, Data: []byte("VALUE key:000000001 0 3\r\nxxx\r\nEND\r\n")},
	}
	for i := range recs {
		recs[i].Total = uint64(len(recs[i].Data))
	}
	p := New().NewParser(&l7.Conn{})
	s := &nopSink{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range recs {
			p.Feed(&recs[k], s)
		}
	}
	b.StopTimer()
	if s.n != 2*b.N {
		b.Fatalf("%d exchanges, want %d", s.n, 2*b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(s.n), "ns/exchange")
}

func TestCapturePolicy(t *testing.T) {
	if !New().Capture().ClientSide {
		t.Error("memcached must be recorded from the client's side")
	}
}

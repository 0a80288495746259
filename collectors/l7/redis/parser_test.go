package redis

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
)

// rec is what a test keeps of one exchange.
type rec struct {
	metric   int
	op, ns   string
	status   string
	err      string
	messages int64
	req, rsp int64
}

func (r rec) String() string {
	return fmt.Sprintf("{m%d %s ns=%s st=%s err=%s msgs=%d %d/%d}", r.metric, r.op, r.ns, r.status, r.err, r.messages, r.req, r.rsp)
}

type sink struct {
	got   []rec
	drops map[string]int
}

func (s *sink) Exchange(_ *l7.Conn, x *l7.Exchange) {
	r := rec{metric: x.Metric, err: x.Error, messages: x.Messages, req: x.RequestSize, rsp: x.ResponseSize}
	for _, a := range x.Attrs[:x.NAttr] {
		switch a.Key {
		case "db.operation.name":
			r.op = a.Value.AsString()
		case "db.namespace":
			r.ns = a.Value.AsString()
		case "db.response.status_code":
			r.status = a.Value.AsString()
		}
	}
	if x.Metric == MetricDuration && x.SpanName != r.op {
		panic("span name " + x.SpanName + " != " + r.op)
	}
	s.got = append(s.got, r)
}

func (s *sink) Drop(_ *l7.Conn, reason string, n int) {
	if s.drops == nil {
		s.drops = map[string]int{}
	}
	s.drops[reason] += n
}

// cmd encodes a command as clients send it.
func cmd(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

type step struct {
	dir  l7.Dir
	data string
	// total, when set, is the call's size: the bytes past data (and before
	// tail) were not captured.
	total int
	tail  string
}

func run(t *testing.T, c *l7.Conn, steps []step) *sink {
	t.Helper()
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

func req(s string) step { return step{dir: l7.ToServer, data: s} }
func rsp(s string) step { return step{dir: l7.ToClient, data: s} }

func ops(s *sink) string {
	var b []string
	for _, r := range s.got {
		v := r.op
		if r.metric == MetricPubSub {
			v = fmt.Sprintf("msg%d", r.messages)
		}
		if r.ns != "" {
			v += "@" + r.ns
		}
		if r.status != "" {
			v += "!" + r.status
		}
		if r.err != r.status {
			v += "?" + r.err
		}
		b = append(b, v)
	}
	return strings.Join(b, " ")
}

func drops(s *sink) string {
	if len(s.drops) == 0 {
		return ""
	}
	var b []string
	for _, k := range []string{"lost", "incomplete", "malformed", "overflow", "unpaired"} {
		if n := s.drops[k]; n > 0 {
			b = append(b, fmt.Sprintf("%s=%d", k, n))
		}
	}
	return strings.Join(b, " ")
}

func TestParser(t *testing.T) {
	big := strings.Repeat("v", 100000)
	tests := []struct {
		name      string
		midstream bool
		steps     []step
		want      string
		drops     string
	}{
		{
			name:  "set get",
			steps: []step{req(cmd("SET", "k", "v")), rsp("+OK\r\n"), req(cmd("get", "k")), rsp("$1\r\nv\r\n")},
			want:  "SET@0 GET@0",
		},
		{
			name: "pipeline in one record each way",
			steps: []step{
				req(cmd("SET", "a", "1") + cmd("INCR", "a") + cmd("LRANGE", "l", "0", "-1")),
				rsp("+OK\r\n:2\r\n*2\r\n$1\r\nx\r\n$-1\r\n"),
			},
			want: "SET@0 INCR@0 LRANGE@0",
		},
		{
			name: "pipeline, replies split across records",
			steps: []step{
				req(cmd("GET", "a") + cmd("GET", "b")[:7]), req(cmd("GET", "b")[7:]),
				rsp("$3\r\nab"), rsp("c\r\n$-"), rsp("1\r\n"),
			},
			want: "GET@0 GET@0",
		},
		{
			name:  "error prefix",
			steps: []step{req(cmd("INCR", "h")), rsp("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")},
			want:  "INCR@0!WRONGTYPE",
		},
		{
			name:  "unknown error prefix",
			steps: []step{req(cmd("EVAL", "return redis.error_reply('MINE x')", "0")), rsp("-MINE x\r\n")},
			want:  "EVAL@0!_OTHER",
		},
		{
			name:  "RESP3 blob error",
			steps: []step{req(cmd("GET", "a")), rsp("!21\r\nSYNTAX invalid syntax\r\n")},
			want:  "GET@0!_OTHER",
		},
		{
			name: "select",
			steps: []step{
				req(cmd("SELECT", "3")), rsp("+OK\r\n"), req(cmd("GET", "a")), rsp("$-1\r\n"),
				req(cmd("SELECT", "99999")), rsp("-ERR DB index is out of range\r\n"), req(cmd("PING")), rsp("+PONG\r\n"),
			},
			want: "SELECT@3 GET@3 SELECT@3!ERR PING@3",
		},
		{
			name:      "midstream: namespace unknown until SELECT",
			midstream: true,
			steps:     []step{rsp("K\r\n"), req(cmd("GET", "a")), rsp("$-1\r\n"), req(cmd("SELECT", "1")), rsp("+OK\r\n"), req(cmd("GET", "a")), rsp("$-1\r\n")},
			want:      "GET SELECT@1 GET@1",
		},
		{
			name: "multi exec",
			steps: []step{
				req(cmd("MULTI")), rsp("+OK\r\n"),
				req(cmd("SET", "a", "1") + cmd("INCR", "a")), rsp("+QUEUED\r\n+QUEUED\r\n"),
				req(cmd("EXEC")), rsp("*2\r\n+OK\r\n:2\r\n"),
			},
			want: "MULTI@0 SET@0 INCR@0 EXEC@0",
		},
		{
			name: "multi with an error aborts",
			steps: []step{
				req(cmd("MULTI") + cmd("NOSUCH") + cmd("EXEC")),
				rsp("+OK\r\n-ERR unknown command 'NOSUCH'\r\n-EXECABORT Transaction discarded because of previous errors.\r\n"),
			},
			want: "MULTI@0 _OTHER@0!ERR EXEC@0!EXECABORT",
		},
		{
			name: "RESP2 pub/sub: confirmations pair, messages count",
			steps: []step{
				req(cmd("SUBSCRIBE", "c1", "c2")),
				rsp("*3\r\n$9\r\nsubscribe\r\n$2\r\nc1\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\nc2\r\n:2\r\n"),
				rsp("*3\r\n$7\r\nmessage\r\n$2\r\nc1\r\n$5\r\nhello\r\n"),
				rsp("*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nc1\r\n$2\r\nhi\r\n"),
				req(cmd("PING")), rsp("*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
				req(cmd("UNSUBSCRIBE")),
				rsp("*3\r\n$11\r\nunsubscribe\r\n$2\r\nc1\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$2\r\nc2\r\n:0\r\n"),
				req(cmd("GET", "a")), rsp("$-1\r\n"),
			},
			want: "SUBSCRIBE@0 msg1 msg1 PING@0 UNSUBSCRIBE@0 GET@0",
		},
		{
			name: "RESP3: hello map, pushes are not replies",
			steps: []step{
				req(cmd("HELLO", "3")), rsp("%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"),
				req(cmd("SUBSCRIBE", "c")), rsp(">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"),
				rsp(">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"),
				req(cmd("GET", "k")), rsp(">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\ny\r\n_\r\n"),
				rsp(">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"),
				req(cmd("HGETALL", "h")), rsp("%1\r\n$1\r\nf\r\n,1.5\r\n"),
				req(cmd("SISMEMBER", "s", "m")), rsp("#t\r\n"),
			},
			want: "HELLO@0 SUBSCRIBE@0 msg1 msg1 GET@0 HGETALL@0 SISMEMBER@0",
		},
		{
			name:  "RESP3 attribute precedes the reply",
			steps: []step{req(cmd("GET", "a")), rsp("|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.19\r\n$1\r\nv\r\n"), req(cmd("PING")), rsp("+PONG\r\n")},
			want:  "GET@0 PING@0",
		},
		{
			name:  "inline commands",
			steps: []step{req("ping\r\n"), rsp("+PONG\r\n"), req("\r\nset  k v\r\n"), rsp("+OK\r\n")},
			want:  "PING@0 SET@0",
		},
		{
			name:  "unknown and overlong command names",
			steps: []step{req(cmd("FOO.BAR", "x") + cmd(strings.Repeat("G", 40))), rsp("-ERR unknown command\r\n-ERR unknown command\r\n")},
			want:  "_OTHER@0!ERR _OTHER@0!ERR",
		},
		{
			name: "large value: the uncaptured middle is skipped by its length",
			steps: []step{
				{dir: l7.ToServer, data: cmd("SET", "k", big)[:4096], total: len(cmd("SET", "k", big)), tail: big[:30] + "\r\n"},
				rsp("+OK\r\n"),
				req(cmd("GET", "k")),
				{dir: l7.ToClient, data: ("$100000\r\n" + big)[:4096], total: 100000 + 11, tail: big[:62] + "\r\n"},
				req(cmd("GET", "k")),
				{dir: l7.ToClient, data: ("$100000\r\n" + big)[:4096], total: 100000 + 11},
				rsp("\r\n"),
			},
			want: "SET@0 GET@0 GET@0",
		},
		{
			name: "headers lost in the gap: waiting commands dropped, resumes at the next turn",
			steps: []step{
				req(cmd("GET", "a") + cmd("GET", "b")),
				{dir: l7.ToClient, data: "*1000\r\n$1\r\na\r\n", total: 9000},
				rsp("$1\r\nz\r\n"),
				req(cmd("GET", "c")), rsp("$-1\r\n"),
			},
			want:  "GET@0",
			drops: "incomplete=2",
		},
		{
			name: "commands lost in the gap: each reply read stands for one",
			steps: []step{
				{dir: l7.ToServer, data: cmd("GET", "a") + cmd("GET", "b")[:5], total: 3 * len(cmd("GET", "a"))},
				rsp("$-1\r\n$-1\r\n"), rsp("$-1\r\n"),
				req(cmd("PING")), rsp("+PONG\r\n"),
			},
			want:  "GET@0 PING@0",
			drops: "incomplete=2",
		},
		{
			name: "malformed reply",
			steps: []step{
				req(cmd("GET", "a")), rsp("?what\r\n"),
				req(cmd("GET", "c")), rsp("$-1\r\n"),
			},
			want:  "GET@0",
			drops: "malformed=1",
		},
		{
			name:  "reply without a command",
			steps: []step{rsp("+OK\r\n"), req(cmd("PING")), rsp("+PONG\r\n")},
			want:  "PING@0",
			drops: "unpaired=1",
		},
		{
			name:  "close with commands waiting",
			steps: []step{req(cmd("BLPOP", "q", "0") + cmd("PING"))},
			drops: "incomplete=2",
		},
		{
			name: "monitor lines are not replies",
			steps: []step{
				req(cmd("MONITOR")), rsp("+OK\r\n"),
				rsp("+1700000000.123456 [0 127.0.0.1:5000] \"GET\" \"a\"\r\n+1700000000.2 [0 127.0.0.1:5000] \"PING\"\r\n"),
				req(cmd("QUIT")), rsp("+OK\r\n"),
			},
			want: "MONITOR@0 QUIT@0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, &l7.Conn{Midstream: tt.midstream}, tt.steps)
			if got := ops(s); got != tt.want {
				t.Errorf("exchanges\n got %q\nwant %q", got, tt.want)
			}
			if got := drops(s); got != tt.drops {
				t.Errorf("drops %q, want %q", got, tt.drops)
			}
		})
	}
}

// TestSplitAnywhere feeds a pipelined conversation cut at every byte in
// both directions: the same exchanges, sizes included.
func TestSplitAnywhere(t *testing.T) {
	reqs := cmd("HELLO", "3") + cmd("SET", "a", "12345") + "PING\r\n" + cmd("MULTI") + cmd("GET", "a") + cmd("EXEC") + cmd("GET", "zz")
	rsps := "%1\r\n$5\r\nproto\r\n:3\r\n+OK\r\n+PONG\r\n+OK\r\n+QUEUED\r\n*1\r\n$5\r\n12345\r\n|1\r\n+a\r\n+b\r\n-WRONGTYPE x\r\n"
	whole := run(t, &l7.Conn{}, []step{req(reqs), rsp(rsps)})
	want := ops(whole)
	if want != "HELLO@0 SET@0 PING@0 MULTI@0 GET@0 EXEC@0 GET@0!WRONGTYPE" {
		t.Fatalf("whole: %s", want)
	}
	for i := 1; i < len(reqs); i++ {
		for _, j := range []int{1, i % len(rsps), len(rsps) - 1} {
			if j == 0 {
				continue
			}
			s := run(t, &l7.Conn{}, []step{req(reqs[:i]), req(reqs[i:]), rsp(rsps[:j]), rsp(rsps[j:])})
			if got := ops(s); got != want || drops(s) != "" {
				t.Fatalf("split %d/%d: %s (drops %s)", i, j, got, drops(s))
			}
			for k := range s.got {
				if s.got[k].req != whole.got[k].req || s.got[k].rsp != whole.got[k].rsp {
					t.Fatalf("split %d/%d: sizes %v, want %v", i, j, s.got[k], whole.got[k])
				}
			}
		}
	}
}

func TestSizes(t *testing.T) {
	c := cmd("SET", "k", "value")
	s := run(t, &l7.Conn{}, []step{req(c), rsp("+OK\r\n")})
	if len(s.got) != 1 || s.got[0].req != int64(len(c)) || s.got[0].rsp != 5 {
		t.Fatalf("got %v", s.got)
	}
}

func TestOverflow(t *testing.T) {
	var reqs, rsps strings.Builder
	n := maxPending + 10
	for i := 0; i < n; i++ {
		reqs.WriteString(cmd("PING"))
		rsps.WriteString("+PONG\r\n")
	}
	s := run(t, &l7.Conn{}, []step{req(reqs.String()), rsp(rsps.String()), req(cmd("GET", "a")), rsp("$-1\r\n")})
	if len(s.got) != maxPending+1 || s.drops["overflow"] != 10 || s.drops["unpaired"] != 0 {
		t.Fatalf("%d exchanges, drops %v", len(s.got), s.drops)
	}
	if last := s.got[len(s.got)-1]; last.op != "GET" {
		t.Fatalf("pairing shifted: last %v", last)
	}
}

func TestLost(t *testing.T) {
	s := &sink{}
	p := New().NewParser(&l7.Conn{})
	p.Feed(&l7.Record{Dir: l7.ToServer, Data: []byte(cmd("GET", "a") + cmd("GET", "b")), Total: 28}, s)
	p.Lost(l7.ToClient, s)
	p.Feed(&l7.Record{Dir: l7.ToClient, Data: []byte("$-1\r\n")}, s)
	p.Feed(&l7.Record{Dir: l7.ToServer, Data: []byte(cmd("PING"))}, s)
	p.Feed(&l7.Record{Dir: l7.ToClient, Data: []byte("+PONG\r\n")}, s)
	if ops(s) != "PING@0" || drops(s) != "lost=2" {
		t.Fatalf("%s %s", ops(s), drops(s))
	}
}

func TestCommandsSorted(t *testing.T) {
	for i := 1; i < len(commands); i++ {
		if commands[i-1] >= commands[i] {
			t.Fatalf("%s before %s", commands[i-1], commands[i])
		}
	}
}

// TestServerOfClient: the parser records a server's connection like a
// client's (the kernel leaves out the server end of a connection whose
// client it tracks: Capture().ClientSide, capture's
// TestPrivilegedClientSidePolicy), with any peer.
func TestServerOfClient(t *testing.T) {
	if !New().Capture().ClientSide {
		t.Error("redis must be recorded from the client's side")
	}
	steps := []step{req(cmd("PING")), rsp("+PONG\r\n")}
	for _, peer := range []string{"127.0.0.1:5000", "10.1.2.3:5000"} {
		c := &l7.Conn{Role: l7.RoleServer, Peer: netip.MustParseAddrPort(peer)}
		if s := run(t, c, steps); ops(s) != "PING@0" {
			t.Errorf("client %s: %s", peer, ops(s))
		}
	}
}

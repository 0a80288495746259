package redis

import (
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
)

// FuzzParser feeds arbitrary conversations, whole and cut, with gaps: the
// parser never panics, and when neither run gave anything up, both saw the
// same exchanges.
func FuzzParser(f *testing.F) {
	f.Add([]byte(cmd("SET", "a", "1")+cmd("GET", "a")), []byte("+OK\r\n$1\r\n1\r\n"), uint16(5), uint16(3), uint16(0))
	f.Add([]byte(cmd("SUBSCRIBE", "c")), []byte("*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"), uint16(2), uint16(9), uint16(0))
	f.Add([]byte("PING\r\n"+cmd("HELLO", "3")), []byte("+PONG\r\n%1\r\n$1\r\na\r\n|1\r\n+x\r\n+y\r\n:1\r\n"), uint16(1), uint16(20), uint16(4))
	f.Add([]byte(cmd("GET", "k")), []byte("$20\r\n0123456789abcdefghij\r\n"), uint16(4), uint16(7), uint16(12))
	f.Fuzz(func(t *testing.T, reqs, rsps []byte, i, j, gap uint16) {
		whole := feedAll(reqs, rsps, len(reqs), len(rsps), 0)
		cut := feedAll(reqs, rsps, int(i)%(len(reqs)+1), int(j)%(len(rsps)+1), 0)
		if len(whole.drops) == 0 && len(cut.drops) == 0 && ops(whole) != ops(cut) {
			t.Fatalf("whole %q, cut %q", ops(whole), ops(cut))
		}
		feedAll(reqs, rsps, int(i)%(len(reqs)+1), int(j)%(len(rsps)+1), int(gap))
	})
}

// feedAll sends reqs then rsps, each in two records cut at i and j; with
// gap > 0 the second record of each keeps only its first and last gap/2
// bytes (a head-and-tail capture).
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
	p.Lost(l7.ToClient, s)
	rec(l7.ToServer, reqs)
	rec(l7.ToClient, rsps)
	p.Close(0, s)
	return s
}

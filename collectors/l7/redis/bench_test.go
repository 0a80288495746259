package redis

import (
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
)

type nopSink struct{ n int }

func (s *nopSink) Exchange(*l7.Conn, *l7.Exchange) { s.n++ }
func (s *nopSink) Drop(*l7.Conn, string, int)      {}

// BenchmarkExchange is one SET and one GET, each a record each way, on a
// warm connection: 0 allocations per exchange.
func BenchmarkExchange(b *testing.B) {
	set, ok := []byte(cmd("SET", "key:000000001", "xxx")), []byte("+OK\r\n")
	get, val := []byte(cmd("GET", "key:000000001")), []byte("$3\r\nxxx\r\n")
	p := New().NewParser(&l7.Conn{})
	s := &nopSink{}
	recs := []l7.Record{
		{Dir: l7.ToServer, Data: set, Total: uint64(len(set))},
		{Dir: l7.ToClient, Data: ok, Total: uint64(len(ok))},
		{Dir: l7.ToServer, Data: get, Total: uint64(len(get))},
		{Dir: l7.ToClient, Data: val, Total: uint64(len(val))},
	}
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

// BenchmarkPipeline is redis-benchmark -P 16: sixteen commands in one
// write, sixteen replies in one read.
func BenchmarkPipeline(b *testing.B) {
	var reqs, rsps []byte
	for i := 0; i < 16; i++ {
		reqs = append(reqs, cmd("SET", "key:__rand_int__", "xxx")...)
		rsps = append(rsps, "+OK\r\n"...)
	}
	p := New().NewParser(&l7.Conn{})
	s := &nopSink{}
	recs := []l7.Record{{Dir: l7.ToServer, Data: reqs, Total: uint64(len(reqs))}, {Dir: l7.ToClient, Data: rsps, Total: uint64(len(rsps))}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Feed(&recs[0], s)
		p.Feed(&recs[1], s)
	}
	b.StopTimer()
	if s.n != 16*b.N {
		b.Fatalf("%d exchanges, want %d", s.n, 16*b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(s.n), "ns/exchange")
}

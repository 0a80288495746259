package kafka

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/otelbee/otelbee/collectors/l7"
)

type nopSink struct{ n, msgs int64 }

func (s *nopSink) Exchange(_ *l7.Conn, x *l7.Exchange) {
	if x.Metric == MetricDuration {
		s.n++
	}
	s.msgs += x.Messages
}
func (s *nopSink) Drop(*l7.Conn, string, int) {}

// bench feeds one request and its response per iteration on a warm
// connection, with a new correlation id each time: 0 allocations.
func bench(b *testing.B, req kmsg.Request, resp kmsg.Response) {
	p := New(Options{}).NewParser(&l7.Conn{PID: 1})
	s := &nopSink{}
	q, r := reqFrame(req, 0), respFrame(resp, 0)
	rq := l7.Record{Dir: l7.ToServer, Data: q, Total: uint64(len(q))}
	rs := l7.Record{Dir: l7.ToClient, Data: r, Total: uint64(len(r))}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// The correlation id is bytes 8..12 of a request, 4..8 of a
		// response.
		q[8], q[9], q[10], q[11] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		r[4], r[5], r[6], r[7] = q[8], q[9], q[10], q[11]
		p.Feed(&rq, s)
		p.Feed(&rs, s)
	}
	b.StopTimer()
	if s.n != int64(b.N) {
		b.Fatalf("%d exchanges, want %d", s.n, b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(s.n), "ns/exchange")
}

func BenchmarkProduce(b *testing.B) { bench(b, produceReq(11, -1), produceResp(11)) }

func BenchmarkFetch(b *testing.B) {
	fr := kmsg.NewPtrFetchRequest()
	fr.Version = 12
	bench(b, fr, fetchResp(12))
}

func BenchmarkHeartbeat(b *testing.B) {
	bench(b, &kmsg.HeartbeatRequest{Version: 4}, &kmsg.HeartbeatResponse{Version: 4})
}

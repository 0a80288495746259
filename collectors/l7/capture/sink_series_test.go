package capture

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/l7"
)

type sinkProto struct{}

func (sinkProto) Name() string { return "redis" }
func (sinkProto) Metrics(l7.Role) []l7.MetricSpec {
	return []l7.MetricSpec{
		{Name: "db.client.operation.duration", Unit: "s", Kind: l7.Duration, Index: 0},
		{Name: "test.messages", Unit: "{message}", Kind: l7.MessageCount, Index: 1},
	}
}
func (sinkProto) NewParser(*l7.Conn) l7.Parser { return nil }

func newTestSink(maxSeries int) *Sink {
	cfg := DefaultConfig()
	cfg.MaxSeries = maxSeries
	return NewSink(NewEngine(collectors.Deps{}, cfg), sinkProto{})
}

func op(x *l7.Exchange, name string, start, end uint64) *l7.Exchange {
	x.Reset()
	x.Start, x.End = start, end
	x.Add(attribute.String("db.operation.name", name))
	return x
}

// points sums the produced points by metric and db.operation.name
// ("_overflow" for the overflow series).
func points(t *testing.T, s *Sink) map[string]int64 {
	t.Helper()
	sms, err := s.Produce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range sms {
		for _, m := range sm.Metrics {
			label := func(set attribute.Set) string {
				if v, ok := set.Value("db.operation.name"); ok {
					return v.AsString()
				}
				return "_overflow"
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[m.Name+" "+label(p.Attributes)] += int64(p.Count)
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name+" "+label(p.Attributes)] += p.Value
				}
			}
		}
	}
	return out
}

func TestSinkSeriesOverflowAndRetirement(t *testing.T) {
	s := newTestSink(2)
	c := &l7.Conn{PID: 7, Role: l7.RoleClient, Peer: netip.MustParseAddrPort("10.0.0.1:6379")}
	var x l7.Exchange
	for _, name := range []string{"GET", "SET", "GET", "DEL", "DEL", "GET"} {
		s.Exchange(c, op(&x, name, 1, 2))
	}
	x.Reset()
	x.Metric, x.Messages = 1, 5
	x.Add(attribute.String("db.operation.name", "GET"))
	s.Exchange(c, &x) // a third series: past the cap
	got := points(t, s)
	want := map[string]int64{
		"db.client.operation.duration GET":       3,
		"db.client.operation.duration SET":       1,
		"db.client.operation.duration _overflow": 2, // DEL came third
		"test.messages _overflow":                5,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if n := s.seriesOverflow.Load(); n != 3 {
		t.Errorf("overflowed %d exchanges, want 3", n)
	}
	// The process exits: its series stay retainDead, then go.
	dead := func(uint32) bool { return true }
	now := time.Now()
	s.Housekeep(dead, now)
	if len(points(t, s)) == 0 {
		t.Fatal("series retired at once")
	}
	s.Housekeep(dead, now.Add(retainDead))
	if s.series.Len() != 0 {
		t.Errorf("%d series of an exited process after %v", s.series.Len(), retainDead)
	}
}

func TestSinkErrorTypeAndDrops(t *testing.T) {
	s := newTestSink(100)
	c := &l7.Conn{PID: 1, Role: l7.RoleServer}
	var x l7.Exchange
	s.Exchange(c, op(&x, "GET", 1, 2))
	op(&x, "GET", 1, 2).Error = "WRONGTYPE"
	s.Exchange(c, &x)
	if s.series.Len() != 2 {
		t.Errorf("%d series, want 2 (error.type apart)", s.series.Len())
	}
	x.Reset()
	x.Metric = 9 // not declared
	s.Exchange(c, &x)
	s.Drop(c, "lost", 3)
	if s.drops[dropKey{reason: "lost"}] != 3 || s.drops[dropKey{reason: "malformed"}] != 1 {
		t.Errorf("drops %v", s.drops)
	}
}

// BenchmarkSinkExchange is the layer's work per exchange once its series
// exists: 0 allocations.
func BenchmarkSinkExchange(b *testing.B) {
	s := newTestSink(100)
	c := &l7.Conn{PID: 1, Role: l7.RoleClient, Peer: netip.MustParseAddrPort("10.0.0.1:6379")}
	var x l7.Exchange
	op(&x, "GET", 1, 2000)
	x.Add(attribute.String("db.system.name", "redis"))
	s.Exchange(c, &x)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s.Exchange(c, &x)
	}
}

package series

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

type counts struct{ n int }

// budget admits max series in all and records what it was given back.
type budget struct {
	max, kept int
	released  map[uint32]int
}

func (b *budget) Admit(table string, owner uint32) bool {
	if table != "t" || b.kept >= b.max {
		return false
	}
	b.kept++
	return true
}

func (b *budget) Release(table string, owner uint32, n int) {
	b.kept -= n
	b.released[owner] += n
}

func add(t *Table[string, counts], k string, owner uint32, group int) *Series[string, counts] {
	s := t.Get(k)
	if s == nil {
		s = t.Add(k, owner, group, Attrs{
			Point: []attribute.KeyValue{attribute.String("k", k)},
			Span:  []attribute.KeyValue{attribute.String("k", k), attribute.String("span", "only")},
		})
	}
	t.Lock()
	s.M.n++
	t.Unlock()
	return s
}

// totals sums M.n by the points' "k" attribute ("_overflow/<group>").
func totals(t *Table[string, counts]) map[string]int {
	out := map[string]int{}
	t.Each(func(s *Series[string, counts]) {
		if v, ok := s.Set.Value("k"); ok {
			out[v.AsString()] += s.M.n
		} else if s.Overflowed {
			out["_overflow"+string(rune('0'+s.Group))] += s.M.n
		}
	})
	return out
}

func TestCapOverflowPerGroup(t *testing.T) {
	tb := New[string, counts](Config{Name: "t", MaxSeries: 2, Groups: 2, RetainDead: DefaultRetainDead})
	for _, x := range []struct {
		k     string
		group int
	}{{"a", 0}, {"b", 1}, {"a", 0}, {"c", 0}, {"d", 1}, {"d", 1}, {"b", 1}} {
		s := add(tb, x.k, 1, x.group)
		if s.Overflowed && (s.Key != x.k || len(s.Span) != 2) {
			t.Errorf("unkept series %+v: its spans keep key and attributes", s)
		}
	}
	want := map[string]int{"a": 2, "b": 2, "_overflow0": 1, "_overflow1": 2}
	got := totals(tb)
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d, want %d (%v)", k, got[k], n, got)
		}
	}
	if v, _ := tb.overflow[1].Set.Value("otel.metric.overflow"); !v.AsBool() {
		t.Error("overflow series not marked otel.metric.overflow=true")
	}
}

func TestBudgetAdmitsAndGetsSeriesBack(t *testing.T) {
	b := &budget{max: 2, released: map[uint32]int{}}
	tb := New[string, counts](Config{Name: "t", MaxSeries: 100, Budget: b, RetainDead: DefaultRetainDead})
	add(tb, "a", 7, 0)
	add(tb, "b", 8, 0)
	if s := add(tb, "c", 8, 0); !s.Overflowed {
		t.Fatal("a third series kept past the budget of 2")
	}
	add(tb, "a", 7, 0) // kept already: not asked again
	if b.kept != 2 || tb.Len() != 2 {
		t.Fatalf("budget holds %d, table %d series, want 2 and 2", b.kept, tb.Len())
	}
	dead := func(o uint32) bool { return o == 8 }
	now := time.Now()
	tb.Housekeep(dead, now)
	if tb.Len() != 2 {
		t.Fatal("series retired at once")
	}
	tb.Housekeep(dead, now.Add(DefaultRetainDead))
	if tb.Len() != 1 || b.released[8] != 1 || b.released[7] != 0 || b.kept != 1 {
		t.Fatalf("after retirement: %d series, released %v, budget holds %d", tb.Len(), b.released, b.kept)
	}
	if s := add(tb, "c", 9, 0); s.Overflowed {
		t.Fatal("the budget given back was not used again")
	}
}

func TestRetirementForgivesTheLiving(t *testing.T) {
	tb := New[string, counts](Config{MaxSeries: 10, RetainDead: time.Minute})
	add(tb, "a", 5, 0)
	now := time.Now()
	alive := false
	dead := func(uint32) bool { return !alive }
	tb.Housekeep(dead, now)
	alive = true // a reused pid, an instance with a new process
	tb.Housekeep(dead, now.Add(30*time.Second))
	alive = false
	tb.Housekeep(dead, now.Add(time.Minute))
	if tb.Len() != 1 {
		t.Fatal("retired a minute after it was first seen dead, though alive in between")
	}
	tb.Housekeep(dead, now.Add(2*time.Minute))
	if tb.Len() != 0 {
		t.Fatal("not retired a minute after it was seen dead again")
	}
}

// BenchmarkGet is a kept series' lookup and record: no allocation.
func BenchmarkGet(b *testing.B) {
	tb := New[string, counts](Config{MaxSeries: 10})
	add(tb, "a", 1, 0)
	b.ReportAllocs()
	for b.Loop() {
		add(tb, "a", 1, 0)
	}
}

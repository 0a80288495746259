package budget

import (
	"sync"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors/series"
)

func TestBudget(t *testing.T) {
	for _, tc := range []struct {
		name          string
		max           int
		admits        []string // table per Admit
		release       map[string]int
		want          []TableStats
		wantUsed, cap int
	}{
		{"none", 0, []string{"http", "http"}, nil, nil, 0, 0},
		{"under", 3, []string{"http", "tcp"}, nil, []TableStats{{"http", 1, 0}, {"tcp", 1, 0}}, 2, 3},
		{"past it", 3, []string{"http", "tcp", "dns", "http", "tcp"}, nil,
			[]TableStats{{"dns", 1, 0}, {"http", 1, 1}, {"tcp", 1, 1}}, 3, 3},
		{"released", 2, []string{"http", "http", "tcp"}, map[string]int{"http": 2},
			[]TableStats{{"http", 0, 0}, {"tcp", 0, 1}}, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.max)
			for _, tb := range tc.admits {
				b.Admit(tb, 1)
			}
			for tb, n := range tc.release {
				b.Release(tb, 1, n)
			}
			got := b.Stats()
			if len(got) != len(tc.want) {
				t.Fatalf("Stats = %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("Stats = %v, want %v", got, tc.want)
				}
			}
			if b.Used() != tc.wantUsed || b.Max() != tc.cap {
				t.Errorf("Used %d Max %d, want %d %d", b.Used(), b.Max(), tc.wantUsed, tc.cap)
			}
		})
	}
}

// TestBudgetConcurrent: tables on their own goroutines never keep more
// than the budget together.
func TestBudgetConcurrent(t *testing.T) {
	b := New(1000)
	var wg sync.WaitGroup
	kept := make([]int, 8)
	for g := range kept {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				if b.Admit("t", 1) {
					kept[g]++
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, k := range kept {
		total += k
	}
	if total != 1000 || b.Used() != 1000 {
		t.Errorf("kept %d, used %d; want 1000", total, b.Used())
	}
}

// TestBudgetWithSeriesTable: the series tables of two collectors share
// the budget: past it a new series is their overflow series; a table's
// retired series give their share back.
func TestBudgetWithSeriesTable(t *testing.T) {
	b := New(3)
	type m struct{ n int }
	http := series.New[string, m](series.Config{Name: "http", MaxSeries: 100, Budget: b})
	dns := series.New[string, m](series.Config{Name: "dns", MaxSeries: 100, Budget: b})
	for i, k := range []string{"a", "b"} {
		if s := http.Add(k, uint32(10+i), 0, series.Attrs{}); s.Overflowed {
			t.Fatalf("http %s overflowed under the budget", k)
		}
	}
	if s := dns.Add("x", 20, 0, series.Attrs{}); s.Overflowed {
		t.Fatal("dns x overflowed under the budget")
	}
	if s := dns.Add("y", 21, 0, series.Attrs{}); !s.Overflowed || s.Set != series.OverflowSet {
		t.Fatal("dns y kept past the budget")
	}
	if s := http.Add("c", 12, 0, series.Attrs{}); !s.Overflowed {
		t.Fatal("http c kept past the budget")
	}
	// http's owner 10 exits: its series goes, and so does its share.
	http.Housekeep(func(o uint32) bool { return o == 10 }, time.Now())
	if http.Len() != 1 || b.Used() != 2 {
		t.Fatalf("after retirement: http keeps %d, budget used %d; want 1, 2", http.Len(), b.Used())
	}
	if s := dns.Add("y", 21, 0, series.Attrs{}); s.Overflowed {
		t.Fatal("dns y still refused with room in the budget")
	}
	want := []TableStats{{"dns", 2, 1}, {"http", 1, 1}}
	got := b.Stats()
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Fatalf("Stats = %v, want %v", got, want)
		}
	}
}

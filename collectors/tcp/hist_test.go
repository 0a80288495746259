package tcp

import "testing"

func TestHistPoint(t *testing.T) {
	bounds := []float64{0.1, 1}
	tests := []struct {
		name    string
		counts  []uint64
		wantOK  bool
		wantCnt uint64
	}{
		{"empty", []uint64{0, 0, 0}, false, 0},
		{"spread", []uint64{2, 0, 5}, true, 7},
		{"overflow only", []uint64{0, 0, 1}, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := histPoint(tt.counts, bounds, 3.5)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			if p.Count != tt.wantCnt || p.Sum != 3.5 || len(p.BucketCounts) != 3 || &p.BucketCounts[0] == &tt.counts[0] {
				t.Fatalf("got %+v (bucket counts must be a copy)", p)
			}
		})
	}
}

// TestBoundsAscending: the kernel's bucket search assumes ascending bounds
// and the exported histograms need them strictly increasing.
func TestBoundsAscending(t *testing.T) {
	for name, b := range map[string][]float64{"duration": durationBounds[:], "rtt": rttBounds[:]} {
		for i := 1; i < len(b); i++ {
			if b[i] <= b[i-1] {
				t.Errorf("%s bounds not increasing at %d: %v", name, i, b)
			}
		}
	}
}

// BenchmarkHistPoint is the per-series cost of turning kernel buckets into
// a data point at collection time (nothing runs per connection).
func BenchmarkHistPoint(b *testing.B) {
	counts := make([]uint64, len(durationBounds)+1)
	counts[3] = 10
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := histPoint(counts, durationBounds[:], 1); !ok {
			b.Fatal("empty")
		}
	}
}

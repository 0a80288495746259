package aggregate

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// withExponential enables exponential buckets for one test.
func withExponential(t *testing.T, c ExponentialConfig) {
	t.Helper()
	EnableExponential(c)
	t.Cleanup(DisableExponential)
}

// TestExponentialMatchesSDK records the same values into Histogram and into
// the SDK's base-2 exponential histogram: scale, zero count and buckets must
// be the same, since OTLP backends merge both kinds of producers.
func TestExponentialMatchesSDK(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	many := make([]float64, 2000)
	for i := range many {
		many[i] = math.Exp(rnd.Float64()*30 - 15) // 3e-7 .. 3e6
	}
	cases := []struct {
		name    string
		maxSize int32
		values  []float64
	}{
		{"durations", 160, []float64{0.0012, 0.0013, 0.0049, 0.02, 0.25, 1.5}},
		{"powers of two", 160, []float64{0.125, 0.25, 0.5, 1, 2, 4, 1024, 3, 0.3}},
		{"zeros and negatives", 160, []float64{0, 0, -1, -0.5, 2, 7}},
		{"one value", 160, []float64{42}},
		{"wide range downscales", 160, many},
		{"tiny max size", 4, []float64{1, 2, 3, 1000, 0.001, 5, 1e6}},
		{"descending", 8, []float64{1e6, 1e5, 1e4, 1000, 100, 10, 1, 0.1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withExponential(t, ExponentialConfig{MaxSize: tc.maxSize, MaxScale: 20})
			reader := sdkmetric.NewManualReader(sdkmetric.WithAggregationSelector(func(sdkmetric.InstrumentKind) sdkmetric.Aggregation {
				return sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: tc.maxSize, MaxScale: 20}
			}))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			h, err := mp.Meter("t").Float64Histogram("h")
			if err != nil {
				t.Fatal(err)
			}
			var ours Histogram[float64]
			for _, v := range tc.values {
				h.Record(context.Background(), v)
				ours.Record(bounds, v)
			}
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			want := rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.ExponentialHistogram[float64]).DataPoints[0]
			got, ok := ours.ExponentialPoint(attribute.NewSet(), time.Time{}, time.Time{})
			t.Logf("scale %d, %d positive buckets", got.Scale, len(got.PositiveBucket.Counts))
			if !ok {
				t.Fatal("no exponential point")
			}
			if got.Count != want.Count || got.Sum != want.Sum || got.Scale != want.Scale || got.ZeroCount != want.ZeroCount {
				t.Fatalf("count/sum/scale/zero %d/%v/%d/%d, SDK %d/%v/%d/%d",
					got.Count, got.Sum, got.Scale, got.ZeroCount, want.Count, want.Sum, want.Scale, want.ZeroCount)
			}
			for _, b := range []struct {
				name      string
				got, want metricdata.ExponentialBucket
			}{{"positive", got.PositiveBucket, want.PositiveBucket}, {"negative", got.NegativeBucket, want.NegativeBucket}} {
				if len(b.want.Counts) == 0 && len(b.got.Counts) == 0 {
					continue
				}
				if b.got.Offset != b.want.Offset || !slices.Equal(b.got.Counts, b.want.Counts) {
					t.Fatalf("%s buckets offset %d %v, SDK %d %v", b.name, b.got.Offset, b.got.Counts, b.want.Offset, b.want.Counts)
				}
			}
		})
	}
}

// TestBucketIndexBoundaries: every bucket's upper boundary is inclusive,
// exactly at powers of two, at positive and negative scales.
func TestBucketIndexBoundaries(t *testing.T) {
	for _, s := range []int32{-3, -1, 0, 1, 3, 8, 20} {
		for _, e := range []int{-20, -1, 0, 1, 7, 30} {
			v := math.Ldexp(1, e)
			// 2^e is the upper bound of bucket e×2^s - 1 at scale s ≥ 0.
			want := int32(e)<<max(s, 0) - 1
			if s < 0 {
				want = (int32(e) - 1) >> -s
			}
			if got := bucketIndex(v, s); got != want {
				t.Errorf("scale %d: index of 2^%d = %d, want %d", s, e, got, want)
			}
			if s >= 0 {
				if got := bucketIndex(math.Nextafter(v, math.Inf(1)), s); got != want+1 {
					t.Errorf("scale %d: index just above 2^%d = %d, want %d", s, e, got, want+1)
				}
			}
		}
	}
}

func TestDownscale(t *testing.T) {
	off, counts := Downscale(-6, []uint64{3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 2)
	if off != -2 || !slices.Equal(counts, []uint64{4, 14, 30, 10}) {
		t.Fatalf("got %d %v", off, counts)
	}
	off, counts = Downscale(5, []uint64{1, 1}, 0)
	if off != 5 || !slices.Equal(counts, []uint64{1, 1}) {
		t.Fatalf("d=0: got %d %v", off, counts)
	}
}

func TestCollectionChoosesRepresentation(t *testing.T) {
	var explicitOnly Histogram[float64]
	explicitOnly.Record(bounds, 3)
	c := Collect[float64](WithExponential(context.Background()), bounds, time.Time{}, time.Time{})
	c.Add(&explicitOnly, attribute.NewSet())
	if _, ok := c.Metric("m", "s", "").Data.(metricdata.Histogram[float64]); !ok {
		t.Fatal("a histogram without exponential buckets must stay explicit")
	}

	withExponential(t, ExponentialConfig{})
	var h, empty Histogram[float64]
	h.Record(bounds, 3)
	c = Collect[float64](WithExponential(context.Background()), bounds, time.Time{}, time.Time{})
	c.Add(&h, attribute.NewSet())
	c.Add(&empty, attribute.NewSet())
	if c.Len() != 1 {
		t.Fatalf("%d points, want 1 (an empty histogram has none)", c.Len())
	}
	m, ok := c.Metric("m", "s", "").Data.(metricdata.ExponentialHistogram[float64])
	if !ok || m.DataPoints[0].Count != 1 || m.Temporality != metricdata.CumulativeTemporality {
		t.Fatalf("want one cumulative exponential point, got %#v", c.Metric("m", "s", "").Data)
	}
	// The Prometheus reader's collections do not ask: explicit buckets.
	c = Collect[float64](context.Background(), bounds, time.Time{}, time.Time{})
	c.Add(&h, attribute.NewSet())
	if _, ok := c.Metric("m", "s", "").Data.(metricdata.Histogram[float64]); !ok {
		t.Fatal("a collection that does not ask for exponential buckets must get explicit ones")
	}
}

func TestExponentialRecordAllocs(t *testing.T) {
	withExponential(t, ExponentialConfig{})
	var h Histogram[float64]
	for v := 0.001; v < 100; v *= 1.1 {
		h.Record(bounds, v) // warm: the buckets cover the range
	}
	if n := testing.AllocsPerRun(1000, func() { h.Record(bounds, 7) }); n != 0 {
		t.Fatalf("%v allocations per record, want 0", n)
	}
}

func BenchmarkRecordExponential(b *testing.B) {
	EnableExponential(ExponentialConfig{})
	defer DisableExponential()
	var h Histogram[float64]
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(bounds, float64(i%30)+0.5)
	}
}

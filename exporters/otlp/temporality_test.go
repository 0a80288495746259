package otlp

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/collectors/aggregate"
)

var testBounds = []float64{1, 10, 100}

// histProducer is a collector's producer in miniature: real aggregate
// histograms, produced cumulative through aggregate.Collect, as the HTTP
// and DNS collectors do.
type histProducer struct {
	start time.Time
	now   time.Time
	hs    map[string]*aggregate.Histogram[float64]
	order []string
}

func newHistProducer() *histProducer {
	return &histProducer{start: time.Unix(1000, 0), now: time.Unix(1000, 0), hs: map[string]*aggregate.Histogram[float64]{}}
}

func (p *histProducer) record(series string, vs ...float64) {
	h, ok := p.hs[series]
	if !ok {
		h = &aggregate.Histogram[float64]{}
		p.hs[series] = h
		p.order = append(p.order, series)
	}
	for _, v := range vs {
		h.Record(testBounds, v)
	}
}

func (p *histProducer) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	p.now = p.now.Add(10 * time.Second)
	c := aggregate.Collect[float64](ctx, testBounds, p.start, p.now)
	for _, s := range p.order {
		c.Add(p.hs[s], attribute.NewSet(attribute.String("series", s)))
	}
	return []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{c.Metric("h", "s", "")}}}, nil
}

func produce(t *testing.T, p sdkmetric.Producer) metricdata.Aggregation {
	t.Helper()
	sms, err := p.Produce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sms) == 0 {
		return nil
	}
	return sms[0].Metrics[0].Data
}

func byseries[P any](pts []P, attrs func(*P) attribute.Set) map[string]*P {
	out := map[string]*P{}
	for i := range pts {
		s := attrs(&pts[i])
		v, _ := s.Value("series")
		out[v.AsString()] = &pts[i]
	}
	return out
}

func histAttrsOf(p *metricdata.HistogramDataPoint[float64]) attribute.Set { return p.Attributes }

func TestDeltaHistograms(t *testing.T) {
	src := newHistProducer()
	p := newTemporalityProducer(src, sdkmetric.DeltaTemporalitySelector, false)

	src.record("a", 0.5, 5, 50)
	src.record("b", 500)
	h := produce(t, p).(metricdata.Histogram[float64])
	if h.Temporality != metricdata.DeltaTemporality || len(h.DataPoints) != 2 {
		t.Fatalf("first collection: %+v", h)
	}
	first := byseries(h.DataPoints, histAttrsOf)
	if a := first["a"]; a.Count != 3 || !slices.Equal(a.BucketCounts, []uint64{1, 1, 1, 0}) || !a.StartTime.Equal(src.start) {
		t.Fatalf("first delta of a is the whole cumulative point: %+v", a)
	}
	firstTime := first["a"].Time

	src.record("a", 5, 7, 1000)
	h = produce(t, p).(metricdata.Histogram[float64])
	if len(h.DataPoints) != 1 {
		t.Fatalf("b did not change: no point for it, got %+v", h.DataPoints)
	}
	a := h.DataPoints[0]
	if a.Count != 3 || a.Sum != 1012 || !slices.Equal(a.BucketCounts, []uint64{0, 2, 0, 1}) {
		t.Fatalf("second delta of a: count %d sum %v buckets %v", a.Count, a.Sum, a.BucketCounts)
	}
	if !a.StartTime.Equal(firstTime) || !a.Time.Equal(src.now) {
		t.Fatalf("delta interval %v..%v, want %v..%v", a.StartTime, a.Time, firstTime, src.now)
	}
	if _, ok := a.Min.Value(); ok {
		t.Fatal("a delta point cannot know its interval's minimum from cumulative points")
	}

	// Nothing changed at all: the metric has no point, and is left out.
	if d := produce(t, p); d != nil {
		t.Fatalf("no change: want no metric, got %+v", d)
	}
}

// TestDeltaAddsUpToCumulative: random traffic over many collections; the
// deltas add up exactly to the cumulative point, bucket by bucket.
func TestDeltaAddsUpToCumulative(t *testing.T) {
	for _, expo := range []bool{false, true} {
		t.Run(map[bool]string{false: "explicit", true: "exponential"}[expo], func(t *testing.T) {
			if expo {
				aggregate.EnableExponential(aggregate.ExponentialConfig{MaxSize: 8, MaxScale: 20}) // small: scale changes between collections
				t.Cleanup(aggregate.DisableExponential)
			}
			src := newHistProducer()
			p := newTemporalityProducer(src, sdkmetric.LowMemoryTemporalitySelector, expo)
			var count uint64
			var sum float64
			var scales []int32
			v := 0.001
			total := map[int32]uint64{} // exponential: bucket index at the final scale → count
			var deltas []metricdata.ExponentialHistogramDataPoint[float64]
			var buckets [4]uint64
			for i := range 12 {
				for j := 0; j <= i%3; j++ {
					v *= 3.7
					src.record("a", v)
				}
				switch d := produce(t, p).(type) {
				case metricdata.Histogram[float64]:
					pt := d.DataPoints[0]
					count += pt.Count
					sum += pt.Sum
					for k, n := range pt.BucketCounts {
						buckets[k] += n
					}
				case metricdata.ExponentialHistogram[float64]:
					if d.Temporality != metricdata.DeltaTemporality {
						t.Fatal("lowmemory: histograms are delta")
					}
					pt := d.DataPoints[0]
					count += pt.Count
					sum += pt.Sum
					scales = append(scales, pt.Scale)
					deltas = append(deltas, pt)
				default:
					t.Fatalf("collection %d: %T", i, d)
				}
			}
			hist := src.hs["a"]
			want := hist.Point(testBounds, attribute.NewSet(), time.Time{}, time.Time{})
			if count != want.Count || sum != want.Sum {
				t.Fatalf("deltas add up to count %d sum %v, cumulative %d %v", count, sum, want.Count, want.Sum)
			}
			if !expo {
				if !slices.Equal(buckets[:], want.BucketCounts) {
					t.Fatalf("deltas add up to buckets %v, cumulative %v", buckets, want.BucketCounts)
				}
				return
			}
			final, _ := hist.ExponentialPoint(attribute.NewSet(), time.Time{}, time.Time{})
			if scales[0] == final.Scale {
				t.Fatalf("the scale never changed (%v): the test does not test downscaling", scales)
			}
			for _, d := range deltas {
				off, counts := aggregate.Downscale(d.PositiveBucket.Offset, d.PositiveBucket.Counts, d.Scale-final.Scale)
				for k, n := range counts {
					total[off+int32(k)] += n
				}
			}
			for k, n := range final.PositiveBucket.Counts {
				if total[final.PositiveBucket.Offset+int32(k)] != n {
					t.Fatalf("bucket %d: deltas add up to %d, cumulative %d (scales %v)", final.PositiveBucket.Offset+int32(k), total[final.PositiveBucket.Offset+int32(k)], n, scales)
				}
			}
		})
	}
}

func TestDeltaRestartedSeries(t *testing.T) {
	src := newHistProducer()
	p := newTemporalityProducer(src, sdkmetric.DeltaTemporalitySelector, false)
	src.record("a", 5, 5, 5)
	produce(t, p)
	// The series is evicted and created again: fewer values than before.
	src.hs["a"] = &aggregate.Histogram[float64]{}
	src.record("a", 50)
	h := produce(t, p).(metricdata.Histogram[float64])
	if pt := h.DataPoints[0]; pt.Count != 1 || pt.Sum != 50 || !pt.StartTime.Equal(src.start) {
		t.Fatalf("a restarted series is its own delta: %+v", pt)
	}
	// Vanished series are forgotten.
	delete(src.hs, "a")
	src.order = nil
	produce(t, p)
	if len(p.series) != 0 {
		t.Fatalf("state of vanished series kept: %d", len(p.series))
	}
}

func TestCumulativePreferenceUnchanged(t *testing.T) {
	src := newHistProducer()
	p := newTemporalityProducer(src, sdkmetric.CumulativeTemporalitySelector, false)
	src.record("a", 5)
	produce(t, p)
	src.record("a", 6)
	h := produce(t, p).(metricdata.Histogram[float64])
	if h.Temporality != metricdata.CumulativeTemporality || h.DataPoints[0].Count != 2 || !h.DataPoints[0].StartTime.Equal(src.start) {
		t.Fatalf("cumulative: %+v", h)
	}
}

// sumProducer produces one monotonic and one up-down cumulative sum.
type sumProducer struct{ n int64 }

func (p *sumProducer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	p.n += 5
	at := time.Unix(2000+p.n, 0)
	pts := []metricdata.DataPoint[int64]{{StartTime: time.Unix(2000, 0), Time: at, Value: p.n}}
	return []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{
		{Name: "c", Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true, DataPoints: slices.Clone(pts)}},
		{Name: "u", Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, DataPoints: slices.Clone(pts)}},
	}}}, nil
}

// TestSumsFollowTheTable: the specification's table — counters delta under
// delta and lowmemory, up-down counters cumulative under every preference.
func TestSumsFollowTheTable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sel      sdkmetric.TemporalitySelector
		counterD bool
	}{
		{"cumulative", sdkmetric.CumulativeTemporalitySelector, false},
		{"delta", sdkmetric.DeltaTemporalitySelector, true},
		{"lowmemory", sdkmetric.LowMemoryTemporalitySelector, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTemporalityProducer(&sumProducer{}, tc.sel, false)
			p.Produce(context.Background())
			sms, _ := p.Produce(context.Background())
			c := sms[0].Metrics[0].Data.(metricdata.Sum[int64])
			u := sms[0].Metrics[1].Data.(metricdata.Sum[int64])
			if u.Temporality != metricdata.CumulativeTemporality || u.DataPoints[0].Value != 10 {
				t.Fatalf("up-down counter: %+v", u)
			}
			wantT, wantV := metricdata.CumulativeTemporality, int64(10)
			if tc.counterD {
				wantT, wantV = metricdata.DeltaTemporality, 5
			}
			if c.Temporality != wantT || c.DataPoints[0].Value != wantV {
				t.Fatalf("counter: %+v, want %v %d", c, wantT, wantV)
			}
		})
	}
}

func TestValidateMetricsEnv(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{envTemporality, "delta", true},
		{envTemporality, "LowMemory", true},
		{envTemporality, " cumulative ", true},
		{envTemporality, "deltas", false},
		{envHistogram, "base2_exponential_bucket_histogram", true},
		{envHistogram, "explicit_bucket_histogram", true},
		{envHistogram, "exponential", false},
	} {
		t.Setenv(tc.name, tc.value)
		err := Config{}.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s=%q: error %v, want ok %v", tc.name, tc.value, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), tc.name) {
			t.Errorf("the error must name the variable: %v", err)
		}
		t.Setenv(tc.name, "")
	}
}

// TestExporterFollowsEnvironment: the exporter reads both variables the
// way the Go OTLP exporter does.
func TestExporterFollowsEnvironment(t *testing.T) {
	t.Setenv(envTemporality, "delta")
	t.Setenv(envHistogram, "base2_exponential_bucket_histogram")
	exp, err := NewMetricExporter(context.Background(), Config{Endpoint: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	c, ok := exp.ExponentialHistograms()
	if !ok || c.MaxSize != 160 || c.MaxScale != 20 {
		t.Fatalf("exponential %v %+v", ok, c)
	}
	tp := exp.Producer(newHistProducer(), nil).(*temporalityProducer)
	if !tp.exponential || tp.temporality(sdkmetric.InstrumentKindHistogram) != metricdata.DeltaTemporality {
		t.Fatal("the producer does not follow the exporter")
	}
}

// BenchmarkDeltaProduce: one collection of 10,000 HTTP-like series, each
// with a few new values, turned into deltas.
func BenchmarkDeltaProduce(b *testing.B) {
	src := newHistProducer()
	for i := range 10000 {
		src.record(strconv.Itoa(i), 0.5, 5)
	}
	p := newTemporalityProducer(src, sdkmetric.DeltaTemporalitySelector, false)
	p.Produce(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range src.order {
			src.hs[s].Record(testBounds, 50)
		}
		p.Produce(context.Background())
	}
}

// BenchmarkCumulativeProduce is BenchmarkDeltaProduce's producer alone.
func BenchmarkCumulativeProduce(b *testing.B) {
	src := newHistProducer()
	for i := range 10000 {
		src.record(strconv.Itoa(i), 0.5, 5)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range src.order {
			src.hs[s].Record(testBounds, 50)
		}
		src.Produce(context.Background())
	}
}

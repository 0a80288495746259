package otlp

import (
	"context"
	"fmt"
	"github.com/otelbee/otelbee/exporters/perservice"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/collectors/aggregate"
)

// Temporality and histogram aggregation of the metrics that do not come from
// SDK instruments.
//
// The SDK applies OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE and
// OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION (read by the Go
// OTLP exporter) to its own instruments only. The agent's histograms are
// aggregated by the collectors (in the kernel, or per series in Go) and reach
// the readers through one producer, shared with the Prometheus endpoint,
// which needs them cumulative: they are produced cumulative, and the OTLP
// reader's producer turns them into deltas here, by subtracting each
// series' previous point, when the preference asks for delta temporality
// for their instrument kind (histograms: delta and lowmemory; see the OTLP
// exporter specification's table). Exponential buckets are asked of the
// collectors through the collection's context (package aggregate).

// Values of the two variables, as the specification spells them.
const (
	envTemporality = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
	envHistogram   = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"
)

// validateMetricsEnv refuses values of the two variables that the Go OTLP
// exporter would ignore with nothing but a log line: a backend that needs
// delta must not silently get cumulative.
func validateMetricsEnv() error {
	for _, v := range []struct {
		name  string
		valid []string
	}{
		{envTemporality, []string{"cumulative", "delta", "lowmemory"}},
		{envHistogram, []string{"explicit_bucket_histogram", "base2_exponential_bucket_histogram"}},
	} {
		s, ok := os.LookupEnv(v.name)
		if !ok {
			continue
		}
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" && !slices.Contains(v.valid, s) {
			return fmt.Errorf("%s %q is unknown: valid choices are %s", v.name, s, strings.Join(v.valid, ", "))
		}
	}
	return nil
}

// ExponentialHistograms reports whether the exporter wants base-2
// exponential histograms (OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION)
// and with which limits. The agent then calls aggregate.EnableExponential
// before the collectors record, so that their histograms keep exponential
// buckets for this exporter.
func (e *MetricExporter) ExponentialHistograms() (aggregate.ExponentialConfig, bool) {
	a, ok := e.inner.Aggregation(sdkmetric.InstrumentKindHistogram).(sdkmetric.AggregationBase2ExponentialHistogram)
	if !ok {
		return aggregate.ExponentialConfig{}, false
	}
	return aggregate.ExponentialConfig{MaxSize: a.MaxSize, MaxScale: a.MaxScale}, true
}

// Producer wraps the agent's producer for this exporter's reader: its
// cumulative sums and histograms become deltas where the exporter's
// temporality asks for them, and histograms are produced with exponential
// buckets where its aggregation does. Give the result to this exporter's
// reader only: it remembers what it produced last.
// A histogram that cannot be exponential (aggregated with fixed bounds in
// the kernel) stays explicit, and log says so once per metric.
func (e *MetricExporter) Producer(p sdkmetric.Producer, log *slog.Logger) sdkmetric.Producer {
	_, expo := e.ExponentialHistograms()
	tp := newTemporalityProducer(p, e.inner.Temporality, expo)
	tp.log = log
	return tp
}

type temporalityProducer struct {
	inner       sdkmetric.Producer
	temporality sdkmetric.TemporalitySelector
	exponential bool
	log         *slog.Logger

	mu       sync.Mutex
	gen      uint64
	series   map[seriesKey][]*lastPoint
	explicit map[string]bool // histograms reported as staying explicit
}

func newTemporalityProducer(p sdkmetric.Producer, t sdkmetric.TemporalitySelector, exponential bool) *temporalityProducer {
	return &temporalityProducer{inner: p, temporality: t, exponential: exponential, series: map[seriesKey][]*lastPoint{}, explicit: map[string]bool{}}
}

// seriesKey is one series: scope, metric and attribute set (by hash; the
// set itself is compared too, as Distinct can collide).
type seriesKey struct {
	scope, version, metric string
	attrs                  attribute.Distinct
}

// lastPoint is what a series' previous collection reported, cumulative.
type lastPoint struct {
	set   attribute.Set
	gen   uint64 // the collection that last saw the series
	start time.Time
	time  time.Time
	point any // the previous cumulative data point, a copy
}

// Produce implements sdkmetric.Producer.
func (p *temporalityProducer) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	if p.exponential {
		ctx = aggregate.WithExponential(ctx)
	}
	sms, err := p.inner.Produce(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	for i := range sms {
		sm := &sms[i]
		for j := range sm.Metrics {
			m := &sm.Metrics[j]
			k := seriesKey{scope: sm.Scope.Name, version: sm.Scope.Version, metric: m.Name}
			p.checkExponential(m)
			m.Data = p.convert(k, m.Data)
		}
		sm.Metrics = slices.DeleteFunc(sm.Metrics, func(m metricdata.Metrics) bool { return perservice.DataPointCount(m.Data) == 0 })
	}
	sms = slices.DeleteFunc(sms, func(sm metricdata.ScopeMetrics) bool { return len(sm.Metrics) == 0 })
	// Series that were not produced this time are gone (their process
	// exited, their map entry was evicted): forget them, so that the state
	// stays as bounded as the producers' series.
	for k, lps := range p.series {
		lps = slices.DeleteFunc(lps, func(lp *lastPoint) bool { return lp.gen != p.gen })
		if len(lps) == 0 {
			delete(p.series, k)
		} else {
			p.series[k] = lps
		}
	}
	return sms, err
}

// checkExponential logs, once, an explicit-bucket histogram produced while
// the exporter asked for exponential ones.
func (p *temporalityProducer) checkExponential(m *metricdata.Metrics) {
	if !p.exponential || p.explicit[m.Name] || p.log == nil {
		return
	}
	switch m.Data.(type) {
	case metricdata.Histogram[int64], metricdata.Histogram[float64]:
		p.explicit[m.Name] = true
		p.log.Warn("histogram keeps explicit buckets although "+envHistogram+" asks for base2_exponential_bucket_histogram: it is aggregated with fixed bounds (in the kernel)",
			"metric", m.Name)
	}
}

// convert returns a as the exporter wants it.
func (p *temporalityProducer) convert(k seriesKey, a metricdata.Aggregation) metricdata.Aggregation {
	switch d := a.(type) {
	case metricdata.Histogram[int64]:
		if p.wantsDelta(sdkmetric.InstrumentKindHistogram, d.Temporality) {
			d.DataPoints, d.Temporality = deltaPoints(p, k, d.DataPoints, histogramDelta[int64]), metricdata.DeltaTemporality
		}
		return d
	case metricdata.Histogram[float64]:
		if p.wantsDelta(sdkmetric.InstrumentKindHistogram, d.Temporality) {
			d.DataPoints, d.Temporality = deltaPoints(p, k, d.DataPoints, histogramDelta[float64]), metricdata.DeltaTemporality
		}
		return d
	case metricdata.ExponentialHistogram[int64]:
		if p.wantsDelta(sdkmetric.InstrumentKindHistogram, d.Temporality) {
			d.DataPoints, d.Temporality = deltaPoints(p, k, d.DataPoints, exponentialDelta[int64]), metricdata.DeltaTemporality
		}
		return d
	case metricdata.ExponentialHistogram[float64]:
		if p.wantsDelta(sdkmetric.InstrumentKindHistogram, d.Temporality) {
			d.DataPoints, d.Temporality = deltaPoints(p, k, d.DataPoints, exponentialDelta[float64]), metricdata.DeltaTemporality
		}
		return d
	case metricdata.Sum[int64]:
		if p.wantsDelta(sumKind(d.IsMonotonic), d.Temporality) {
			d.DataPoints, d.Temporality = deltaPoints(p, k, d.DataPoints, sumDelta[int64]), metricdata.DeltaTemporality
		}
		return d
	case metricdata.Sum[float64]:
		if p.wantsDelta(sumKind(d.IsMonotonic), d.Temporality) {
			d.DataPoints, d.Temporality = deltaPoints(p, k, d.DataPoints, sumDelta[float64]), metricdata.DeltaTemporality
		}
		return d
	}
	return a
}

// sumKind is the instrument kind a producer's sum stands for: a counter if
// it only grows, an up-down counter otherwise (cumulative under every
// preference of the specification).
func sumKind(monotonic bool) sdkmetric.InstrumentKind {
	if monotonic {
		return sdkmetric.InstrumentKindCounter
	}
	return sdkmetric.InstrumentKindUpDownCounter
}

func (p *temporalityProducer) wantsDelta(kind sdkmetric.InstrumentKind, have metricdata.Temporality) bool {
	return have == metricdata.CumulativeTemporality && p.temporality(kind) == metricdata.DeltaTemporality
}

// point is what deltaPoints needs of every data point type.
type point interface {
	metricdata.DataPoint[int64] | metricdata.DataPoint[float64] |
		metricdata.HistogramDataPoint[int64] | metricdata.HistogramDataPoint[float64] |
		metricdata.ExponentialHistogramDataPoint[int64] | metricdata.ExponentialHistogramDataPoint[float64]
}

// deltaFunc returns cur minus prev (nil: the first point of a series), and
// ok false when cur cannot follow prev (the series restarted: counts went
// down, bounds changed), in which case cur is its own delta. It sets no
// times. empty is true when nothing happened in between.
type deltaFunc[P point] func(cur *P, prev *P) (d P, empty, ok bool)

// deltaPoints replaces cumulative points by the change since the series'
// previous collection. A series with no change has no point this time, as
// the SDK does for delta instruments that were not used.
func deltaPoints[P point](p *temporalityProducer, k seriesKey, pts []P, delta deltaFunc[P]) []P {
	out := pts[:0] // the producer's slice is ours to rewrite
	for i := range pts {
		cur := pts[i]
		set, start, at := pointMeta(&cur)
		k.attrs = set.Equivalent()
		lp := p.lookup(k, set)
		var prev *P
		if lp.point != nil && lp.start.Equal(start) {
			prev = lp.point.(*P)
		}
		d, empty, ok := delta(&cur, prev)
		switch {
		case prev == nil || !ok:
			d, empty = cur, false
			setTimes(&d, start, at)
		default:
			setTimes(&d, lp.time, at)
		}
		lp.point, lp.start, lp.time = keep(&cur), start, at
		if !empty {
			out = append(out, d)
		}
	}
	return out
}

// lookup finds or creates the state of one series and marks it seen.
func (p *temporalityProducer) lookup(k seriesKey, set attribute.Set) *lastPoint {
	for _, lp := range p.series[k] {
		if lp.set.Equals(&set) {
			lp.gen = p.gen
			return lp
		}
	}
	lp := &lastPoint{set: set, gen: p.gen}
	p.series[k] = append(p.series[k], lp)
	return lp
}

// keep copies a point for the state, slices included: the point itself
// goes to the exporter.
func keep[P point](pt *P) *P {
	c := *pt
	switch v := any(&c).(type) {
	case *metricdata.HistogramDataPoint[int64]:
		v.BucketCounts, v.Exemplars = slices.Clone(v.BucketCounts), nil
	case *metricdata.HistogramDataPoint[float64]:
		v.BucketCounts, v.Exemplars = slices.Clone(v.BucketCounts), nil
	case *metricdata.ExponentialHistogramDataPoint[int64]:
		v.PositiveBucket.Counts, v.NegativeBucket.Counts = slices.Clone(v.PositiveBucket.Counts), slices.Clone(v.NegativeBucket.Counts)
		v.Exemplars = nil
	case *metricdata.ExponentialHistogramDataPoint[float64]:
		v.PositiveBucket.Counts, v.NegativeBucket.Counts = slices.Clone(v.PositiveBucket.Counts), slices.Clone(v.NegativeBucket.Counts)
		v.Exemplars = nil
	case *metricdata.DataPoint[int64]:
		v.Exemplars = nil
	case *metricdata.DataPoint[float64]:
		v.Exemplars = nil
	}
	return &c
}

func pointMeta[P point](pt *P) (attribute.Set, time.Time, time.Time) {
	switch v := any(pt).(type) {
	case *metricdata.DataPoint[int64]:
		return v.Attributes, v.StartTime, v.Time
	case *metricdata.DataPoint[float64]:
		return v.Attributes, v.StartTime, v.Time
	case *metricdata.HistogramDataPoint[int64]:
		return v.Attributes, v.StartTime, v.Time
	case *metricdata.HistogramDataPoint[float64]:
		return v.Attributes, v.StartTime, v.Time
	case *metricdata.ExponentialHistogramDataPoint[int64]:
		return v.Attributes, v.StartTime, v.Time
	case *metricdata.ExponentialHistogramDataPoint[float64]:
		return v.Attributes, v.StartTime, v.Time
	}
	panic("unreachable")
}

func setTimes[P point](pt *P, start, at time.Time) {
	switch v := any(pt).(type) {
	case *metricdata.DataPoint[int64]:
		v.StartTime, v.Time = start, at
	case *metricdata.DataPoint[float64]:
		v.StartTime, v.Time = start, at
	case *metricdata.HistogramDataPoint[int64]:
		v.StartTime, v.Time = start, at
	case *metricdata.HistogramDataPoint[float64]:
		v.StartTime, v.Time = start, at
	case *metricdata.ExponentialHistogramDataPoint[int64]:
		v.StartTime, v.Time = start, at
	case *metricdata.ExponentialHistogramDataPoint[float64]:
		v.StartTime, v.Time = start, at
	}
}

func sumDelta[N int64 | float64](cur, prev *metricdata.DataPoint[N]) (metricdata.DataPoint[N], bool, bool) {
	if prev == nil || cur.Value < prev.Value {
		return *cur, false, false
	}
	d := *cur
	d.Value -= prev.Value
	d.Exemplars = exemplarsAfter(cur.Exemplars, prev.Time)
	return d, d.Value == 0, true
}

func histogramDelta[N int64 | float64](cur, prev *metricdata.HistogramDataPoint[N]) (metricdata.HistogramDataPoint[N], bool, bool) {
	if prev == nil || cur.Count < prev.Count || !slices.Equal(cur.Bounds, prev.Bounds) ||
		len(cur.BucketCounts) != len(prev.BucketCounts) {
		return *cur, false, false
	}
	d := *cur
	d.Count -= prev.Count
	d.Sum -= prev.Sum
	d.BucketCounts = make([]uint64, len(cur.BucketCounts))
	for i, n := range cur.BucketCounts {
		if n < prev.BucketCounts[i] {
			return *cur, false, false
		}
		d.BucketCounts[i] = n - prev.BucketCounts[i]
	}
	// The interval's extremes are not known from two cumulative points.
	d.Min, d.Max = metricdata.Extrema[N]{}, metricdata.Extrema[N]{}
	d.Exemplars = exemplarsAfter(cur.Exemplars, prev.Time)
	return d, d.Count == 0, true
}

func exponentialDelta[N int64 | float64](cur, prev *metricdata.ExponentialHistogramDataPoint[N]) (metricdata.ExponentialHistogramDataPoint[N], bool, bool) {
	// A cumulative histogram's scale only goes down: bring the earlier
	// buckets to the current scale before subtracting.
	if prev == nil || cur.Count < prev.Count || cur.ZeroCount < prev.ZeroCount || cur.Scale > prev.Scale ||
		cur.ZeroThreshold != prev.ZeroThreshold {
		return *cur, false, false
	}
	d := *cur
	d.Count -= prev.Count
	d.Sum -= prev.Sum
	d.ZeroCount -= prev.ZeroCount
	var ok bool
	if d.PositiveBucket, ok = bucketDelta(cur.PositiveBucket, prev.PositiveBucket, prev.Scale-cur.Scale); !ok {
		return *cur, false, false
	}
	if d.NegativeBucket, ok = bucketDelta(cur.NegativeBucket, prev.NegativeBucket, prev.Scale-cur.Scale); !ok {
		return *cur, false, false
	}
	d.Min, d.Max = metricdata.Extrema[N]{}, metricdata.Extrema[N]{}
	d.Exemplars = exemplarsAfter(cur.Exemplars, prev.Time)
	return d, d.Count == 0, true
}

// bucketDelta subtracts prev, downscaled by d, from cur; ok is false when a
// bucket of prev is not within cur's range or larger than cur's.
func bucketDelta(cur, prev metricdata.ExponentialBucket, d int32) (metricdata.ExponentialBucket, bool) {
	out := metricdata.ExponentialBucket{Offset: cur.Offset, Counts: slices.Clone(cur.Counts)}
	off, counts := prev.Offset, prev.Counts
	if d > 0 {
		off, counts = aggregate.Downscale(off, counts, d)
	}
	for i, n := range counts {
		if n == 0 {
			continue
		}
		j := int(off) + i - int(cur.Offset)
		if j < 0 || j >= len(out.Counts) || out.Counts[j] < n {
			return cur, false
		}
		out.Counts[j] -= n
	}
	return out, true
}

// exemplarsAfter keeps the exemplars recorded after t (a cumulative point
// keeps the latest per bucket, which may be from an earlier interval).
func exemplarsAfter[N int64 | float64](ex []metricdata.Exemplar[N], t time.Time) []metricdata.Exemplar[N] {
	var out []metricdata.Exemplar[N]
	for _, e := range ex {
		if e.Time.After(t) {
			out = append(out, e)
		}
	}
	return out
}

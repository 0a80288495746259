// Package aggregate holds the histograms (explicit buckets, and base-2
// exponential ones when the OTLP exporter asks for them) that collectors
// aggregate themselves, per series, and hand to the exporters through an SDK
// metric producer at collection time. Recording through the SDK's instruments
// re-validates and de-duplicates the attribute set on every call, which cost
// more than everything else the agent does per DNS lookup or HTTP request; a
// collector that already knows its series (a cached pointer per attribute
// set) needs none of that.
package aggregate

import (
	"context"
	"sort"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

// Number is a histogram's value type, as in the SDK.
type Number interface{ int64 | float64 }

// Histogram is one series' cumulative explicit-bucket histogram. The zero
// value is empty; it is not safe for concurrent use (the collector's series
// lock guards it).
type Histogram[N Number] struct {
	counts    []uint64 // len(bounds)+1, the last one +Inf
	sum       N
	n         uint64
	min, max  N
	exemplars []metricdata.Exemplar[N] // one per bucket, the latest; nil until the first
	exp       *expHist                 // exponential buckets too, when enabled (see EnableExponential)
}

// Record adds v and returns its bucket. Upper bounds are inclusive, as in
// OpenTelemetry's explicit bucket histogram.
func (h *Histogram[N]) Record(bounds []float64, v N) int {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
		if c := exponential.Load(); c != nil {
			h.exp = newExpHist(c)
		}
	}
	if h.exp != nil {
		h.exp.record(float64(v))
	}
	i := sort.SearchFloat64s(bounds, float64(v))
	h.counts[i]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if h.n == 0 || v > h.max {
		h.max = v
	}
	h.sum += v
	h.n++
	return i
}

// RecordSampled adds v measured within a sampled span, which becomes the
// bucket's exemplar (the latest one per bucket is kept, as the SDK's
// default reservoir for explicit-bucket histograms does). Only sampled
// spans are linked: an exemplar pointing at a span that was never exported
// would lead nowhere.
func (h *Histogram[N]) RecordSampled(bounds []float64, v N, at time.Time, sc trace.SpanContext) {
	i := h.Record(bounds, v)
	if !sc.IsSampled() {
		return
	}
	if h.exemplars == nil {
		h.exemplars = make([]metricdata.Exemplar[N], len(bounds)+1)
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	e := &h.exemplars[i]
	e.Value, e.Time = v, at
	e.TraceID = append(e.TraceID[:0], tid[:]...)
	e.SpanID = append(e.SpanID[:0], sid[:]...)
}

// Count is the number of recorded values.
func (h *Histogram[N]) Count() uint64 { return h.n }

// Point is the series' data point; it shares nothing with h, so it stays
// valid after h records more.
func (h *Histogram[N]) Point(bounds []float64, set attribute.Set, start, now time.Time) metricdata.HistogramDataPoint[N] {
	p := metricdata.HistogramDataPoint[N]{
		Attributes:   set,
		StartTime:    start,
		Time:         now,
		Count:        h.n,
		Bounds:       bounds,
		BucketCounts: append([]uint64(nil), h.counts...),
		Min:          metricdata.NewExtrema(h.min),
		Max:          metricdata.NewExtrema(h.max),
		Sum:          h.sum,
	}
	for _, e := range h.exemplars {
		if e.TraceID == nil {
			continue
		}
		e.TraceID = append([]byte(nil), e.TraceID...)
		e.SpanID = append([]byte(nil), e.SpanID...)
		p.Exemplars = append(p.Exemplars, e)
	}
	return p
}

// ExponentialPoint is the series' exponential histogram data point (see
// EnableExponential); ok is false when the histogram keeps explicit buckets
// only. It shares nothing with h.
func (h *Histogram[N]) ExponentialPoint(set attribute.Set, start, now time.Time) (p metricdata.ExponentialHistogramDataPoint[N], ok bool) {
	if h.exp == nil {
		return p, false
	}
	p = metricdata.ExponentialHistogramDataPoint[N]{
		Attributes: set,
		StartTime:  start,
		Time:       now,
		Count:      h.n,
		Min:        metricdata.NewExtrema(h.min),
		Max:        metricdata.NewExtrema(h.max),
		Sum:        h.sum,
		Scale:      h.exp.scale,
		ZeroCount:  h.exp.zero,
		PositiveBucket: metricdata.ExponentialBucket{
			Offset: h.exp.pos.offset, Counts: append([]uint64(nil), h.exp.pos.counts...)},
		NegativeBucket: metricdata.ExponentialBucket{
			Offset: h.exp.neg.offset, Counts: append([]uint64(nil), h.exp.neg.counts...)},
	}
	for _, e := range h.exemplars {
		if e.TraceID == nil {
			continue
		}
		e.TraceID = append([]byte(nil), e.TraceID...)
		e.SpanID = append([]byte(nil), e.SpanID...)
		p.Exemplars = append(p.Exemplars, e)
	}
	return p, true
}

// Collection gathers one metric's data points at a collection: explicit
// buckets, or exponential ones when the collection's context asks for them
// (WithExponential) and the histograms keep them.
type Collection[N Number] struct {
	bounds      []float64
	start, now  time.Time
	exponential bool
	explicit    []metricdata.HistogramDataPoint[N]
	expo        []metricdata.ExponentialHistogramDataPoint[N]
}

// Collect starts a collection of histograms with bounds, all started at
// start, at now.
func Collect[N Number](ctx context.Context, bounds []float64, start, now time.Time) *Collection[N] {
	return &Collection[N]{bounds: bounds, start: start, now: now, exponential: wantsExponential(ctx)}
}

// Add adds h's point with attributes set; an empty histogram has none.
func (c *Collection[N]) Add(h *Histogram[N], set attribute.Set) {
	if h.Count() == 0 {
		return
	}
	if c.exponential {
		if p, ok := h.ExponentialPoint(set, c.start, c.now); ok {
			c.expo = append(c.expo, p)
			return
		}
	}
	c.explicit = append(c.explicit, h.Point(c.bounds, set, c.start, c.now))
}

// Len is the number of points added.
func (c *Collection[N]) Len() int { return len(c.explicit) + len(c.expo) }

// Metric is the collection as a cumulative histogram metric, exponential
// when the collection asked for it and the histograms keep exponential
// buckets. A metric has one data type; mixing cannot happen, since
// EnableExponential runs before any collector records.
func (c *Collection[N]) Metric(name, unit, description string) metricdata.Metrics {
	if len(c.expo) > 0 {
		return metricdata.Metrics{Name: name, Unit: unit, Description: description,
			Data: metricdata.ExponentialHistogram[N]{Temporality: metricdata.CumulativeTemporality, DataPoints: c.expo}}
	}
	return Metric(name, unit, description, c.explicit)
}

// Metric is a cumulative histogram metric made of points.
func Metric[N Number](name, unit, description string, points []metricdata.HistogramDataPoint[N]) metricdata.Metrics {
	return metricdata.Metrics{Name: name, Unit: unit, Description: description,
		Data: metricdata.Histogram[N]{Temporality: metricdata.CumulativeTemporality, DataPoints: points}}
}

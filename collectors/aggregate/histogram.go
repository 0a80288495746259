// Package aggregate holds explicit-bucket histograms that collectors
// aggregate themselves, per series, and hand to the exporters through an SDK
// metric producer at collection time. Recording through the SDK's instruments
// re-validates and de-duplicates the attribute set on every call, which cost
// more than everything else the agent does per DNS lookup or HTTP request; a
// collector that already knows its series (a cached pointer per attribute
// set) needs none of that.
package aggregate

import (
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
}

// Record adds v and returns its bucket. Upper bounds are inclusive, as in
// OpenTelemetry's explicit bucket histogram.
func (h *Histogram[N]) Record(bounds []float64, v N) int {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
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

// Metric is a cumulative histogram metric made of points.
func Metric[N Number](name, unit, description string, points []metricdata.HistogramDataPoint[N]) metricdata.Metrics {
	return metricdata.Metrics{Name: name, Unit: unit, Description: description,
		Data: metricdata.Histogram[N]{Temporality: metricdata.CumulativeTemporality, DataPoints: points}}
}

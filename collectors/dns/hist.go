package dns

import (
	"context"
	"sort"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Bucket boundaries. Lookups answered from a local cache take tens of
// microseconds, from the network milliseconds, timeouts seconds.
var (
	durationBuckets = [...]float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	answerBuckets   = [...]float64{0, 1, 2, 3, 4, 6, 8, 12, 16, 32}
)

// The histograms are aggregated here, per series, and handed to the
// exporters through an SDK producer at collection time: recording through
// the SDK re-validates and de-duplicates the attribute set on every call,
// which cost more than everything else the agent does per lookup.
type histogram struct {
	counts []uint64 // len(bounds)+1, the last one +Inf
	sum    float64
	n      uint64
	min    float64
	max    float64
}

func (h *histogram) record(bounds []float64, v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
	}
	// Upper bounds are inclusive (OpenTelemetry explicit buckets).
	i := sort.SearchFloat64s(bounds, v)
	h.counts[i]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if h.n == 0 || v > h.max {
		h.max = v
	}
	h.sum += v
	h.n++
}

func (h *histogram) point(bounds []float64, set attribute.Set, start, now time.Time) metricdata.HistogramDataPoint[float64] {
	return metricdata.HistogramDataPoint[float64]{
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
}

// Produce implements sdkmetric.Producer: dns.lookup.duration and
// dns.lookup.answers, cumulative, one data point per series.
func (c *Collector) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	c.seriesMu.Lock()
	dur := make([]metricdata.HistogramDataPoint[float64], 0, len(c.st.series))
	var ans []metricdata.HistogramDataPoint[float64]
	for _, sr := range c.st.series {
		if sr.duration.n > 0 {
			dur = append(dur, sr.duration.point(durationBuckets[:], sr.set, c.start, now))
		}
		if sr.answers.n > 0 {
			ans = append(ans, sr.answers.point(answerBuckets[:], sr.set, c.start, now))
		}
	}
	c.seriesMu.Unlock()
	return []metricdata.ScopeMetrics{{
		Scope: instrumentation.Scope{Name: "github.com/otelbee/otelbee/collectors/dns"},
		Metrics: []metricdata.Metrics{
			{
				Name: "dns.lookup.duration", Unit: "s",
				Description: "DNS lookups: time from the query leaving to the answer arriving, measured in the kernel; timeouts are recorded at the timeout with error.type=timeout.",
				Data:        metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality, DataPoints: dur},
			},
			{
				Name: "dns.lookup.answers", Unit: "{answer}",
				Description: "Records in the answer section of each DNS answer.",
				Data:        metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality, DataPoints: ans},
			},
		},
	}}, nil
}

package dns

import (
	"context"
	"time"

	"github.com/otelbee/otelbee/collectors/aggregate"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Bucket boundaries. The duration's default is what the conventions advise
// for dns.lookup.duration (dns.duration_buckets changes it: a host whose
// lookups are answered by a local cache in microseconds may want finer
// ones at the bottom).
var (
	conventionDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
	answerBuckets             = [...]float64{0, 1, 2, 3, 4, 6, 8, 12, 16, 32}
)

// Produce implements sdkmetric.Producer: dns.lookup.duration and
// otelbee.dns.lookup.answers, cumulative, one data point per series.
func (c *Collector) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	dur := aggregate.Collect[float64](ctx, c.cfg.DurationBuckets, c.start, now)
	ans := aggregate.Collect[float64](ctx, answerBuckets[:], c.start, now)
	c.st.series.Each(func(sr *dnsSeries) {
		dur.Add(&sr.M.duration, sr.Set)
		ans.Add(&sr.M.answers, sr.Set)
	})
	return []metricdata.ScopeMetrics{{
		Scope: instrumentation.Scope{Name: "github.com/otelbee/otelbee/collectors/dns"},
		Metrics: []metricdata.Metrics{
			dur.Metric("dns.lookup.duration", "s",
				"DNS lookups: time from the query leaving to the answer arriving, measured in the kernel, or to the lookup's end without one (socket error, the client's close, or the timeout), with error.type."),
			ans.Metric("otelbee.dns.lookup.answers", "{answer}", "Records in the answer section of each DNS answer."),
		},
	}}, nil
}

package dbwire

import (
	"go.opentelemetry.io/otel/attribute"

	"github.com/otelbee/otelbee/collectors/l7"
)

// The SQL protocols' metrics, by MetricSpec.Index.
const (
	MetricDuration = iota // db.client.operation.duration
	MetricOverflow        // otelbee.db.query.overflow
	MetricUnknown         // otelbee.db.statement.unknown
)

// DurationBuckets are the conventions' advice for db.client.operation.duration.
var DurationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}

// Metrics are the SQL protocols' metrics: the same on either side (the
// server side records only clients that are not on this host). The two
// counters go through the layer's series table, so they are per service.
func Metrics() []l7.MetricSpec {
	return []l7.MetricSpec{
		{Name: "db.client.operation.duration", Unit: "s", Description: "Duration of database client operations.",
			Kind: l7.Duration, Buckets: DurationBuckets, Index: MetricDuration},
		{Name: "otelbee.db.query.overflow", Unit: "{operation}",
			Description: "Database operations recorded with db.query.summary or db.collection.name _OTHER: past the distinct values kept (db.max_summaries, db.max_collections).",
			Kind:        l7.MessageCount, Index: MetricOverflow},
		{Name: "otelbee.db.statement.unknown", Unit: "{operation}",
			Description: "Executions of prepared statements whose text was not seen (prepared before the agent started, or past db.max_statements): recorded without a summary.",
			Kind:        l7.MessageCount, Index: MetricUnknown},
	}
}

// Count records one on counter metric of connection c, reusing x.
func Count(out l7.Sink, c *l7.Conn, x *l7.Exchange, metric int, system attribute.KeyValue, end uint64) {
	x.Reset()
	x.Metric, x.Start, x.End, x.Messages = metric, end, end, 1
	x.RequestSize, x.ResponseSize = -1, -1
	x.Add(system)
	out.Exchange(c, x)
}

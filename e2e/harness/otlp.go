package harness

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// MetricKind is the OTLP data type of a metric.
type MetricKind string

const (
	KindGauge                MetricKind = "gauge"
	KindSum                  MetricKind = "sum"
	KindHistogram            MetricKind = "histogram"
	KindExponentialHistogram MetricKind = "exponential_histogram"
	KindSummary              MetricKind = "summary"
)

// ResourceMetrics is one resource's metrics from one export request, flattened
// over instrumentation scopes (each Metric remembers its scope).
type ResourceMetrics struct {
	Resource map[string]string // resource attributes, values rendered as strings
	Metrics  []Metric
}

// Metric is one metric with its data points, as exported.
type Metric struct {
	Name        string
	Unit        string
	Description string
	Scope       string // instrumentation scope name
	Kind        MetricKind
	// Temporality is "cumulative" or "delta" for sums and histograms, "" otherwise.
	Temporality string
	Monotonic   bool // sums only
	Points      []DataPoint
}

// DataPoint is a number, histogram or summary data point. Attribute values are
// rendered as strings (pcommon.Value.AsString: ints in decimal, slices as JSON).
type DataPoint struct {
	Attributes map[string]string
	Start      time.Time
	Time       time.Time

	// Gauge and sum points: exactly one of Int or Float holds the value.
	IsInt bool
	Int   int64
	Float float64

	// Histogram, exponential histogram and summary points.
	Count        uint64
	Sum          float64
	HasSum       bool
	Bounds       []float64 // explicit bucket bounds (histogram)
	BucketCounts []uint64  // len(Bounds)+1 counts (histogram)
	Min, Max     float64
	HasMinMax    bool

	// Exponential histogram points: scale, zero count and positive buckets
	// (index Offset+i counts values in (base^(Offset+i), base^(Offset+i+1)],
	// base = 2^(2^-Scale)).
	Scale          int32
	ZeroCount      uint64
	PositiveOffset int32
	PositiveCounts []uint64

	dist bool // histogram, exponential histogram or summary point
}

// Value returns the number of a gauge or sum point as float64, and the Count of
// a histogram or summary point.
func (d DataPoint) Value() float64 {
	switch {
	case d.IsInt:
		return float64(d.Int)
	case d.dist:
		return float64(d.Count)
	default:
		return d.Float
	}
}

// Span is one exported span with its resource and scope.
type Span struct {
	TraceID      string // 32 hex digits
	SpanID       string // 16 hex digits
	ParentSpanID string // "" for a root span
	Name         string
	Kind         string // "Server", "Client", "Internal", "Producer", "Consumer", "Unspecified"
	Start        time.Time
	End          time.Time
	Attributes   map[string]string
	Resource     map[string]string
	Scope        string
	StatusCode   string // "Unset", "Ok", "Error"
	StatusMsg    string
}

// Duration is End - Start.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// ReadMetricsFile parses a file exporter output file in JSON format (one OTLP
// ExportMetricsServiceRequest per line). An incomplete last line (the exporter
// is still writing it) is ignored.
func ReadMetricsFile(path string) ([]ResourceMetrics, error) {
	lines, err := jsonLines(path)
	if err != nil {
		return nil, err
	}
	var out []ResourceMetrics
	var u pmetric.JSONUnmarshaler
	for i, line := range lines {
		md, err := u.UnmarshalMetrics(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		out = append(out, convertMetrics(md)...)
	}
	return out, nil
}

// ReadTracesFile parses a file exporter output file in JSON format (one OTLP
// ExportTraceServiceRequest per line) into spans, in file order.
func ReadTracesFile(path string) ([]Span, error) {
	lines, err := jsonLines(path)
	if err != nil {
		return nil, err
	}
	var out []Span
	var u ptrace.JSONUnmarshaler
	for i, line := range lines {
		td, err := u.UnmarshalTraces(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		out = append(out, convertTraces(td)...)
	}
	return out, nil
}

func jsonLines(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil // nothing exported yet
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	var lines [][]byte
	for _, l := range bytes.Split(b, []byte{'\n'}) {
		if len(bytes.TrimSpace(l)) > 0 {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

func attrMap(m pcommon.Map) map[string]string {
	out := make(map[string]string, m.Len())
	for k, v := range m.All() {
		out[k] = v.AsString()
	}
	return out
}

func ts(t pcommon.Timestamp) time.Time {
	if t == 0 {
		return time.Time{}
	}
	return t.AsTime()
}

func convertMetrics(md pmetric.Metrics) []ResourceMetrics {
	var out []ResourceMetrics
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		r := ResourceMetrics{Resource: attrMap(rm.Resource().Attributes())}
		sms := rm.ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			sm := sms.At(j)
			ms := sm.Metrics()
			for k := 0; k < ms.Len(); k++ {
				r.Metrics = append(r.Metrics, convertMetric(ms.At(k), sm.Scope().Name()))
			}
		}
		out = append(out, r)
	}
	return out
}

func convertMetric(m pmetric.Metric, scope string) Metric {
	out := Metric{Name: m.Name(), Unit: m.Unit(), Description: m.Description(), Scope: scope}
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		out.Kind = KindGauge
		out.Points = numberPoints(m.Gauge().DataPoints())
	case pmetric.MetricTypeSum:
		out.Kind = KindSum
		out.Temporality = temporality(m.Sum().AggregationTemporality())
		out.Monotonic = m.Sum().IsMonotonic()
		out.Points = numberPoints(m.Sum().DataPoints())
	case pmetric.MetricTypeHistogram:
		out.Kind = KindHistogram
		out.Temporality = temporality(m.Histogram().AggregationTemporality())
		dps := m.Histogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			p := DataPoint{
				Attributes:   attrMap(dp.Attributes()),
				Start:        ts(dp.StartTimestamp()),
				Time:         ts(dp.Timestamp()),
				Count:        dp.Count(),
				Sum:          dp.Sum(),
				HasSum:       dp.HasSum(),
				Bounds:       dp.ExplicitBounds().AsRaw(),
				BucketCounts: dp.BucketCounts().AsRaw(),
				dist:         true,
			}
			if p.BucketCounts == nil {
				p.BucketCounts = []uint64{}
			}
			if dp.HasMin() && dp.HasMax() {
				p.Min, p.Max, p.HasMinMax = dp.Min(), dp.Max(), true
			}
			out.Points = append(out.Points, p)
		}
	case pmetric.MetricTypeExponentialHistogram:
		out.Kind = KindExponentialHistogram
		out.Temporality = temporality(m.ExponentialHistogram().AggregationTemporality())
		dps := m.ExponentialHistogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			p := DataPoint{
				Attributes: attrMap(dp.Attributes()),
				Start:      ts(dp.StartTimestamp()),
				Time:       ts(dp.Timestamp()),
				Count:      dp.Count(),
				Sum:        dp.Sum(),
				HasSum:     dp.HasSum(),
				dist:       true,

				Scale:          dp.Scale(),
				ZeroCount:      dp.ZeroCount(),
				PositiveOffset: dp.Positive().Offset(),
				PositiveCounts: dp.Positive().BucketCounts().AsRaw(),
			}
			if dp.HasMin() && dp.HasMax() {
				p.Min, p.Max, p.HasMinMax = dp.Min(), dp.Max(), true
			}
			out.Points = append(out.Points, p)
		}
	case pmetric.MetricTypeSummary:
		out.Kind = KindSummary
		dps := m.Summary().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			out.Points = append(out.Points, DataPoint{
				Attributes: attrMap(dp.Attributes()),
				Start:      ts(dp.StartTimestamp()),
				Time:       ts(dp.Timestamp()),
				Count:      dp.Count(),
				Sum:        dp.Sum(),
				HasSum:     true,
				dist:       true,
			})
		}
	}
	return out
}

func temporality(t pmetric.AggregationTemporality) string {
	switch t {
	case pmetric.AggregationTemporalityCumulative:
		return "cumulative"
	case pmetric.AggregationTemporalityDelta:
		return "delta"
	}
	return ""
}

func numberPoints(dps pmetric.NumberDataPointSlice) []DataPoint {
	out := make([]DataPoint, 0, dps.Len())
	for i := 0; i < dps.Len(); i++ {
		dp := dps.At(i)
		p := DataPoint{
			Attributes: attrMap(dp.Attributes()),
			Start:      ts(dp.StartTimestamp()),
			Time:       ts(dp.Timestamp()),
		}
		switch dp.ValueType() {
		case pmetric.NumberDataPointValueTypeInt:
			p.IsInt, p.Int = true, dp.IntValue()
		case pmetric.NumberDataPointValueTypeDouble:
			p.Float = dp.DoubleValue()
		}
		out = append(out, p)
	}
	return out
}

func convertTraces(td ptrace.Traces) []Span {
	var out []Span
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		res := attrMap(rs.Resource().Attributes())
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				s := spans.At(k)
				sp := Span{
					TraceID:    s.TraceID().String(),
					SpanID:     s.SpanID().String(),
					Name:       s.Name(),
					Kind:       s.Kind().String(),
					Start:      ts(s.StartTimestamp()),
					End:        ts(s.EndTimestamp()),
					Attributes: attrMap(s.Attributes()),
					Resource:   maps.Clone(res),
					Scope:      ss.Scope().Name(),
					StatusCode: s.Status().Code().String(),
					StatusMsg:  s.Status().Message(),
				}
				if !s.ParentSpanID().IsEmpty() {
					sp.ParentSpanID = s.ParentSpanID().String()
				}
				out = append(out, sp)
			}
		}
	}
	return out
}

// Filter selects series by exact attribute values: every key in Resource must
// be a resource attribute with that value, every key in Attributes a data point
// attribute with that value. Empty maps match everything.
type Filter struct {
	Resource   map[string]string
	Attributes map[string]string
}

func subset(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func (f Filter) String() string {
	return fmt.Sprintf("resource%s attributes%s", mapString(f.Resource), mapString(f.Attributes))
}

func mapString(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// SeriesPoint is the latest data point of one series (one resource attribute set
// plus one data point attribute set) of a metric.
type SeriesPoint struct {
	Resource map[string]string
	Metric   Metric // without Points
	Point    DataPoint
	// Total is the series' accumulated value: Point.Value() for cumulative sums,
	// histograms and gauges; the sum of every exported point's Value() for delta
	// temporality.
	Total float64
}

// Latest returns, for each series of metric name that matches f, its latest data
// point (greatest timestamp; on equal timestamps the one exported last). The
// result is sorted by resource, then attributes.
func Latest(rms []ResourceMetrics, name string, f Filter) []SeriesPoint {
	idx := map[string]int{}
	var out []SeriesPoint
	for _, rm := range rms {
		if !subset(f.Resource, rm.Resource) {
			continue
		}
		for _, m := range rm.Metrics {
			if m.Name != name {
				continue
			}
			for _, p := range m.Points {
				if !subset(f.Attributes, p.Attributes) {
					continue
				}
				key := mapString(rm.Resource) + mapString(p.Attributes)
				i, ok := idx[key]
				if !ok {
					meta := m
					meta.Points = nil
					idx[key] = len(out)
					out = append(out, SeriesPoint{Resource: rm.Resource, Metric: meta, Point: p, Total: p.Value()})
					continue
				}
				sp := &out[i]
				if m.Temporality == "delta" {
					sp.Total += p.Value()
				}
				if !p.Time.Before(sp.Point.Time) {
					sp.Point = p
					if m.Temporality != "delta" {
						sp.Total = p.Value()
					}
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		ki := mapString(out[i].Resource) + mapString(out[i].Point.Attributes)
		kj := mapString(out[j].Resource) + mapString(out[j].Point.Attributes)
		return ki < kj
	})
	return out
}

// Total adds up the Total of every matching series of metric name (see
// Latest): for a cumulative counter split by attributes such as peer address,
// the overall count for the filter. ok is false when no series matched.
func Total(rms []ResourceMetrics, name string, f Filter) (total float64, ok bool) {
	sps := Latest(rms, name, f)
	for _, sp := range sps {
		total += sp.Total
	}
	return total, len(sps) > 0
}

// MetricNames returns the sorted, de-duplicated names of all metrics in rms.
func MetricNames(rms []ResourceMetrics) []string {
	set := map[string]bool{}
	for _, rm := range rms {
		for _, m := range rm.Metrics {
			set[m.Name] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

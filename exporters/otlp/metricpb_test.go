package otlp

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
)

// The reference metricEncoder is tested against: protobuf objects built as
// the Go SDK's OTLP metric exporters build theirs (the same fields, the
// same handling of optional min, max and sum), which the exporter sent
// before it encoded the request itself.

func resourceMetricsPB(rm *metricdata.ResourceMetrics) *metricpb.ResourceMetrics {
	out := &metricpb.ResourceMetrics{}
	if rm.Resource != nil {
		out.Resource = &resourcepb.Resource{Attributes: keyValuesPB(rm.Resource.Attributes())}
		out.SchemaUrl = rm.Resource.SchemaURL()
	}
	for _, sm := range rm.ScopeMetrics {
		s := &metricpb.ScopeMetrics{
			Scope: &commonpb.InstrumentationScope{
				Name: sm.Scope.Name, Version: sm.Scope.Version,
				Attributes: keyValuesPB(sm.Scope.Attributes.ToSlice()),
			},
			SchemaUrl: sm.Scope.SchemaURL,
		}
		for _, m := range sm.Metrics {
			if pm := metricPB(m); pm != nil {
				s.Metrics = append(s.Metrics, pm)
			}
		}
		out.ScopeMetrics = append(out.ScopeMetrics, s)
	}
	return out
}

func metricPB(m metricdata.Metrics) *metricpb.Metric {
	out := &metricpb.Metric{Name: m.Name, Description: m.Description, Unit: m.Unit}
	switch d := m.Data.(type) {
	case metricdata.Gauge[int64]:
		out.Data = &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{DataPoints: numberPointsPB(d.DataPoints)}}
	case metricdata.Gauge[float64]:
		out.Data = &metricpb.Metric_Gauge{Gauge: &metricpb.Gauge{DataPoints: numberPointsPB(d.DataPoints)}}
	case metricdata.Sum[int64]:
		out.Data = &metricpb.Metric_Sum{Sum: &metricpb.Sum{DataPoints: numberPointsPB(d.DataPoints),
			AggregationTemporality: temporalityPB(d.Temporality), IsMonotonic: d.IsMonotonic}}
	case metricdata.Sum[float64]:
		out.Data = &metricpb.Metric_Sum{Sum: &metricpb.Sum{DataPoints: numberPointsPB(d.DataPoints),
			AggregationTemporality: temporalityPB(d.Temporality), IsMonotonic: d.IsMonotonic}}
	case metricdata.Histogram[int64]:
		out.Data = &metricpb.Metric_Histogram{Histogram: &metricpb.Histogram{DataPoints: histogramPointsPB(d.DataPoints),
			AggregationTemporality: temporalityPB(d.Temporality)}}
	case metricdata.Histogram[float64]:
		out.Data = &metricpb.Metric_Histogram{Histogram: &metricpb.Histogram{DataPoints: histogramPointsPB(d.DataPoints),
			AggregationTemporality: temporalityPB(d.Temporality)}}
	case metricdata.ExponentialHistogram[int64]:
		out.Data = &metricpb.Metric_ExponentialHistogram{ExponentialHistogram: &metricpb.ExponentialHistogram{
			DataPoints: expPointsPB(d.DataPoints), AggregationTemporality: temporalityPB(d.Temporality)}}
	case metricdata.ExponentialHistogram[float64]:
		out.Data = &metricpb.Metric_ExponentialHistogram{ExponentialHistogram: &metricpb.ExponentialHistogram{
			DataPoints: expPointsPB(d.DataPoints), AggregationTemporality: temporalityPB(d.Temporality)}}
	case metricdata.Summary:
		out.Data = &metricpb.Metric_Summary{Summary: &metricpb.Summary{DataPoints: summaryPointsPB(d.DataPoints)}}
	default:
		return nil // unknown aggregation: as the SDK's exporter, leave it out
	}
	return out
}

func unixNano(t interface{ UnixNano() int64 }, zero bool) uint64 {
	if zero {
		return 0
	}
	return uint64(t.UnixNano())
}

func numberPointsPB[N int64 | float64](pts []metricdata.DataPoint[N]) []*metricpb.NumberDataPoint {
	out := make([]*metricpb.NumberDataPoint, 0, len(pts))
	for _, p := range pts {
		dp := &metricpb.NumberDataPoint{
			Attributes:        keyValuesPB(p.Attributes.ToSlice()),
			StartTimeUnixNano: unixNano(p.StartTime, p.StartTime.IsZero()),
			TimeUnixNano:      unixNano(p.Time, p.Time.IsZero()),
			Exemplars:         exemplarsPB(p.Exemplars),
		}
		switch v := any(p.Value).(type) {
		case int64:
			dp.Value = &metricpb.NumberDataPoint_AsInt{AsInt: v}
		case float64:
			dp.Value = &metricpb.NumberDataPoint_AsDouble{AsDouble: v}
		}
		out = append(out, dp)
	}
	return out
}

func histogramPointsPB[N int64 | float64](pts []metricdata.HistogramDataPoint[N]) []*metricpb.HistogramDataPoint {
	out := make([]*metricpb.HistogramDataPoint, 0, len(pts))
	for _, p := range pts {
		sum := float64(p.Sum)
		dp := &metricpb.HistogramDataPoint{
			Attributes:        keyValuesPB(p.Attributes.ToSlice()),
			StartTimeUnixNano: unixNano(p.StartTime, p.StartTime.IsZero()),
			TimeUnixNano:      unixNano(p.Time, p.Time.IsZero()),
			Count:             p.Count,
			Sum:               &sum,
			BucketCounts:      p.BucketCounts,
			ExplicitBounds:    p.Bounds,
			Exemplars:         exemplarsPB(p.Exemplars),
		}
		if v, ok := p.Min.Value(); ok {
			f := float64(v)
			dp.Min = &f
		}
		if v, ok := p.Max.Value(); ok {
			f := float64(v)
			dp.Max = &f
		}
		out = append(out, dp)
	}
	return out
}

func expPointsPB[N int64 | float64](pts []metricdata.ExponentialHistogramDataPoint[N]) []*metricpb.ExponentialHistogramDataPoint {
	out := make([]*metricpb.ExponentialHistogramDataPoint, 0, len(pts))
	for _, p := range pts {
		sum := float64(p.Sum)
		dp := &metricpb.ExponentialHistogramDataPoint{
			Attributes:        keyValuesPB(p.Attributes.ToSlice()),
			StartTimeUnixNano: unixNano(p.StartTime, p.StartTime.IsZero()),
			TimeUnixNano:      unixNano(p.Time, p.Time.IsZero()),
			Count:             p.Count,
			Sum:               &sum,
			Scale:             p.Scale,
			ZeroCount:         p.ZeroCount,
			ZeroThreshold:     p.ZeroThreshold,
			Positive:          &metricpb.ExponentialHistogramDataPoint_Buckets{Offset: p.PositiveBucket.Offset, BucketCounts: p.PositiveBucket.Counts},
			Negative:          &metricpb.ExponentialHistogramDataPoint_Buckets{Offset: p.NegativeBucket.Offset, BucketCounts: p.NegativeBucket.Counts},
			Exemplars:         exemplarsPB(p.Exemplars),
		}
		if v, ok := p.Min.Value(); ok {
			f := float64(v)
			dp.Min = &f
		}
		if v, ok := p.Max.Value(); ok {
			f := float64(v)
			dp.Max = &f
		}
		out = append(out, dp)
	}
	return out
}

func summaryPointsPB(pts []metricdata.SummaryDataPoint) []*metricpb.SummaryDataPoint {
	out := make([]*metricpb.SummaryDataPoint, 0, len(pts))
	for _, p := range pts {
		dp := &metricpb.SummaryDataPoint{
			Attributes:        keyValuesPB(p.Attributes.ToSlice()),
			StartTimeUnixNano: unixNano(p.StartTime, p.StartTime.IsZero()),
			TimeUnixNano:      unixNano(p.Time, p.Time.IsZero()),
			Count:             p.Count,
			Sum:               p.Sum,
		}
		for _, q := range p.QuantileValues {
			dp.QuantileValues = append(dp.QuantileValues, &metricpb.SummaryDataPoint_ValueAtQuantile{Quantile: q.Quantile, Value: q.Value})
		}
		out = append(out, dp)
	}
	return out
}

func exemplarsPB[N int64 | float64](es []metricdata.Exemplar[N]) []*metricpb.Exemplar {
	if len(es) == 0 {
		return nil
	}
	out := make([]*metricpb.Exemplar, 0, len(es))
	for _, e := range es {
		x := &metricpb.Exemplar{
			FilteredAttributes: keyValuesPB(e.FilteredAttributes),
			TimeUnixNano:       unixNano(e.Time, e.Time.IsZero()),
			SpanId:             e.SpanID,
			TraceId:            e.TraceID,
		}
		switch v := any(e.Value).(type) {
		case int64:
			x.Value = &metricpb.Exemplar_AsInt{AsInt: v}
		case float64:
			x.Value = &metricpb.Exemplar_AsDouble{AsDouble: v}
		}
		out = append(out, x)
	}
	return out
}

func keyValuesPB(kvs []attribute.KeyValue) []*commonpb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]*commonpb.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, &commonpb.KeyValue{Key: string(kv.Key), Value: anyValuePB(kv.Value)})
	}
	return out
}

func anyValuePB(v attribute.Value) *commonpb.AnyValue {
	av := &commonpb.AnyValue{}
	switch v.Type() {
	case attribute.BOOL:
		av.Value = &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}
	case attribute.INT64:
		av.Value = &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}
	case attribute.FLOAT64:
		av.Value = &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}
	case attribute.STRING:
		av.Value = &commonpb.AnyValue_StringValue{StringValue: v.AsString()}
	case attribute.BOOLSLICE:
		arr := &commonpb.ArrayValue{}
		for _, x := range v.AsBoolSlice() {
			arr.Values = append(arr.Values, &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: x}})
		}
		av.Value = &commonpb.AnyValue_ArrayValue{ArrayValue: arr}
	case attribute.INT64SLICE:
		arr := &commonpb.ArrayValue{}
		for _, x := range v.AsInt64Slice() {
			arr.Values = append(arr.Values, &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: x}})
		}
		av.Value = &commonpb.AnyValue_ArrayValue{ArrayValue: arr}
	case attribute.FLOAT64SLICE:
		arr := &commonpb.ArrayValue{}
		for _, x := range v.AsFloat64Slice() {
			arr.Values = append(arr.Values, &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: x}})
		}
		av.Value = &commonpb.AnyValue_ArrayValue{ArrayValue: arr}
	case attribute.STRINGSLICE:
		arr := &commonpb.ArrayValue{}
		for _, x := range v.AsStringSlice() {
			arr.Values = append(arr.Values, &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: x}})
		}
		av.Value = &commonpb.AnyValue_ArrayValue{ArrayValue: arr}
	}
	return av
}

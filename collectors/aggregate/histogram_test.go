package aggregate

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

var bounds = []float64{0, 5, 10, 25}

// TestHistogramMatchesSDK records the same values into Histogram and into
// the SDK's own explicit-bucket histogram: the data points must agree, since
// both reach the same exporters.
func TestHistogramMatchesSDK(t *testing.T) {
	values := []float64{0, 0.5, 5, 5.0001, 10, 7, 25, 26, 1000, 3}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	h, err := mp.Meter("t").Float64Histogram("h", metric.WithExplicitBucketBoundaries(bounds...))
	if err != nil {
		t.Fatal(err)
	}
	var ours Histogram[float64]
	for _, v := range values {
		h.Record(context.Background(), v)
		ours.Record(bounds, v)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	want := rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Histogram[float64]).DataPoints[0]
	got := ours.Point(bounds, attribute.NewSet(), time.Time{}, time.Time{})
	if got.Count != want.Count || got.Sum != want.Sum {
		t.Fatalf("count/sum %d/%v, SDK %d/%v", got.Count, got.Sum, want.Count, want.Sum)
	}
	for i := range want.BucketCounts {
		if got.BucketCounts[i] != want.BucketCounts[i] {
			t.Fatalf("buckets %v, SDK %v", got.BucketCounts, want.BucketCounts)
		}
	}
	gmin, _ := got.Min.Value()
	wmin, _ := want.Min.Value()
	gmax, _ := got.Max.Value()
	wmax, _ := want.Max.Value()
	if gmin != wmin || gmax != wmax {
		t.Fatalf("min/max %v/%v, SDK %v/%v", gmin, gmax, wmin, wmax)
	}
}

func TestHistogramExemplars(t *testing.T) {
	sampled := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	later := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{3}, SpanID: trace.SpanID{4}, TraceFlags: trace.FlagsSampled})
	unsampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{5}, SpanID: trace.SpanID{6}})
	at := time.Unix(100, 0)

	var h Histogram[int64]
	h.RecordSampled(bounds, 3, at, unsampled) // bucket 1, no exemplar
	h.RecordSampled(bounds, 20, at, sampled)  // bucket 3
	h.RecordSampled(bounds, 2, at, sampled)   // bucket 1
	h.RecordSampled(bounds, 4, at, later)     // bucket 1 again: replaces
	h.Record(bounds, 100)
	p := h.Point(bounds, attribute.NewSet(), at, at)
	if p.Count != 5 || p.Sum != 129 {
		t.Fatalf("count %d sum %d", p.Count, p.Sum)
	}
	if len(p.Exemplars) != 2 {
		t.Fatalf("%d exemplars, want 2: %+v", len(p.Exemplars), p.Exemplars)
	}
	byValue := map[int64]metricdata.Exemplar[int64]{}
	for _, e := range p.Exemplars {
		byValue[e.Value] = e
	}
	if e, ok := byValue[4]; !ok || e.TraceID[0] != 3 || e.SpanID[0] != 4 || !e.Time.Equal(at) {
		t.Fatalf("bucket 1 exemplar %+v, want the later span", byValue[4])
	}
	if e, ok := byValue[20]; !ok || e.TraceID[0] != 1 {
		t.Fatalf("bucket 3 exemplar %+v", byValue[20])
	}
	// The point is a copy: recording more does not change it.
	h.RecordSampled(bounds, 21, at, later) // bucket 3: the exemplar's ids are rewritten in place
	for _, e := range p.Exemplars {
		if e.Value == 20 && e.TraceID[0] != 1 {
			t.Fatal("the data point's exemplar shares storage with the histogram")
		}
	}
	if p.BucketCounts[3] != 1 {
		t.Fatal("the data point's buckets share storage with the histogram")
	}
}

func TestHistogramRecordAllocs(t *testing.T) {
	var h Histogram[float64]
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	h.RecordSampled(bounds, 1, time.Time{}, sc) // first use allocates the buckets
	if n := testing.AllocsPerRun(1000, func() {
		h.Record(bounds, 7)
		h.RecordSampled(bounds, 8, time.Time{}, sc)
	}); n != 0 {
		t.Fatalf("%v allocations per record, want 0", n)
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram[float64]
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(bounds, float64(i%30))
	}
}

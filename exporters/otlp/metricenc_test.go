package otlp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/otelbee/otelbee/exporters/perservice"
)

// referenceRequest encodes rm as the exporter did before metricEncoder:
// perservice.SplitMetrics, then protobuf objects (metricpb_test.go) marshalled
// by proto.Marshal, one ResourceMetrics per service with points, those
// without points left out. A metric or scope without points for a
// resource is left out too (SplitMetrics does so whenever a point carries
// an identity; the encoder always does).
func referenceRequest(t *testing.T, rm *metricdata.ResourceMetrics) []*metricpb.ResourceMetrics {
	t.Helper()
	var out []*metricpb.ResourceMetrics
	for _, part := range perservice.SplitMetrics(rm) {
		if perservice.CountDataPoints(part) == 0 {
			continue
		}
		b, err := proto.Marshal(resourceMetricsPB(part))
		if err != nil {
			t.Fatal(err)
		}
		var m metricpb.ResourceMetrics
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var scopes []*metricpb.ScopeMetrics
		for _, sm := range m.ScopeMetrics {
			var ms []*metricpb.Metric
			for _, x := range sm.Metrics {
				if pointsOf(x) > 0 {
					ms = append(ms, x)
				}
			}
			if sm.Metrics = ms; len(ms) > 0 {
				scopes = append(scopes, sm)
			}
		}
		m.ScopeMetrics = scopes
		out = append(out, &m)
	}
	return out
}

func pointsOf(m *metricpb.Metric) int {
	switch d := m.Data.(type) {
	case *metricpb.Metric_Gauge:
		return len(d.Gauge.DataPoints)
	case *metricpb.Metric_Sum:
		return len(d.Sum.DataPoints)
	case *metricpb.Metric_Histogram:
		return len(d.Histogram.DataPoints)
	case *metricpb.Metric_ExponentialHistogram:
		return len(d.ExponentialHistogram.DataPoints)
	case *metricpb.Metric_Summary:
		return len(d.Summary.DataPoints)
	}
	return 0
}

// encoded decodes what the encoder wrote for its last export.
func encoded(t *testing.T, e *metricEncoder) []*metricpb.ResourceMetrics {
	t.Helper()
	var out []*metricpb.ResourceMetrics
	for i := 0; i+1 < len(e.spans); i++ {
		var m metricpb.ResourceMetrics
		if err := proto.Unmarshal(e.out[e.spans[i]:e.spans[i+1]], &m); err != nil {
			t.Fatalf("service %d: %v", i, err)
		}
		out = append(out, &m)
	}
	return out
}

// request is the encoded ExportMetricsServiceRequest of e's last export.
func request(e *metricEncoder) []byte {
	var b []byte
	for i := 0; i+1 < len(e.spans); i++ {
		b = appendMessage(b, 1, e.out[e.spans[i]:e.spans[i+1]])
	}
	return b
}

func compareEncoded(t *testing.T, e *metricEncoder, rm *metricdata.ResourceMetrics) {
	t.Helper()
	want := referenceRequest(t, rm)
	n := e.encode(rm)
	got := encoded(t, e)
	if len(got) != len(want) {
		t.Fatalf("%d ResourceMetrics, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("ResourceMetrics %d differs:\ngot  %s\nwant %s", i, protojson.Format(got[i]), protojson.Format(want[i]))
		}
	}
	if w := perservice.CountDataPoints(rm); n != w {
		t.Errorf("encode counted %d points, want %d", n, w)
	}
	// The Collector's own decoder reads the request as the reference's.
	var ref []byte
	for _, m := range want {
		b, _ := proto.Marshal(m)
		ref = appendMessage(ref, 1, b)
	}
	gotMD, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(request(e))
	if err != nil {
		t.Fatalf("pdata: %v", err)
	}
	wantMD, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(ref)
	if err != nil {
		t.Fatal(err)
	}
	gj, _ := (&pmetric.JSONMarshaler{}).MarshalMetrics(gotMD)
	wj, _ := (&pmetric.JSONMarshaler{}).MarshalMetrics(wantMD)
	if string(gj) != string(wj) {
		t.Errorf("pdata reads a different request:\ngot  %s\nwant %s", gj, wj)
	}
	if gotMD.DataPointCount() != n {
		t.Errorf("pdata counts %d points, want %d", gotMD.DataPointCount(), n)
	}
}

// richMetrics has every kind of point and attribute the encoder handles,
// for services and for the agent itself.
func richMetrics(round int) *metricdata.ResourceMetrics {
	t0 := time.Unix(1_700_000_000, 123)
	t1 := t0.Add(time.Duration(round+1) * time.Second)
	api := attribute.NewSet(append(identity("api", 100), attribute.String("network.io.direction", "inbound"),
		attribute.Bool("b", round%2 == 0), attribute.Int64("neg", -5), attribute.Float64("f", 0.5),
		attribute.String("empty", ""), attribute.StringSlice("ss", []string{"a", ""}),
		attribute.Int64Slice("is", []int64{1, -2}), attribute.Float64Slice("fs", nil), attribute.BoolSlice("bs", []bool{true, false}))...)
	db := attribute.NewSet(append(identity("db", 200), attribute.String("network.io.direction", "outbound"))...)
	ns := attribute.NewSet(attribute.String("service.name", "web"), attribute.String("service.namespace", "shop"),
		attribute.String("service.instance.id", "web-1"), attribute.String("otelbee.program.resource", "x"))
	own := attribute.NewSet(attribute.String("collector", "tcp"))
	none := attribute.NewSet()
	ex := []metricdata.Exemplar[float64]{{FilteredAttributes: []attribute.KeyValue{attribute.String("k", "v")}, Time: t1, Value: 1.5,
		SpanID: []byte{1, 2, 3, 4, 5, 6, 7, 8}, TraceID: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}}}
	exI := []metricdata.Exemplar[int64]{{Time: t1, Value: -3}}
	v := int64(round)
	return &metricdata.ResourceMetrics{
		Resource: resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", agentResource().Attributes()...),
		ScopeMetrics: []metricdata.ScopeMetrics{
			{
				Scope: instrumentation.Scope{Name: "github.com/otelbee/otelbee/collectors/tcp", Version: "v1",
					SchemaURL: "https://opentelemetry.io/schemas/1.26.0", Attributes: attribute.NewSet(attribute.String("s", "x"))},
				Metrics: []metricdata.Metrics{
					{Name: "otelbee.tcp.connection.opened", Unit: "{connection}", Description: "opened", Data: metricdata.Sum[int64]{
						Temporality: metricdata.CumulativeTemporality, IsMonotonic: true, DataPoints: []metricdata.DataPoint[int64]{
							{Attributes: api, StartTime: t0, Time: t1, Value: 3 + v, Exemplars: exI},
							{Attributes: db, StartTime: t0, Time: t1, Value: 0},
							{Attributes: own, StartTime: t0, Time: t1, Value: -7},
						}}},
					{Name: "otelbee.tcp.connection.active", Data: metricdata.Sum[float64]{
						Temporality: metricdata.DeltaTemporality, DataPoints: []metricdata.DataPoint[float64]{
							{Attributes: ns, Time: t1, Value: 0.25 * float64(round)},
						}}},
					{Name: "empty", Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality}},
					{Name: "otelbee.tcp.connection.duration", Unit: "s", Data: metricdata.Histogram[float64]{
						Temporality: metricdata.CumulativeTemporality, DataPoints: []metricdata.HistogramDataPoint[float64]{
							{Attributes: api, StartTime: t0, Time: t1, Count: 4, Sum: 1.25, Bounds: []float64{0.1, 1, 10},
								BucketCounts: []uint64{1, 2, 0, 1}, Min: metricdata.NewExtrema(0.05), Max: metricdata.NewExtrema(12.0), Exemplars: ex},
							{Attributes: db, StartTime: t0, Time: t1, Count: 0, Sum: 0, Bounds: []float64{0.1}, BucketCounts: []uint64{0, 0}},
						}}},
				},
			},
			{
				Scope: instrumentation.Scope{Name: "github.com/otelbee/otelbee/agent"},
				Metrics: []metricdata.Metrics{
					{Name: "g.int", Data: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{
						{Attributes: none, Time: t1, Value: 1 << 40}, {Attributes: api, Time: t1, Value: v}}}},
					{Name: "g.float", Data: metricdata.Gauge[float64]{DataPoints: []metricdata.DataPoint[float64]{
						{Attributes: db, Value: -2.5}}}},
					{Name: "h.int", Data: metricdata.Histogram[int64]{Temporality: metricdata.DeltaTemporality,
						DataPoints: []metricdata.HistogramDataPoint[int64]{{Attributes: ns, StartTime: t0, Time: t1, Count: 1, Sum: 9,
							BucketCounts: []uint64{1}, Min: metricdata.NewExtrema[int64](9), Max: metricdata.NewExtrema[int64](9)}}}},
					{Name: "e.float", Data: metricdata.ExponentialHistogram[float64]{Temporality: metricdata.DeltaTemporality,
						DataPoints: []metricdata.ExponentialHistogramDataPoint[float64]{
							{Attributes: api, StartTime: t0, Time: t1, Count: 5, Sum: 3.5, Scale: -3, ZeroCount: 1, ZeroThreshold: 1e-9,
								PositiveBucket: metricdata.ExponentialBucket{Offset: -2, Counts: []uint64{1, 0, 300}},
								NegativeBucket: metricdata.ExponentialBucket{Offset: 4, Counts: []uint64{2}},
								Min:            metricdata.NewExtrema(-1.0), Max: metricdata.NewExtrema(8.0), Exemplars: ex},
							{Attributes: own, Time: t1, Scale: 20},
						}}},
					{Name: "e.int", Data: metricdata.ExponentialHistogram[int64]{Temporality: metricdata.CumulativeTemporality,
						DataPoints: []metricdata.ExponentialHistogramDataPoint[int64]{{Attributes: db, StartTime: t0, Time: t1, Count: 2, Sum: 4,
							PositiveBucket: metricdata.ExponentialBucket{Counts: []uint64{2}}}}}},
					{Name: "summary", Data: metricdata.Summary{DataPoints: []metricdata.SummaryDataPoint{
						{Attributes: ns, StartTime: t0, Time: t1, Count: 3, Sum: 6,
							QuantileValues: []metricdata.QuantileValue{{Quantile: 0, Value: 1}, {Quantile: 0.5, Value: 0}, {Quantile: 1, Value: 3}}},
						{Attributes: own},
					}}},
				},
			},
		},
	}
}

// TestMetricEncoderMatchesSDKObjects: the request the encoder writes
// decodes (with protobuf and with the Collector's pdata) to the same
// request as the protobuf objects the exporter built before, export after
// export (series come, go and change values; the buffers and the series'
// cached attributes are reused).
func TestMetricEncoderMatchesSDKObjects(t *testing.T) {
	e := newMetricEncoder()
	for round := range 3 {
		t.Run(fmt.Sprint("rich/", round), func(t *testing.T) { compareEncoded(t, e, richMetrics(round)) })
		t.Run(fmt.Sprint("sdk/", round), func(t *testing.T) { compareEncoded(t, e, collectMetrics(t)) })
	}
	// Fewer services than before: the last one's bytes are gone.
	small := richMetrics(0)
	small.ScopeMetrics = small.ScopeMetrics[1:2]
	small.ScopeMetrics[0].Metrics = small.ScopeMetrics[0].Metrics[1:2]
	compareEncoded(t, e, small)
	// No points at all: nothing to send.
	if n := e.encode(&metricdata.ResourceMetrics{Resource: small.Resource}); n != 0 || len(e.spans) != 1 {
		t.Errorf("empty export: %d points, %d services", n, len(e.spans)-1)
	}
	// Without a resource.
	compareEncoded(t, e, &metricdata.ResourceMetrics{ScopeMetrics: small.ScopeMetrics})
}

// TestMetricEncoderSweep: series no export sees any more are forgotten
// once they outnumber the live ones, and come back correct.
func TestMetricEncoderSweep(t *testing.T) {
	e := newMetricEncoder()
	for round := range 4 {
		rm := seriesMetrics(3000, round*3000)
		compareEncoded(t, e, rm)
	}
	if e.nseries > 2*3000+1024+3000 {
		t.Errorf("%d series kept for 3000 live", e.nseries)
	}
}

// seriesMetrics is n TCP-like series over 10 services: a counter and a
// cumulative histogram point each, as a collection at the series budget.
func seriesMetrics(n, first int) *metricdata.ResourceMetrics {
	t0 := time.Unix(1_700_000_000, 0)
	counts := make([]metricdata.DataPoint[int64], n)
	hists := make([]metricdata.HistogramDataPoint[float64], n)
	bounds := []float64{0.001, 0.01, 0.1, 1, 10}
	for i := range n {
		s := first + i
		set := attribute.NewSet(attribute.String("service.name", fmt.Sprint("svc-", s%10)),
			attribute.String("service.instance.id", fmt.Sprint("node-1:svc-", s%10)),
			attribute.String("otelbee.network.connection.direction", "outbound"),
			attribute.String("network.peer.address", fmt.Sprintf("10.0.%d.%d", s/250%250, s%250)),
			attribute.Int("server.port", 443), attribute.String("network.type", "ipv4"), attribute.String("network.transport", "tcp"))
		counts[i] = metricdata.DataPoint[int64]{Attributes: set, StartTime: t0, Time: t0.Add(time.Minute), Value: int64(s)}
		hists[i] = metricdata.HistogramDataPoint[float64]{Attributes: set, StartTime: t0, Time: t0.Add(time.Minute), Count: 6, Sum: 2.5,
			Bounds: bounds, BucketCounts: []uint64{1, 1, 1, 1, 1, 1}}
	}
	return &metricdata.ResourceMetrics{
		Resource: agentResource(),
		ScopeMetrics: []metricdata.ScopeMetrics{{
			Scope: instrumentation.Scope{Name: "github.com/otelbee/otelbee/collectors/tcp", Version: "v1"},
			Metrics: []metricdata.Metrics{
				{Name: "otelbee.tcp.connection.opened", Unit: "{connection}", Data: metricdata.Sum[int64]{
					Temporality: metricdata.CumulativeTemporality, IsMonotonic: true, DataPoints: counts}},
				{Name: "otelbee.tcp.connection.duration", Unit: "s", Data: metricdata.Histogram[float64]{
					Temporality: metricdata.CumulativeTemporality, DataPoints: hists}},
			},
		}},
	}
}

// benchmarkEncode measures one export of n series (two points each) once
// the series are known: what each export at the budget costs.
func benchmarkEncode(b *testing.B, n int, enc func(*metricdata.ResourceMetrics)) {
	rm := seriesMetrics(n, 0)
	enc(rm)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		enc(rm)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/series")
}

func BenchmarkMetricEncode1000Series(b *testing.B) {
	e := newMetricEncoder()
	benchmarkEncode(b, 1000, func(rm *metricdata.ResourceMetrics) { e.encode(rm) })
}

func BenchmarkMetricEncode50000Series(b *testing.B) {
	e := newMetricEncoder()
	benchmarkEncode(b, 50000, func(rm *metricdata.ResourceMetrics) { e.encode(rm) })
}

// The path before: SplitMetrics, protobuf objects, proto.Marshal.
func benchmarkObjects(b *testing.B, n int) {
	benchmarkEncode(b, n, func(rm *metricdata.ResourceMetrics) {
		for _, part := range perservice.SplitMetrics(rm) {
			if _, err := proto.Marshal(resourceMetricsPB(part)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMetricObjects1000Series(b *testing.B)  { benchmarkObjects(b, 1000) }
func BenchmarkMetricObjects50000Series(b *testing.B) { benchmarkObjects(b, 50000) }

// benchmarkExport measures MetricExporter.Export of n series (two points
// each) to a local OTLP/HTTP endpoint that reads and discards the request:
// the encoding, the sender's framing of it into its request buffer and the
// HTTP round trip (the server's reading included: same process, same
// CPUs).
func benchmarkExport(b *testing.B, n int) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	benchmarkExportTo(b, n, srv.URL, ProtocolHTTPProtobuf)
}

// benchmarkExportGRPC is benchmarkExport over OTLP/gRPC, to a server
// receiving the request as bytes (no decoding: the receiver's cost is not
// the agent's).
func benchmarkExportGRPC(b *testing.B, n int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	// A Collector's gRPC receiver takes 4 MiB by default
	// (max_recv_msg_size_mib): the exporter splits larger exports between
	// services, but a service of more than 4 MiB is one request.
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.ForceServerCodecV2(discardCodec{}),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var m rawMessage
			if err := stream.RecvMsg(&m); err != nil {
				return err
			}
			return stream.SendMsg(&rawMessage{})
		}))
	go srv.Serve(ln)
	defer srv.Stop()
	benchmarkExportTo(b, n, "http://"+ln.Addr().String(), ProtocolGRPC)
}

// discardCodec receives a request without keeping it and sends an
// empty response.
type discardCodec struct{ rawCodec }

func (discardCodec) Unmarshal(mem.BufferSlice, any) error { return nil }

func benchmarkExportTo(b *testing.B, n int, endpoint, protocol string) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"} {
		b.Setenv(k, "")
	}
	ctx := context.Background()
	exp, err := NewMetricExporter(ctx, Config{Endpoint: endpoint, Protocol: protocol})
	if err != nil {
		b.Fatal(err)
	}
	defer exp.Shutdown(ctx)
	benchmarkEncode(b, n, func(rm *metricdata.ResourceMetrics) {
		if err := exp.Export(ctx, rm); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkMetricExport1000Series(b *testing.B)      { benchmarkExport(b, 1000) }
func BenchmarkMetricExport50000Series(b *testing.B)     { benchmarkExport(b, 50000) }
func BenchmarkMetricExportGRPC1000Series(b *testing.B)  { benchmarkExportGRPC(b, 1000) }
func BenchmarkMetricExportGRPC50000Series(b *testing.B) { benchmarkExportGRPC(b, 50000) }

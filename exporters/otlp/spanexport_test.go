package otlp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// benchmarkSpanExport measures TraceExporter.ExportResourceSpans of n
// already encoded server spans (10 services, as package spans hands them
// over) to a local OTLP/HTTP endpoint that reads and discards the request:
// what the agent does per span batch after the encoding.
func benchmarkSpanExport(b *testing.B, n int) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"} {
		b.Setenv(k, "")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	ctx := context.Background()
	exp, err := NewTraceExporter(ctx, Config{Endpoint: srv.URL, Protocol: ProtocolHTTPProtobuf})
	if err != nil {
		b.Fatal(err)
	}
	defer exp.Shutdown(ctx)
	const services = 10
	bodies := make([][]byte, services)
	for s := range services {
		rs := &tracepb.ResourceSpans{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", fmt.Sprintf("svc-%d", s))}},
			ScopeSpans: []*tracepb.ScopeSpans{{
				Scope: &commonpb.InstrumentationScope{Name: "github.com/otelbee/otelbee/collectors/http"},
			}},
		}
		for i := range n / services {
			rs.ScopeSpans[0].Spans = append(rs.ScopeSpans[0].Spans, &tracepb.Span{
				TraceId: make([]byte, 16), SpanId: []byte{1, 2, 3, 4, 5, 6, 7, byte(i)},
				Name: "GET /api/items/{id}", Kind: tracepb.Span_SPAN_KIND_SERVER,
				StartTimeUnixNano: 1, EndTimeUnixNano: 2,
				Attributes: []*commonpb.KeyValue{
					str("http.request.method", "GET"), str("url.path", "/api/items/42"),
					str("http.route", "/api/items/{id}"), str("network.peer.address", "10.0.0.7"),
					{Key: "http.response.status_code", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 200}}},
				},
			})
		}
		if bodies[s], err = proto.Marshal(rs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := exp.ExportResourceSpans(ctx, bodies, n); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n)/1000, "us/span")
}

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func BenchmarkSpanExport1000Spans(b *testing.B)  { benchmarkSpanExport(b, 1000) }
func BenchmarkSpanExport50000Spans(b *testing.B) { benchmarkSpanExport(b, 50000) }

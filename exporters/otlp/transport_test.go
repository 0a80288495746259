package otlp

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	collmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestMetricsTransportFromMetricsVariables: the metrics client takes its
// headers, compression and endpoint from the metrics variables over the
// generic ones, never from the traces ones its trace-client transport would
// read by itself.
func TestMetricsTransportFromMetricsVariables(t *testing.T) {
	clearOTLPEnv(t)
	var (
		mu       sync.Mutex
		got      []http.Header
		paths    []string
		services int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = gz
		}
		data, _ := io.ReadAll(body)
		var req collmetricpb.ExportMetricsServiceRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		got = append(got, r.Header.Clone())
		paths = append(paths, r.URL.Path)
		services += len(req.ResourceMetrics)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&collmetricpb.ExportMetricsServiceResponse{})
		w.Write(b)
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1") // overridden below
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", srv.URL+"/custom/metrics")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=g")
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=a%20b,x-other=1")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=wrong")
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:2/v1/traces")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exp, err := NewMetricExporter(ctx, Config{Protocol: ProtocolHTTPProtobuf})
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(ctx)
	if err := exp.Export(ctx, collectMetrics(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || services != 3 {
		t.Fatalf("%d requests with %d ResourceMetrics, want 1 with 3", len(got), services)
	}
	h := got[0]
	if paths[0] != "/custom/metrics" || h.Get("x-tenant") != "a b" || h.Get("x-other") != "1" || h.Get("x-generic") != "" ||
		h.Get("Content-Encoding") != "gzip" || h.Get("Content-Type") != "application/x-protobuf" {
		t.Errorf("path %s, headers %v", paths[0], h)
	}
}

func TestReadTransportSettingsRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"OTEL_EXPORTER_OTLP_METRICS_HEADERS", "novalue"},
		{"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "10s"},
		{"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd"},
		{"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "/nonexistent.pem"},
		{"OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "/only-the-key.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTLPEnv(t)
			t.Setenv(tc.name, tc.value)
			if _, err := readTransportSettings(metricsSignal); err == nil {
				t.Errorf("%s=%s accepted", tc.name, tc.value)
			}
		})
	}
	clearOTLPEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
	ts, err := readTransportSettings(metricsSignal)
	if err != nil || ts.timeout != 2500*time.Millisecond || ts.gzip || ts.tls != nil {
		t.Errorf("settings %+v, %v", ts, err)
	}
}

// TestExportResourceSpansOnTheWire: encoded ResourceSpans handed to the
// trace exporter arrive as those messages, in one request, over gRPC and
// HTTP, with gzip when asked; a refused request counts its spans lost.
func TestExportResourceSpansOnTheWire(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			clearOTLPEnv(t)
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
			var endpoint string
			var r *receiver
			if protocol == ProtocolGRPC {
				endpoint, r = startGRPC(t)
			} else {
				endpoint, r = startHTTP(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			exp, err := NewTraceExporter(ctx, Config{Endpoint: endpoint, Protocol: protocol})
			if err != nil {
				t.Fatal(err)
			}
			defer exp.Shutdown(ctx)
			var parts [][]byte
			var want []*tracepb.ResourceSpans
			for i, svc := range []string{"a", "b"} {
				rs := &tracepb.ResourceSpans{
					Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
						Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: svc}}}}},
					ScopeSpans: []*tracepb.ScopeSpans{{Spans: make([]*tracepb.Span, i+1)}},
				}
				for j := range rs.ScopeSpans[0].Spans {
					rs.ScopeSpans[0].Spans[j] = &tracepb.Span{Name: fmt.Sprint(svc, j), TraceId: make([]byte, 16), SpanId: []byte{1, 2, 3, 4, 5, 6, 7, byte(j + 1)}}
				}
				b, err := proto.Marshal(rs)
				if err != nil {
					t.Fatal(err)
				}
				parts = append(parts, b)
				want = append(want, rs)
			}
			if err := exp.ExportResourceSpans(ctx, parts, 3); err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			if r.requests != 1 || len(r.spans) != 2 {
				t.Fatalf("%d requests, %d ResourceSpans; want 1 and 2", r.requests, len(r.spans))
			}
			for i := range want {
				if !proto.Equal(r.spans[i], want[i]) {
					t.Errorf("ResourceSpans %d: got %v, want %v", i, r.spans[i], want[i])
				}
			}
			r.mu.Unlock()
			if exp.Exported() != 3 || exp.Dropped() != 0 {
				t.Errorf("exported %d dropped %d", exp.Exported(), exp.Dropped())
			}

			refused, err := NewTraceExporter(ctx, Config{Endpoint: refusedAddr(t), Protocol: protocol})
			if err != nil {
				t.Fatal(err)
			}
			defer refused.Shutdown(context.Background())
			rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer rcancel()
			if err := refused.ExportResourceSpans(rctx, parts, 3); err == nil {
				t.Fatal("export to a refused endpoint succeeded")
			}
			if refused.DroppedBy(ReasonExportFailed) != 3 || refused.Failures() != 1 {
				t.Errorf("dropped %d failures %d, want 3 and 1", refused.DroppedBy(ReasonExportFailed), refused.Failures())
			}
		})
	}
}

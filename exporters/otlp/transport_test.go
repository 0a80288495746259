package otlp

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	collmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
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

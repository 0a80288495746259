package otlp

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	collmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// receiver is a minimal in-process OTLP receiver (gRPC and HTTP/protobuf)
// recording what arrives, so the tests exercise the real exporters end to
// end without a collector dependency.
type receiver struct {
	mu       sync.Mutex
	requests int
	metrics  []*metricpb.ResourceMetrics
	spans    []*tracepb.ResourceSpans
	paths    []string

	collmetricpb.UnimplementedMetricsServiceServer
}

func (r *receiver) Export(_ context.Context, req *collmetricpb.ExportMetricsServiceRequest) (*collmetricpb.ExportMetricsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	r.metrics = append(r.metrics, req.GetResourceMetrics()...)
	return &collmetricpb.ExportMetricsServiceResponse{}, nil
}

// traceService adapts receiver to the trace service, whose method is also
// named Export.
type traceService struct {
	colltracepb.UnimplementedTraceServiceServer
	r *receiver
}

func (t traceService) Export(_ context.Context, req *colltracepb.ExportTraceServiceRequest) (*colltracepb.ExportTraceServiceResponse, error) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	t.r.requests++
	t.r.spans = append(t.r.spans, req.GetResourceSpans()...)
	return &colltracepb.ExportTraceServiceResponse{}, nil
}

// startGRPC serves OTLP/gRPC on a loopback port and returns "host:port".
func startGRPC(t *testing.T) (string, *receiver) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{}
	srv := grpc.NewServer()
	collmetricpb.RegisterMetricsServiceServer(srv, r)
	colltracepb.RegisterTraceServiceServer(srv, traceService{r: r})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), r
}

// startHTTP serves OTLP/HTTP protobuf and returns its base URL.
func startHTTP(t *testing.T) (string, *receiver) {
	t.Helper()
	r := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		data, err := io.ReadAll(body)
		if err != nil || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, fmt.Sprintf("bad request: %v %q", err, req.Header.Get("Content-Type")), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.paths = append(r.paths, req.URL.Path)
		var resp proto.Message
		switch req.URL.Path {
		case "/v1/metrics":
			var m collmetricpb.ExportMetricsServiceRequest
			if err := proto.Unmarshal(data, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.requests++
			r.metrics = append(r.metrics, m.GetResourceMetrics()...)
			resp = &collmetricpb.ExportMetricsServiceResponse{}
		case "/v1/traces":
			var m colltracepb.ExportTraceServiceRequest
			if err := proto.Unmarshal(data, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.requests++
			r.spans = append(r.spans, m.GetResourceSpans()...)
			resp = &colltracepb.ExportTraceServiceResponse{}
		default:
			http.NotFound(w, req)
			return
		}
		out, _ := proto.Marshal(resp)
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, r
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// clearOTLPEnv isolates a test from the developer's OTEL_* environment.
func clearOTLPEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "") // restores the value after the test
			_ = os.Unsetenv(k)
		}
	}
}

// attrMap renders OTLP attributes as key -> string value.
func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch v.Value.(type) {
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		default:
			m[kv.GetKey()] = v.GetStringValue()
		}
	}
	return m
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

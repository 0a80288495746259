package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fastRetry keeps the tests' backoff short; Retry-After and RetryInfo
// still set the delays they ask for.
var fastRetry = retrySettings{initial: 10 * time.Millisecond, max: 50 * time.Millisecond, maxElapsed: 20 * time.Second}

// testRequest is an encoded ExportMetricsServiceRequest of the exporter's
// own points, the bytes a sender is handed.
func testRequest(t *testing.T) []byte {
	t.Helper()
	e := newMetricEncoder()
	e.encode(collectMetrics(t))
	var req []byte
	for i := range len(e.spans) - 1 {
		req = appendRequestField(req, e.out[e.spans[i]:e.spans[i+1]])
	}
	var m collmetricpb.ExportMetricsServiceRequest
	if err := proto.Unmarshal(req, &m); err != nil || len(m.ResourceMetrics) != 3 {
		t.Fatalf("test request: %d ResourceMetrics, %v", len(m.ResourceMetrics), err)
	}
	return req
}

func partialSuccess(t *testing.T, rejected int64, msg string) []byte {
	t.Helper()
	b, err := proto.Marshal(&collmetricpb.ExportMetricsServiceResponse{PartialSuccess: &collmetricpb.ExportMetricsPartialSuccess{
		RejectedDataPoints: rejected, ErrorMessage: msg}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSenderHTTPRetriesHeadersGzip: against a server that answers 503,
// then 429 with Retry-After: 1, then 200 with a partial success, the
// sender retries after at least the second asked for, sends the metrics
// variables' headers, gzip'd, the same bytes every time (the request it
// was handed), and returns the partial success; a 400 is not retried; the
// request and gzip buffers are reused by the next send.
func TestSenderHTTPRetriesHeadersGzip(t *testing.T) {
	clearOTLPEnv(t)
	want := testRequest(t)
	var (
		mu     sync.Mutex
		bodies [][]byte
		times  []time.Time
		hdrs   []http.Header
		answer = []int{503, 429, 200, 400}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 415)
			return
		}
		b, _ := io.ReadAll(gz)
		mu.Lock()
		i := len(bodies)
		bodies, times, hdrs = append(bodies, b), append(times, time.Now()), append(hdrs, r.Header.Clone())
		mu.Unlock()
		switch code := answer[i%len(answer)]; code {
		case 200:
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.Write(partialSuccess(t, 2, "two points had no name"))
		case 429:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", code)
		default:
			http.Error(w, "no", code)
		}
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", srv.URL+"/v1/metrics")
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=a%20b")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=g")
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
	s, err := newSender(Config{}, metricsSignal, ProtocolHTTPProtobuf)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.retry = fastRetry
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	req := append(s.request(), want...)
	res, err := s.send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.rejected != 2 || res.message != "two points had no name" {
		t.Errorf("partial success %+v, want 2 rejected", res)
	}
	mu.Lock()
	if len(bodies) != 3 {
		t.Fatalf("%d attempts, want 3 (503, 429, 200)", len(bodies))
	}
	for i, b := range bodies {
		if !bytes.Equal(b, want) {
			t.Errorf("attempt %d: %d bytes differ from the %d handed to the sender", i, len(b), len(want))
		}
		h := hdrs[i]
		if h.Get("x-tenant") != "a b" || h.Get("x-generic") != "" || h.Get("Content-Encoding") != "gzip" ||
			h.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("attempt %d: headers %v", i, h)
		}
	}
	if d := times[2].Sub(times[1]); d < time.Second {
		t.Errorf("retried %s after a 429 with Retry-After: 1", d)
	}
	mu.Unlock()

	// The next send reuses the buffers, and a 400 is final.
	next := s.request()
	if cap(next) < len(want) || &next[:1][0] != &req[:1][0] {
		t.Errorf("the request buffer was not kept for the next export")
	}
	zbuf := &s.zbuf.Bytes()[:1][0]
	if _, err := s.send(ctx, append(next, want...)); err == nil {
		t.Fatal("a 400 was not an error")
	}
	mu.Lock()
	if len(bodies) != 4 {
		t.Errorf("%d attempts after the 400, want 4: a 400 is not retried", len(bodies))
	}
	mu.Unlock()
	if &s.zbuf.Bytes()[:1][0] != zbuf {
		t.Errorf("the gzip buffer was not reused")
	}
}

// grpcFlaky is a metrics service answering Unavailable, then
// ResourceExhausted with a RetryInfo of 1 s, then OK with a partial
// success, then InvalidArgument.
type grpcFlaky struct {
	collmetricpb.UnimplementedMetricsServiceServer
	mu       sync.Mutex
	requests [][]byte
	times    []time.Time
	md       []metadata.MD
}

func (g *grpcFlaky) Export(ctx context.Context, req *collmetricpb.ExportMetricsServiceRequest) (*collmetricpb.ExportMetricsServiceResponse, error) {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	md, _ := metadata.FromIncomingContext(ctx)
	g.mu.Lock()
	i := len(g.requests)
	g.requests, g.times, g.md = append(g.requests, b), append(g.times, time.Now()), append(g.md, md)
	g.mu.Unlock()
	switch i % 4 {
	case 0:
		return nil, status.Error(codes.Unavailable, "restarting")
	case 1:
		st, _ := status.New(codes.ResourceExhausted, "over quota").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
		return nil, st.Err()
	case 2:
		return &collmetricpb.ExportMetricsServiceResponse{PartialSuccess: &collmetricpb.ExportMetricsPartialSuccess{
			RejectedDataPoints: 1, ErrorMessage: "one"}}, nil
	}
	return nil, status.Error(codes.InvalidArgument, "bad")
}

// compressions records the compression of each request the server
// receives.
type compressions struct {
	mu  sync.Mutex
	got []string
}

func (c *compressions) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *compressions) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok {
		c.mu.Lock()
		c.got = append(c.got, h.Compression)
		c.mu.Unlock()
	}
}
func (c *compressions) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *compressions) HandleConn(context.Context, stats.ConnStats)                       {}

// TestSenderGRPCRetriesHeadersGzip: the same over OTLP/gRPC, through the
// raw codec: Unavailable is retried, ResourceExhausted with a RetryInfo
// after its delay, the headers are metadata, the request is gzip'd and
// decodes to what was handed, the partial success is returned,
// InvalidArgument is final.
func TestSenderGRPCRetriesHeadersGzip(t *testing.T) {
	clearOTLPEnv(t)
	want := testRequest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, comp := &grpcFlaky{}, &compressions{}
	srv := grpc.NewServer(grpc.StatsHandler(comp))
	collmetricpb.RegisterMetricsServiceServer(srv, g)
	go srv.Serve(ln)
	defer srv.Stop()
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=a%20b")
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip")
	s, err := newSender(Config{Endpoint: ln.Addr().String()}, metricsSignal, ProtocolGRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.retry = fastRetry
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := s.send(ctx, append(s.request(), want...))
	if err != nil {
		t.Fatal(err)
	}
	if res.rejected != 1 || res.message != "one" {
		t.Errorf("partial success %+v, want 1 rejected", res)
	}
	var wantMsg collmetricpb.ExportMetricsServiceRequest
	if err := proto.Unmarshal(want, &wantMsg); err != nil {
		t.Fatal(err)
	}
	wantBytes, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&wantMsg)
	g.mu.Lock()
	if len(g.requests) != 3 {
		t.Fatalf("%d attempts, want 3", len(g.requests))
	}
	for i, b := range g.requests {
		if !bytes.Equal(b, wantBytes) {
			t.Errorf("attempt %d: the request differs from the one handed to the sender", i)
		}
		if v := g.md[i].Get("x-tenant"); len(v) != 1 || v[0] != "a b" {
			t.Errorf("attempt %d: metadata %v", i, g.md[i])
		}
	}
	if d := g.times[2].Sub(g.times[1]); d < time.Second {
		t.Errorf("retried %s after a RetryInfo of 1 s", d)
	}
	g.mu.Unlock()
	comp.mu.Lock()
	for i, c := range comp.got {
		if c != "gzip" {
			t.Errorf("request %d compressed %q, want gzip", i, c)
		}
	}
	comp.mu.Unlock()
	if _, err := s.send(ctx, append(s.request(), want...)); status.Code(errorsCause(err)) != codes.InvalidArgument {
		t.Errorf("after InvalidArgument: %v", err)
	}
	g.mu.Lock()
	if len(g.requests) != 4 {
		t.Errorf("%d attempts, want 4: InvalidArgument is not retried", len(g.requests))
	}
	g.mu.Unlock()
}

// errorsCause unwraps err to the gRPC status error inside it.
func errorsCause(err error) error {
	for err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
	return nil
}

// TestMetricExporterPartialSuccess: points a receiver rejects are counted
// dropped (reason rejected), the rest exported: produced = exported +
// dropped.
func TestMetricExporterPartialSuccess(t *testing.T) {
	clearOTLPEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(partialSuccess(t, 2, "rejected two"))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exp, err := NewMetricExporter(ctx, Config{Endpoint: srv.URL, Protocol: ProtocolHTTPProtobuf})
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(ctx)
	rm := collectMetrics(t)
	n := int64(newMetricEncoder().encode(rm))
	if err := exp.Export(ctx, rm); err != nil {
		t.Fatal(err)
	}
	if exp.DroppedBy(ReasonRejected) != 2 || exp.Exported() != n-2 || exp.Failures() != 0 {
		t.Errorf("rejected %d exported %d failures %d; want 2, %d, 0", exp.DroppedBy(ReasonRejected), exp.Exported(), exp.Failures(), n-2)
	}
}

func TestParseExportResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want exportResult
		err  bool
	}{
		{"empty", nil, exportResult{}, false},
		{"empty partial success", []byte{0x0a, 0x00}, exportResult{}, false},
		{"rejected and message", partialSuccess(t, 7, "why"), exportResult{rejected: 7, message: "why"}, false},
		{"unknown fields skipped", append([]byte{0x10, 0x05}, partialSuccess(t, 3, "")...), exportResult{rejected: 3}, false},
		{"truncated", partialSuccess(t, 7, "why")[:4], exportResult{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseExportResponse(tc.in)
			if (err != nil) != tc.err || (!tc.err && got != tc.want) {
				t.Errorf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func FuzzParseExportResponse(f *testing.F) {
	f.Add([]byte{0x0a, 0x05, 0x08, 0x07, 0x12, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		res, _ := parseExportResponse(b)
		if res.rejected < 0 {
			t.Fatalf("negative rejected count %d", res.rejected)
		}
	})
}

// TestSenderTimeoutBoundsRetries: OTEL_EXPORTER_OTLP_TIMEOUT bounds the
// whole export, retries included, over both protocols: with the SDK's
// backoff (the first retry ~5 s later) and a 300 ms timeout, a receiver
// that keeps answering 503 (HTTP) or refuses connections (gRPC
// Unavailable) costs one attempt and a failure, not a minute of retrying
// (which the periodic reader's interval would outlast, leaving failures
// uncounted for 30 s).
func TestSenderTimeoutBoundsRetries(t *testing.T) {
	clearOTLPEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "300")
	var mu sync.Mutex
	attempts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		attempts++
		mu.Unlock()
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	for _, tc := range []struct{ protocol, endpoint string }{
		{ProtocolHTTPProtobuf, srv.URL},
		{ProtocolGRPC, "http://" + refusedAddr(t)},
	} {
		t.Run(strings.ReplaceAll(tc.protocol, "/", "_"), func(t *testing.T) {
			s, err := newSender(Config{Endpoint: tc.endpoint}, metricsSignal, tc.protocol)
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = s.send(ctx, append(s.request(), testRequest(t)...))
			if err == nil {
				t.Fatal("an export to a failing receiver succeeded")
			}
			if ctx.Err() != nil {
				t.Fatalf("the export outlived its caller's 20 s: %v", err)
			}
			t.Logf("%s: %v", tc.protocol, err)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts != 1 {
		t.Errorf("%d HTTP attempts, want 1: the next retry comes after the timeout", attempts)
	}
}

// TestMetricExporterSplitsLargeExports: an export over the request limit
// leaves in several requests, split between services, every point once;
// when one of them fails, its points (and only those) are counted lost.
func TestMetricExporterSplitsLargeExports(t *testing.T) {
	clearOTLPEnv(t)
	var (
		mu       sync.Mutex
		requests int
		services int
		points   int64
	)
	failSecond := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req collmetricpb.ExportMetricsServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		requests++
		if failSecond && requests == 2 {
			http.Error(w, "refused", 400)
			return
		}
		services += len(req.ResourceMetrics)
		for _, rm := range req.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					points += int64(pointsOf(m))
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rm := collectMetrics(t)
	enc := newMetricEncoder()
	n := int64(enc.encode(rm))
	largest := 0
	for i := range len(enc.spans) - 1 {
		largest = max(largest, enc.spans[i+1]-enc.spans[i])
	}
	for _, fail := range []bool{false, true} {
		mu.Lock()
		requests, services, points, failSecond = 0, 0, 0, fail
		mu.Unlock()
		exp, err := NewMetricExporter(ctx, Config{Endpoint: srv.URL, Protocol: ProtocolHTTPProtobuf})
		if err != nil {
			t.Fatal(err)
		}
		exp.maxRequest = largest + 8 // one service a request
		err = exp.Export(ctx, rm)
		exp.Shutdown(ctx)
		mu.Lock()
		if requests != 3 {
			t.Errorf("fail=%v: %d requests, want 3 (one per service)", fail, requests)
		}
		if !fail {
			if err != nil || services != 3 || points != n || exp.Exported() != n || exp.Dropped() != 0 {
				t.Errorf("%d services, %d of %d points received; exported %d dropped %d; %v", services, points, n, exp.Exported(), exp.Dropped(), err)
			}
		} else {
			lost := n - points
			if err == nil || services != 2 || lost <= 0 || exp.Exported() != points || exp.DroppedBy(ReasonExportFailed) != lost || exp.Failures() != 1 {
				t.Errorf("one request refused: %d services, %d points received; exported %d dropped %d failures %d; %v",
					services, points, exp.Exported(), exp.Dropped(), exp.Failures(), err)
			}
		}
		mu.Unlock()
	}
}

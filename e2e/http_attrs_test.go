package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/otelbee/otelbee/e2e/harness"
)

// rawRequest sends one request as raw bytes on its own connection and
// reads the response to the server's close.
func rawRequest(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// serverSpans are the server spans of one service.
func serverSpans(ss []harness.Span, service string) []harness.Span {
	var out []harness.Span
	for _, s := range ss {
		if s.Resource["service.name"] == service && s.Kind == "Server" {
			out = append(out, s)
		}
	}
	return out
}

// TestHTTPPoisonPathExport: a request whose path is not UTF-8 (GET
// /caf\xc3) and one with a session id in a path parameter, against a real
// Go server, with OTLP/HTTP to the real OpenTelemetry Collector. The bad
// request's span arrives with a sanitised path, no secret reaches the
// collector, and the spans and metric exports after it keep arriving:
// exact counts against the server's own.
func TestHTTPPoisonPathExport(t *testing.T) {
	harness.RequireRoot(t)
	col := harness.StartCollector(t)
	harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=500", "OTEL_BSP_SCHEDULE_DELAY=200"},
		"--collectors=http", "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	svc := "poison-" + strconv.Itoa(rand.IntN(1<<30))
	addr, stop := goServer(t, svc)
	hello := func(n int) {
		for range n {
			if r := rawRequest(t, addr, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(r, "HTTP/1.1 200") {
				t.Fatalf("hello: %q", r)
			}
		}
	}
	res := harness.Filter{Resource: map[string]string{"service.name": svc}}
	waitTotal := func(want int) {
		col.WaitForMetric(t, "http.server.request.duration", res, func(v float64) bool { return v == float64(want) }, 30*time.Second)
		col.WaitForSpans(t, func(ss []harness.Span) bool { return len(serverSpans(ss, svc)) == want }, 30*time.Second)
	}
	hello(5)
	waitTotal(5)
	if r := rawRequest(t, addr, "GET /caf\xc3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(r, "HTTP/1.1 404") {
		t.Fatalf("the server's answer to the bad path: %q", r)
	}
	if r := rawRequest(t, addr, "GET /anything/semi;jsessionid=SECRET HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(r, "HTTP/1.1 404") {
		t.Fatalf("the server's answer to the session path: %q", r)
	}
	hello(5)
	waitTotal(12)
	// And after more metric exports, still exact.
	hello(3)
	waitTotal(15)
	rep := stop()
	total := 0
	for _, v := range rep.Counts {
		total += v
	}
	if total != 15 || rep.Counts["GET 200 /hello"] != 13 {
		t.Fatalf("server counts %v, want 13 hellos and 2 others", rep.Counts)
	}

	spans, err := col.Spans()
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]int{}
	for _, s := range serverSpans(spans, svc) {
		byPath[s.Name+" "+s.Attributes["url.path"]+" "+s.Attributes["http.route"]]++
		for k, v := range s.Attributes {
			if !utf8.ValidString(v) || strings.Contains(v, "SECRET") {
				t.Errorf("span %q attribute %s=%q", s.Name, k, v)
			}
		}
	}
	want := map[string]int{
		"GET /hello /hello /hello":                         13,
		"GET /caf\uFFFD /caf\uFFFD /caf\uFFFD":             1,
		"GET /anything/semi /anything/semi /anything/semi": 1,
	}
	if !mapsEqual(byPath, want) {
		t.Fatalf("server spans by name, url.path, http.route:\n got %s\nwant %s", sorted(byPath), sorted(want))
	}
	routes := map[string]int{}
	for _, sp := range harness.Latest(mustMetrics(t, col), "http.server.request.duration", res) {
		routes[sp.Point.Attributes["http.route"]+" "+sp.Point.Attributes["http.response.status_code"]] += int(sp.Total)
	}
	wantRoutes := map[string]int{"/hello 200": 13, "/caf\uFFFD 404": 1, "/anything/semi 404": 1}
	if !mapsEqual(routes, wantRoutes) {
		t.Fatalf("collector's server durations by route:\n got %s\nwant %s", sorted(routes), sorted(wantRoutes))
	}
}

func mustMetrics(t *testing.T, col *harness.Collector) []harness.ResourceMetrics {
	t.Helper()
	rms, err := col.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	return rms
}

var _ = fmt.Sprintf

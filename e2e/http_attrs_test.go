package e2e

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

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
		// No route configured: named by the method, the folded path is
		// url.template, no http.route.
		byPath[s.Name+" "+s.Attributes["url.path"]+" "+s.Attributes["url.template"]+" "+s.Attributes["http.route"]]++
		for k, v := range s.Attributes {
			if !utf8.ValidString(v) || strings.Contains(v, "SECRET") {
				t.Errorf("span %q attribute %s=%q", s.Name, k, v)
			}
		}
	}
	want := map[string]int{
		"GET /hello /hello ":                 13,
		"GET /caf\uFFFD /caf\uFFFD ":         1,
		"GET /anything/semi /anything/semi ": 1,
	}
	if !mapsEqual(byPath, want) {
		t.Fatalf("server spans by name, url.path, url.template, http.route:\n got %s\nwant %s", sorted(byPath), sorted(want))
	}
	routes := map[string]int{}
	for _, sp := range harness.Latest(mustMetrics(t, col), "http.server.request.duration", res) {
		routes[sp.Point.Attributes["url.template"]+sp.Point.Attributes["http.route"]+" "+sp.Point.Attributes["http.response.status_code"]] += int(sp.Total)
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

// checkUniquePoints fails when one export request to the collector holds
// two points of an HTTP metric with the same resource and attributes (a
// backend keeps one of them and undercounts). It returns the number of
// export requests it read.
func checkUniquePoints(t *testing.T, col *harness.Collector) int {
	t.Helper()
	b, err := os.ReadFile(col.MetricsPath)
	if err != nil {
		t.Fatal(err)
	}
	var u pmetric.JSONUnmarshaler
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		md, err := u.UnmarshalMetrics(line)
		if err != nil {
			continue // the line being written
		}
		n++
		seen := map[string]bool{}
		rms := md.ResourceMetrics()
		for i := 0; i < rms.Len(); i++ {
			rm := rms.At(i)
			res := attrKey(rm.Resource().Attributes())
			sms := rm.ScopeMetrics()
			for j := 0; j < sms.Len(); j++ {
				ms := sms.At(j).Metrics()
				for k := 0; k < ms.Len(); k++ {
					m := ms.At(k)
					if !strings.HasPrefix(m.Name(), "http.") && !strings.HasPrefix(m.Name(), "otelbee.http.") {
						continue
					}
					var keys []string
					switch m.Type() {
					case pmetric.MetricTypeHistogram:
						for p := 0; p < m.Histogram().DataPoints().Len(); p++ {
							keys = append(keys, attrKey(m.Histogram().DataPoints().At(p).Attributes()))
						}
					case pmetric.MetricTypeSum:
						for p := 0; p < m.Sum().DataPoints().Len(); p++ {
							keys = append(keys, attrKey(m.Sum().DataPoints().At(p).Attributes()))
						}
					}
					for _, a := range keys {
						k := res + " " + m.Name() + " " + a
						if seen[k] {
							t.Errorf("export %d: two points %s", n, k)
						}
						seen[k] = true
					}
				}
			}
		}
	}
	return n
}

func attrKey(m pcommon.Map) string {
	var parts []string
	m.Range(func(k string, v pcommon.Value) bool {
		parts = append(parts, k+"="+v.AsString())
		return true
	})
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// TestHTTPUniquePointsAndErrorType: a Go client calling many paths of a Go
// server whose service is past its route cap (http.max_routes 3), with OTLP
// to the real OpenTelemetry Collector and a real Prometheus scraping the
// agent. No export holds two points with the same attributes (the client's
// series are not keyed by the path called); the route overflow counts the
// server's requests past the cap, once; error.type is on the duration
// metrics by the conventions: exact counts against the client's and the
// server's own.
func TestHTTPUniquePointsAndErrorType(t *testing.T) {
	harness.RequireRoot(t)
	col := harness.StartCollector(t)
	cfg := filepath.Join(t.TempDir(), "otelbee.yaml")
	os.WriteFile(cfg, []byte("http:\n  max_routes: 3\n"), 0o644)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=500", "OTEL_BSP_SCHEDULE_DELAY=200"},
		"--collectors=http", "--config="+cfg, "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	srv, cl := "uniq-srv-"+sfx, "uniq-cl-"+sfx
	addr, stop := goServer(t, srv)
	// Routes in order: /hello, /fail, /pa kept; /pb, /pc, /users/{id} past the cap.
	rep := parseHTTPReport(t, runClient(t, cl, buildTool(t, "./e2e/cmd/httpload"), "-url", "http://"+addr,
		"-plan", "GET /hello*3,GET /fail*2,GET /pa*1,GET /pb*2,GET /pc*1,GET /users/1*2"))
	srvRep := stop()
	if rep.Errors != 0 || rep.Counts["GET 200"] != 5 || rep.Counts["GET 404"] != 4 || rep.Counts["GET 500"] != 2 {
		t.Fatalf("client report %+v", rep)
	}
	t.Logf("server: %v", srvRep.Counts)

	labels := []string{"http_response_status_code", "error_type"}
	waitPromCounts(t, prom, "http_server_request_duration_seconds", srv, labels,
		map[string]int{"200 ": 5, "404 ": 4, "500 500": 2})
	waitPromCounts(t, prom, "http_client_request_duration_seconds", cl, labels,
		map[string]int{"200 ": 5, "404 404": 4, "500 500": 2})
	waitPromCounts(t, prom, "http_server_request_duration_seconds", srv, []string{"url_template"},
		map[string]int{"/hello": 3, "/fail": 2, "/pa": 1, "_OTHER": 5})
	waitProm(t, prom, fmt.Sprintf(`sum(otelbee_http_route_overflow_total{job=%q})`, srv), 5)
	if v, ok := promValue(t.Context(), prom, fmt.Sprintf(`count(otelbee_http_route_overflow_total{job=%q})`, cl)); ok {
		t.Errorf("route overflow counted on the client's side too: %v series", v)
	}

	// The same through OTLP, and no export with two points alike.
	for _, c := range []struct {
		service, metric string
		want            float64
	}{{srv, "http.server.request.duration", 11}, {cl, "http.client.request.duration", 11}} {
		col.WaitForMetric(t, c.metric, harness.Filter{Resource: map[string]string{"service.name": c.service}},
			func(v float64) bool { return v == c.want }, 30*time.Second)
	}
	time.Sleep(1500 * time.Millisecond) // a few more exports
	n := checkUniquePoints(t, col)
	pts := harness.Latest(mustMetrics(t, col), "http.client.request.duration", harness.Filter{Resource: map[string]string{"service.name": cl}})
	byErr := map[string]int{}
	for _, sp := range pts {
		byErr[sp.Point.Attributes["http.response.status_code"]+" "+sp.Point.Attributes["error.type"]] += int(sp.Total)
	}
	if want := map[string]int{"200 ": 5, "404 404": 4, "500 500": 2}; !mapsEqual(byErr, want) || len(pts) != 3 {
		t.Errorf("client points in the collector: %d, by status and error.type %s; want 3, %s", len(pts), sorted(byErr), sorted(want))
	}
	t.Logf("%d export requests checked", n)
}

// TestHTTPSelfCountersPerService: 20 short-lived curl processes whose
// requests all complete leave no otelbee_http_* series at all; 5 curl
// processes that give up on a server that never answers leave one
// incomplete-requests series for their service (5) and one target_info,
// not one per process (and no zero-valued series for the other reasons).
func TestHTTPSelfCountersPerService(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	agent := harness.StartAgent(t, nil, "--collectors=http")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	okSvc, hangSvc := "curl-ok-"+sfx, "curl-hang-"+sfx
	addr, stop := goServer(t, "selfc-srv-"+sfx)
	defer stop()
	for range 20 {
		curlCounts(t, okSvc, nil, "http://"+addr+"/hello")
	}
	// A server that reads requests and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	for range 5 {
		cmd := exec.Command("curl", "-s", "--max-time", "0.5", "-o", "/dev/null", "http://"+ln.Addr().String()+"/slow")
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+hangSvc)
		if err := cmd.Run(); err == nil {
			t.Fatal("curl got an answer from a server that never answers")
		}
	}
	waitPromCounts(t, prom, "http_client_request_duration_seconds", okSvc, []string{"http_request_method"}, map[string]int{"GET": 20})
	waitProm(t, prom, fmt.Sprintf(`sum(otelbee_http_requests_incomplete_total{job=%q})`, hangSvc), 5)
	time.Sleep(2 * time.Second) // more scrapes
	q := func(expr string) []harness.Sample {
		ss, err := prom.Query(t.Context(), expr)
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	if ss := q(fmt.Sprintf(`{__name__=~"otelbee_http_.+",job=%q}`, okSvc)); len(ss) != 0 {
		t.Errorf("%d otelbee_http_* series for a service that lost nothing: %v", len(ss), ss)
	}
	ss := q(fmt.Sprintf(`{__name__=~"otelbee_http_.+",job=%q}`, hangSvc))
	if len(ss) != 1 || ss[0].Labels["__name__"] != "otelbee_http_requests_incomplete_total" || ss[0].Value != 5 {
		t.Errorf("otelbee_http_* series of the service with 5 incomplete requests: %v; want one, 5", ss)
	}
	if ss := q(fmt.Sprintf(`target_info{job=%q}`, hangSvc)); len(ss) != 1 {
		t.Errorf("%d target_info series for the service of 5 processes with nothing but a drop counter: %v", len(ss), ss)
	}
}

// TestHTTPAgentsOwnExportLeftOut: an agent with the HTTP collector
// exporting OTLP/HTTP to the real OpenTelemetry Collector on this host, and
// a second otelbee exporting to the same collector. Neither agent's export
// shows up as client calls, the collector's server side of those requests
// is not recorded, while curl's requests to a Go server on the same host
// are recorded exactly.
func TestHTTPAgentsOwnExportLeftOut(t *testing.T) {
	harness.RequireRoot(t)
	col := harness.StartCollector(t)
	env := []string{"OTEL_METRIC_EXPORT_INTERVAL=300", "OTEL_BSP_SCHEDULE_DELAY=100"}
	otlp := []string{"--otlp.endpoint=http://" + col.HTTPEndpoint, "--otlp.protocol=http/protobuf"}
	// The second agent starts first: its export connection is open before
	// the HTTP agent starts, which picks it up from /proc and must leave it
	// out as well as the connections it sees opened.
	b := harness.StartAgent(t, env, append([]string{"--collectors=tcp"}, otlp...)...)
	time.Sleep(1500 * time.Millisecond) // several exports, on one keep-alive connection
	a := harness.StartAgent(t, env, append([]string{"--collectors=http"}, otlp...)...)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	srv, cl := "own-srv-"+sfx, "own-curl-"+sfx
	addr, stop := goServer(t, srv)
	want := curlCounts(t, cl, nil, "http://"+addr+"/hello", "http://"+addr+"/hello", "http://"+addr+"/nope")
	rep := stop()
	if want["GET 200"] != 2 || want["GET 404"] != 1 || rep.Counts["GET 200 /hello"] != 2 {
		t.Fatalf("curl %v, server %v", want, rep.Counts)
	}
	col.WaitForMetric(t, "http.server.request.duration", harness.Filter{Resource: map[string]string{"service.name": srv}},
		func(v float64) bool { return v == 3 }, 30*time.Second)
	col.WaitForMetric(t, "http.client.request.duration", harness.Filter{Resource: map[string]string{"service.name": cl}},
		func(v float64) bool { return v == 3 }, 30*time.Second)
	col.WaitForSpans(t, func(ss []harness.Span) bool { return len(serverSpans(ss, srv)) == 3 }, 30*time.Second)
	// Both agents have exported many times by now (every 300 ms).
	time.Sleep(2 * time.Second)

	own := map[string]string{
		strconv.Itoa(col.Process.Pid()): "the collector",
		strconv.Itoa(a.Process.Pid()):   "the agent",
		strconv.Itoa(b.Process.Pid()):   "the second agent",
	}
	series := map[string]int{}
	for _, rm := range mustMetrics(t, col) {
		who, ok := own[rm.Resource["process.pid"]]
		if !ok {
			continue
		}
		for _, m := range rm.Metrics {
			if strings.HasPrefix(m.Name, "http.") {
				series[who+" "+m.Name] += len(m.Points)
			}
		}
	}
	spans, err := col.Spans()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		if who, ok := own[s.Resource["process.pid"]]; ok {
			series[who+" span "+s.Kind]++
		}
	}
	if len(series) != 0 {
		t.Errorf("the agents' export connections were recorded: %v", series)
	}
	for _, c := range []struct {
		service, metric string
		want            map[string]int
	}{
		{srv, "http.server.request.duration", map[string]int{"200": 2, "404": 1}},
		{cl, "http.client.request.duration", map[string]int{"200": 2, "404": 1}},
	} {
		got := map[string]int{}
		for _, sp := range harness.Latest(mustMetrics(t, col), c.metric, harness.Filter{Resource: map[string]string{"service.name": c.service}}) {
			got[sp.Point.Attributes["http.response.status_code"]] += int(sp.Total)
		}
		if !mapsEqual(got, c.want) {
			t.Errorf("%s of %s: %v, want %v", c.metric, c.service, got, c.want)
		}
	}
	// The agent counts what it left out.
	resp, err := http.Get(a.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`otelbee_http_connections_ignored_total\{[^}]*reason="self"[^}]*\} (\d+)`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no otelbee_http_connections_ignored_total{reason=\"self\"} on /metrics")
	}
	// at least: both agents' connections to the collector, both ends
	if n, _ := strconv.Atoi(string(m[1])); n < 4 {
		t.Errorf("connections ignored as self: %d, want both ends of each agent's export connections", n)
	}
	t.Logf("connections ignored as self: %s", m[1])
}

// resetServer is a Python server that reads each request's head and
// answers with a TCP reset (SO_LINGER 0, then close).
const resetServer = `
import socket, struct, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(4096)
        if not d:
            break
        data += d
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
`

// slowServer is a Python server that answers each GET only once its client
// has reset the connection (the socket turns readable): it appends a byte
// to <argv[2]>.req when it has read a request, for the test to reset then.
// (A fixed 300 ms let a loaded machine answer before the reset.)
const slowServer = `
import http.server, os, select, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[2] + ".req", "a") as f:
            f.write("x")
        select.select([self.connection], [], [], 60)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 100000)
        except OSError:
            pass
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1] + ".tmp", "w").write(str(srv.server_address[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
`

// startPyServer runs a Python server script that writes its port to the
// file named by its first argument (args follow it), and returns the port.
func startPyServer(t *testing.T, service, script string, args ...string) string {
	t.Helper()
	portFile := filepath.Join(t.TempDir(), "port")
	cmd := exec.Command(pythonBin(t), append([]string{"-c", script, portFile}, args...)...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	harness.StartProcess(t, service, cmd)
	var port []byte
	for deadline := time.Now().Add(10 * time.Second); len(port) == 0; {
		port, _ = os.ReadFile(portFile)
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start", service)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return string(port)
}

// TestHTTPErrorTypeByTransport: curl against a Go server answering 200,
// 404 and 500, and against a server that resets each connection before a
// response. The duration metrics carry error.type as the conventions say:
// the status code for client 4xx/5xx and server 5xx, connection_reset for
// the requests the reset failed (client side), and for those whose client
// reset the connection while a Python server was still working on them
// (server side); exact counts in Prometheus.
func TestHTTPErrorTypeByTransport(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	pythonBin(t)
	agent := harness.StartAgent(t, nil, "--collectors=http")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	srv, rst, cl := "errt-srv-"+sfx, "errt-rst-"+sfx, "errt-curl-"+sfx
	slow := "errt-slow-" + sfx
	addr, stop := goServer(t, srv)
	base := "http://" + addr
	got := curlCounts(t, cl, nil, base+"/hello", base+"/hello", base+"/fail", base+"/fail", base+"/fail", base+"/nope", base+"/nope")
	if want := map[string]int{"GET 200": 2, "GET 500": 3, "GET 404": 2}; !mapsEqual(got, want) {
		t.Fatalf("curl: %v", got)
	}
	srvRep := stop()

	port := startPyServer(t, rst, resetServer)
	const resets = 4
	for range resets {
		c := exec.Command("curl", "-s", "-o", "/dev/null", "http://127.0.0.1:"+port+"/reset")
		c.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+cl)
		err := c.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 56 { // CURLE_RECV_ERROR: connection reset
			t.Fatalf("curl against the reset server: %v, want exit status 56", err)
		}
	}

	// A client that resets its connection while the server is still
	// working on the request: the server's response write fails.
	marks := filepath.Join(t.TempDir(), "slow")
	slowPort := startPyServer(t, slow, slowServer, marks)
	const aborts = 3
	for i := range aborts {
		c, err := net.Dial("tcp", "127.0.0.1:"+slowPort)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
		// The server has read the request: reset it (the server answers
		// once it sees the reset, and its write fails).
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if st, err := os.Stat(marks + ".req"); err == nil && st.Size() == int64(i+1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the slow server did not read request %d", i+1)
			}
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}

	labels := []string{"http_response_status_code", "error_type"}
	waitPromCounts(t, prom, "http_server_request_duration_seconds", slow, labels,
		map[string]int{" connection_reset": aborts})
	waitPromCounts(t, prom, "http_client_request_duration_seconds", cl, labels,
		map[string]int{"200 ": 2, "404 404": 2, "500 500": 3, " connection_reset": resets})
	waitPromCounts(t, prom, "http_server_request_duration_seconds", srv, labels,
		map[string]int{"200 ": 2, "404 ": 2, "500 500": 3})
	if n := srvRep.Counts["GET 500 /fail"]; n != 3 {
		t.Errorf("server's own count of 500s: %d", n)
	}
	// The reset server answered nothing: its side is incomplete requests.
	waitProm(t, prom, fmt.Sprintf(`sum(otelbee_http_requests_incomplete_total{job=%q})`, rst), resets)
	if ss, _ := prom.Query(t.Context(), fmt.Sprintf(`http_server_request_duration_seconds_count{job=%q}`, rst)); len(ss) != 0 {
		t.Errorf("durations recorded for a server that never answered: %v", ss)
	}
}

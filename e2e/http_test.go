package e2e

import (
	"bufio"
	"context"
	"encoding/json"
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

	httpc "github.com/otelbee/otelbee/collectors/http"
	"github.com/otelbee/otelbee/e2e/harness"
)

// httpReport is what e2e/cmd/httpload and testdata/http/urlclient.py print.
type httpReport struct {
	PID    int            `json:"pid"`
	Counts map[string]int `json:"counts"`
	Errors int            `json:"errors"`
}

func parseHTTPReport(t *testing.T, out string) httpReport {
	t.Helper()
	var r httpReport
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("parsing report %q: %v", out, err)
	}
	return r
}

// nginx runs Debian's nginx on loopback with its own prefix: static files
// (sendfile on) under /static/, /api/ proxied to a backend, and an access
// log of "METHOD URI STATUS UPSTREAM_STATUS" lines.
type nginx struct {
	Port        int
	ServiceName string // OTEL_SERVICE_NAME given to nginx
	Service     string // PromQL label selector of its workers' series
	AccessLog   string
	Root        string
	proc        *harness.Process
}

func startNginx(t *testing.T, service string, backendPort int) *nginx {
	t.Helper()
	nginxBinary(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	root := filepath.Join(dir, "html")
	os.MkdirAll(filepath.Join(root, "static"), 0o755)
	os.WriteFile(filepath.Join(root, "static", "index.html"), []byte("<html>hello</html>\n"), 0o644)
	big := make([]byte, 100_000)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	os.WriteFile(filepath.Join(root, "static", "big.bin"), big, 0o644)
	n := &nginx{Port: harness.FreePort(t), AccessLog: filepath.Join(dir, "access.log"), Root: root}
	n.proc = runNginx(t, dir, service, n.Port, nginxSetup{KeepEnv: true, HTTP: fmt.Sprintf(`
    types { text/html html; application/octet-stream bin; }
    log_format e2e '$request_method $uri $status $upstream_status';
    access_log %[1]s e2e;
    sendfile on;
    keepalive_requests 1000;
    server {
        listen 127.0.0.1:%[2]d;
        listen [::1]:%[2]d;
        root %[3]s;
        location /api/ {
            proxy_pass http://127.0.0.1:%[4]d;
        }
    }`, n.AccessLog, n.Port, root, backendPort)})
	n.ServiceName = service
	n.Service = n.selector(t)
	return n
}

// selector matches the series of this nginx's worker processes: named by
// the OTEL_SERVICE_NAME nginx was started with, although nginx rewrites its
// environment area for its process titles and the workers are forked, not
// exec'd (the agent keeps the environment the kernel saw at exec and hands
// it down to forked children); the workers are their master's instance
// (service.instance.id host:<master pid>: the master listens, the workers
// are its pool).
func (n *nginx) selector(t *testing.T) string {
	t.Helper()
	host, _ := os.Hostname()
	return fmt.Sprintf(`job=%q,instance="%s:%d"`, n.ServiceName, host, n.proc.Pid())
}

func waitPort(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start listening: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// accessCounts reads nginx's access log: server-side counts by
// "METHOD STATUS ROUTE" and upstream (client-side) counts by "METHOD STATUS"
// and backend-side counts by "METHOD STATUS ROUTE".
func (n *nginx) accessCounts(t *testing.T) (server, upstream, backend map[string]int) {
	t.Helper()
	b, err := os.ReadFile(n.AccessLog)
	if err != nil {
		t.Fatal(err)
	}
	server, upstream, backend = map[string]int{}, map[string]int{}, map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		route := string(httpc.Fold(nil, []byte(f[1])))
		server[f[0]+" "+f[2]+" "+route]++
		if f[3] != "-" {
			upstream[f[0]+" "+f[3]]++
			backend[f[0]+" "+f[3]+" "+route]++
		}
	}
	return
}

// promCounts is sum by (labels) of a request-duration histogram's count.
// service is a service name, or a full label matcher when it contains "=".
func promCounts(t *testing.T, p *harness.Prometheus, metric, service string, labels ...string) map[string]int {
	t.Helper()
	sel := fmt.Sprintf("job=%q", service)
	if strings.Contains(service, "=") {
		sel = service
	}
	q := fmt.Sprintf(`sum by (%s) (%s_count{%s})`, strings.Join(labels, ","), metric, sel)
	ss, err := p.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range ss {
		parts := make([]string, len(labels))
		for i, l := range labels {
			parts[i] = s.Labels[l]
		}
		out[strings.Join(parts, " ")] += int(s.Value)
	}
	return out
}

var (
	serverLabels = []string{"http_request_method", "http_response_status_code", "url_template"}
	clientLabels = []string{"http_request_method", "http_response_status_code"}
)

// waitPromCounts polls Prometheus until the counts equal want.
func waitPromCounts(t *testing.T, p *harness.Prometheus, metric, service string, labels []string, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	var got map[string]int
	for time.Now().Before(deadline) {
		got = promCounts(t, p, metric, service, labels...)
		if mapsEqual(got, want) {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("%s{%s}:\n got %v\nwant %v", metric, service, sorted(got), sorted(want))
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func sorted(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "[%s]=%d ", k, m[k])
	}
	return b.String()
}

func pythonBin(t *testing.T) string {
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("skipping: python3 not installed")
	return ""
}

func testdata(t *testing.T, name string) string {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "e2e", "testdata", "http", name)
}

// goServer starts e2e/cmd/httpload as a server; stop returns its report.
func goServer(t *testing.T, service string) (addr string, stop func() httpReport) {
	t.Helper()
	return startHTTPLoadServer(t, buildTool(t, "./e2e/cmd/httpload"), service)
}

// startHTTPLoadServer runs the httpload binary bin as a server.
func startHTTPLoadServer(t *testing.T, bin, service string) (addr string, stop func() httpReport) {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-addr-file", addrFile)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	p := harness.StartProcess(t, service, cmd)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			addr = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("httpload server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, func() httpReport {
		p.Cmd.Process.Signal(os.Interrupt)
		if err := p.Wait(10 * time.Second); err != nil {
			t.Fatalf("httpload server: %v", err)
		}
		return parseHTTPReport(t, stdout.String())
	}
}

// runClient runs a client program to completion and returns its stdout.
func runClient(t *testing.T, service string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	p := harness.StartProcess(t, service, cmd)
	if err := p.Wait(60 * time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", service, err, p.LogTail(20))
	}
	return stdout.String()
}

// curlCounts runs curl on urls in one invocation (one keep-alive connection
// per host) and counts the status codes it reports.
func curlCounts(t *testing.T, service string, extra []string, urls ...string) map[string]int {
	t.Helper()
	argv := append([]string{"curl", "-s", "-w", "%{method} %{http_code}\\n"}, extra...)
	for _, u := range urls {
		argv = append(argv, "-o", "/dev/null", u)
	}
	out := runClient(t, service, argv...)
	counts := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			counts[l]++
		}
	}
	return counts
}

func addCounts(dst, src map[string]int) {
	for k, v := range src {
		dst[k] += v
	}
}

// TestHTTPGroundTruth: nginx serving static files and proxying to a Python
// backend, driven by curl, Python urllib and a Go client, plus a Go server
// and client. The agent's request counts per route, method and status equal
// nginx's access log and what every client reports, server and client side,
// in the real Prometheus and the real OpenTelemetry Collector; spans join a
// caller's traceparent; malformed and non-HTTP traffic on nginx's port is
// counted and the next good request is still seen.
func TestHTTPGroundTruth(t *testing.T) {
	harness.RequireRoot(t)
	testStart := time.Now()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	py := pythonBin(t)
	col := harness.StartCollector(t)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000", "OTEL_BSP_SCHEDULE_DELAY=200"},
		"--collectors=http", "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)

	sfx := strconv.Itoa(rand.IntN(1 << 30))
	svc := func(s string) string { return s + "-" + sfx }
	backendPort := harness.FreePort(t)
	bcmd := exec.Command(py, testdata(t, "backend.py"), strconv.Itoa(backendPort))
	bcmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+svc("backend"))
	harness.StartProcess(t, "backend", bcmd)
	waitPort(t, fmt.Sprintf("127.0.0.1:%d", backendPort))
	ng := startNginx(t, svc("nginx"), backendPort)
	base4 := fmt.Sprintf("http://127.0.0.1:%d", ng.Port)
	base6 := fmt.Sprintf("http://[::1]:%d", ng.Port)

	// curl: one keep-alive connection per invocation, IPv4 and IPv6.
	curl := map[string]int{}
	addCounts(curl, curlCounts(t, svc("curl"), nil,
		base4+"/static/index.html", base4+"/static/big.bin", base4+"/static/missing.txt",
		base4+"/api/items/101?token=secret", base4+"/api/items/102", base4+"/api/fail", base4+"/api/stream"))
	addCounts(curl, curlCounts(t, svc("curl"), nil, base6+"/static/index.html", base6+"/api/items/7", base6+"/nope"))
	addCounts(curl, curlCounts(t, svc("curl"), []string{"-X", "POST", "-d", "a=1&b=2"}, base4+"/api/items/55"))
	// Python urllib: a connection per request.
	py1 := parseHTTPReport(t, runClient(t, svc("urllib"), py, testdata(t, "urlclient.py"),
		base4+"/static/index.html", base4+"/api/items/9", base4+"/api/fail", base4+"/static/nothing",
		"POST "+base4+"/api/items/10"))
	// Go net/http against nginx.
	gocl := parseHTTPReport(t, runClient(t, svc("goclient"), buildTool(t, "./e2e/cmd/httpload"),
		"-url", base4, "-plan", "GET /static/index.html*4,GET /api/items/3*3,GET /api/fail*2,GET /missing*2,POST /api/items/4*2", "-body", "500"))

	// A W3C traceparent: nginx's server span joins the caller's trace.
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	addCounts(curl, curlCounts(t, svc("curl"), []string{"-H", "traceparent: 00-" + traceID + "-" + parentID + "-01"}, base4+"/static/index.html"))

	// Malformed and non-HTTP traffic on nginx's port, then a good request.
	garbage := func(payload []byte, read bool) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ng.Port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(payload)
		if read {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, c)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	rnd := make([]byte, 4096)
	for i := range rnd {
		rnd[i] = byte(rand.IntN(256))
	}
	rnd[0] = 0x16 // no method starts with it
	garbage(rnd, true)
	garbage([]byte("GET /static/index.html HTTP/1.1\r\nHost: x\r\nX-Half:"), false)
	garbage([]byte("GET /static/index.html HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("h", 64<<10)+"\r\n\r\n"), true)
	addCounts(curl, curlCounts(t, svc("curl"), nil, base4+"/static/index.html"))

	// Go server and client.
	goAddr, stopGo := goServer(t, svc("goserver"))
	goc := parseHTTPReport(t, runClient(t, svc("goclient2"), buildTool(t, "./e2e/cmd/httpload"),
		"-url", "http://"+goAddr, "-plan", "GET /users/1*5,GET /users/abc12345*2,POST /users/9*3,GET /fail*2,GET /chunked*2,GET /zzz"))
	goSrv := stopGo()

	// Ground truth.
	server, upstream, backend := ng.accessCounts(t)
	t.Logf("nginx access log: server %s; upstream %s", sorted(server), sorted(upstream))
	// Two access log lines are no HTTP exchange: the random bytes ("-",
	// logged 400; the agent ignores the connection in the kernel) and the
	// half request (logged 400 with no response written; the agent counts
	// it incomplete).
	if server["- 400 /"] != 1 || server["GET 400 /static/index.html"] != 2 {
		t.Fatalf("nginx did not log the malformed traffic as expected: %s", sorted(server))
	}
	delete(server, "- 400 /")
	server["GET 400 /static/index.html"]--
	waitPromCounts(t, prom, "http_server_request_duration_seconds", ng.Service, serverLabels, server)
	waitPromCounts(t, prom, "http_client_request_duration_seconds", ng.Service, clientLabels, upstream)
	waitPromCounts(t, prom, "http_server_request_duration_seconds", svc("backend"), serverLabels, backend)
	waitPromCounts(t, prom, "http_client_request_duration_seconds", svc("curl"), clientLabels, curl)
	waitPromCounts(t, prom, "http_client_request_duration_seconds", svc("urllib"), clientLabels, py1.Counts)
	waitPromCounts(t, prom, "http_client_request_duration_seconds", svc("goclient"), clientLabels, gocl.Counts)
	waitPromCounts(t, prom, "http_client_request_duration_seconds", svc("goclient2"), clientLabels, goc.Counts)
	waitPromCounts(t, prom, "http_server_request_duration_seconds", svc("goserver"), serverLabels, goSrv.Counts)

	// The half request and the random bytes are counted, nothing crashed.
	if v, _ := promValue(context.Background(), prom, `sum(otelbee_http_connections_ignored_total{reason="not_http"})`); v < 1 {
		t.Errorf("non-HTTP connections counted: %v, want at least the random-bytes one", v)
	}
	// The half request is nginx's one incomplete request (its counters
	// carry its service).
	waitProm(t, prom, fmt.Sprintf(`sum(otelbee_http_requests_incomplete_total{job=%q})`, ng.ServiceName), 1)
	if exited, _ := agent.Exited(); exited {
		t.Fatalf("agent exited:\n%s", agent.LogTail(40))
	}

	// The same through OTLP: nginx's requests by status in the collector.
	goTotal := 0
	for _, v := range goSrv.Counts {
		goTotal += v
	}
	col.WaitForMetric(t, "http.server.request.duration", harness.Filter{Resource: map[string]string{"service.name": svc("goserver")}},
		func(v float64) bool { return v == float64(goTotal) }, 40*time.Second)

	// Spans: the traceparent request, the upstream call as a client span of
	// nginx, the backend's server span, with kernel timestamps.
	spans := col.WaitForSpans(t, func(ss []harness.Span) bool {
		var joined, upstreamSpan, backendSpan bool
		for _, s := range ss {
			switch {
			case s.Resource["service.name"] == ng.ServiceName && s.Kind == "Server" && s.TraceID == traceID:
				joined = true
			case s.Resource["service.name"] == ng.ServiceName && s.Kind == "Client":
				upstreamSpan = true
			case s.Resource["service.name"] == svc("backend") && s.Kind == "Server":
				backendSpan = true
			}
		}
		return joined && upstreamSpan && backendSpan
	}, 40*time.Second)
	for _, s := range spans {
		if s.Resource["service.name"] == ng.ServiceName && s.Kind == "Server" && s.TraceID == traceID {
			if s.ParentSpanID != parentID || s.Name != "GET" || s.Attributes["url.template"] != "/static/index.html" || s.Attributes["http.response.status_code"] != "200" {
				t.Errorf("traceparent span: %+v", s)
			}
			if d := s.Duration(); d <= 0 || d > 10*time.Second || time.Since(s.Start) > 10*time.Minute {
				t.Errorf("span times: start %v duration %v", s.Start, d)
			}
		}
		if s.Resource["service.name"] == ng.ServiceName && s.Name == "GET" && s.Attributes["url.template"] == "/api/fail" && s.Kind == "Server" && s.StatusCode != "Error" {
			t.Errorf("5xx server span status %q, want Error", s.StatusCode)
		}
		if strings.Contains(s.Attributes["url.path"], "?") || strings.Contains(s.Attributes["url.path"], "secret") {
			t.Errorf("query string in a span: %v", s.Attributes)
		}
	}

	// Exemplars: Prometheus stored some on nginx's duration buckets, and
	// each leads to a server span of nginx that reached the collector.
	var exemplars []harness.Exemplar
	deadline := time.Now().Add(20 * time.Second)
	for len(exemplars) == 0 && time.Now().Before(deadline) {
		var err error
		exemplars, err = prom.Exemplars(context.Background(),
			fmt.Sprintf("http_server_request_duration_seconds_bucket{%s}", ng.Service), testStart, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(exemplars) == 0 {
		t.Fatal("no exemplar stored by Prometheus for nginx's request durations")
	}
	col.WaitForSpans(t, func(ss []harness.Span) bool {
		server := map[string]bool{}
		for _, s := range ss {
			if s.Resource["service.name"] == ng.ServiceName && s.Kind == "Server" {
				server[s.TraceID+"/"+s.SpanID] = true
			}
		}
		for _, e := range exemplars {
			if !server[e.Labels["trace_id"]+"/"+e.Labels["span_id"]] {
				return false
			}
		}
		return true
	}, 20*time.Second)
	t.Logf("%d exemplars in Prometheus, each leading to a server span of nginx in the collector", len(exemplars))
}

// TestHTTPShapes: keep-alive with many requests, pipelining, split writes,
// chunked bodies and a sendfile response (nginx), each asserted exactly
// against the server's own count.
func TestHTTPShapes(t *testing.T) {
	harness.RequireRoot(t)
	// Body sizes are opt-in: this test checks them against what nginx sent.
	agent := harness.StartAgent(t, nil, "--collectors=http", "--http.body-sizes")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	addr, stop := goServer(t, "shapes-"+sfx)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	read := func(n int) {
		for i := 0; i < n; i++ {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	// keep-alive: 50 requests on one connection
	for i := 0; i < 50; i++ {
		fmt.Fprintf(c, "GET /users/%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		read(1)
	}
	// pipelining: 10 requests in one write
	var pipe strings.Builder
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&pipe, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	c.Write([]byte(pipe.String()))
	read(10)
	// split writes: a byte at a time for the head, then the body in two
	req := "POST /users/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n"
	for i := 0; i < len(req); i++ {
		c.Write([]byte{req[i]})
	}
	c.Write([]byte("abc"))
	c.Write([]byte("def"))
	read(1)
	// chunked request and chunked response
	c.Write([]byte("POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"))
	c.Write([]byte("4\r\ndefg\r\n0\r\n\r\n"))
	read(1)
	c.Close()
	rep := stop()
	waitPromCounts(t, prom, "http_server_request_duration_seconds", "shapes-"+sfx, serverLabels, rep.Counts)
	if _, err := exec.LookPath("nginx"); err == nil {
		// sendfile: nginx writes the head with writev and the body with sendfile.
		ng := startNginx(t, "nginx-"+sfx, harness.FreePort(t))
		for i := 0; i < 3; i++ {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/static/big.bin", ng.Port))
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if n != 100_000 {
				t.Fatalf("big.bin: %d bytes", n)
			}
		}
		// nginx logs a request after its client may have read the response.
		var server map[string]int
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if server, _, _ = ng.accessCounts(t); server["GET 200 /static/big.bin"] == 3 {
				break
			}
		}
		waitPromCounts(t, prom, "http_server_request_duration_seconds", ng.Service, serverLabels, server)
		prom.WaitFor(t, fmt.Sprintf(`sum(http_server_response_body_size_bytes_sum{%s})`, ng.Service),
			func(s []harness.Sample) bool { return len(s) == 1 && s[0].Value == 300_000 }, 30*time.Second)
	}
}

var wrkRequests = regexp.MustCompile(`(\d+) requests in`)

// TestHTTPWrk: wrk for 10 s against the Go server; the agent's client-side
// count for wrk plus the requests it counted as dropped equals wrk's own
// count, exactly: with the default ring buffer, and with a 64 KiB one that
// overflows (the drops are then counted, not silent).
func TestHTTPWrk(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
	}{
		{"default", ""},
		{"overflowing_ring", "http:\n  ring_buffer_bytes: 65536\n  capture_bytes: 4096\n"},
	} {
		t.Run(tc.name, func(t *testing.T) { testHTTPWrk(t, tc.yaml) })
	}
}

func testHTTPWrk(t *testing.T, yaml string) {
	harness.RequireRoot(t)
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("skipping: wrk not installed")
	}
	// The server is left out: wrk's side is the one compared.
	args := []string{"--collectors=http", "--http.exclude-executables=httpload"}
	if yaml != "" {
		cfg := filepath.Join(t.TempDir(), "otelbee.yaml")
		os.WriteFile(cfg, []byte(yaml), 0o644)
		args = append(args, "--config="+cfg)
	}
	agent := harness.StartAgent(t, nil, args...)
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	addr, stop := goServer(t, "wrk-server-"+sfx)
	out := runClient(t, "wrk-"+sfx, wrk, "-t2", "-c8", "-d10s", "http://"+addr+"/hello")
	stop()
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("wrk output: %s", out)
	}
	want, _ := strconv.Atoi(m[1])
	t.Logf("wrk: %d requests", want)
	deadline := time.Now().Add(40 * time.Second)
	var got, dropped float64
	for time.Now().Before(deadline) {
		c := promCounts(t, prom, "http_client_request_duration_seconds", "wrk-"+sfx, "http_request_method")
		got = float64(c["GET"])
		dropped, _ = promValue(context.Background(), prom, fmt.Sprintf(`sum(otelbee_http_requests_dropped_total{job="wrk-%s"}) or vector(0)`, sfx))
		if got+dropped == float64(want) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("agent: %v requests, %v dropped", got, dropped)
	for _, q := range []string{"otelbee_http_requests_dropped_total", "otelbee_http_requests_incomplete_total", "otelbee_http_malformed_total"} {
		if v, ok := promValue(context.Background(), prom, fmt.Sprintf(`sum(%s{job="wrk-%s"})`, q, sfx)); ok {
			t.Logf("%s: %v", q, v)
		}
	}
	if got+dropped != float64(want) {
		t.Errorf("agent %v + dropped %v != wrk %d", got, dropped, want)
	}
}

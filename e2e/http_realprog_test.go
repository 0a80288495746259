package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/otelbee/otelbee/e2e/harness"
)

// Real programs the HTTP collector once got wrong (issue 9 items 1-4, issue
// 17 item 6): Node streaming responses, methods outside the nine, protocol
// upgrades, TLS and h2c, Unix sockets, a forking server, and keep-alive
// connections opened before the agent. Counts are exact against what the
// programs themselves report.

func rpScrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return mfs
}

func rpMatch(m *dto.Metric, match map[string]string) bool {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	for k, v := range match {
		if l[k] != v {
			return false
		}
	}
	return true
}

// rpHist sums the count and sum of a histogram's series whose labels
// include match.
func rpHist(mfs map[string]*dto.MetricFamily, name string, match map[string]string) (uint64, float64) {
	var n uint64
	var sum float64
	if mf := mfs[name]; mf != nil {
		for _, m := range mf.GetMetric() {
			if rpMatch(m, match) {
				n += m.GetHistogram().GetSampleCount()
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return n, sum
}

// rpCounter sums a counter's series whose labels include match.
func rpCounter(mfs map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	var sum float64
	for _, fam := range []string{name, name + "_total"} {
		if mf := mfs[fam]; mf != nil {
			for _, m := range mf.GetMetric() {
				if rpMatch(m, match) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// rpWait scrapes until cond holds, then returns that scrape. cond must
// cover every series the caller asserts on that scrape, on both sides: the
// agent's histograms and its counters are read separately, and one can
// reach the exposition a scrape before the other. The deadline is long
// enough for a loaded machine (load 20 and more).
func rpWait(t *testing.T, agent *harness.Agent, what string, cond func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mfs := rpScrape(t, agent.MetricsURL)
		if cond(mfs) {
			return mfs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// svc matches a service's series: the Prometheus endpoint names a service
// by job (service.namespace/service.name; no namespace here).
func svc(name string, kv ...string) map[string]string {
	m := map[string]string{"job": name}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// rpServer starts a program as a service and waits for its port.
func rpServer(t *testing.T, service, addr string, argv ...string) (*harness.Process, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	p := harness.StartProcess(t, service, cmd)
	if strings.HasPrefix(addr, "/") {
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(addr); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not listen on %s", service, addr)
			}
		}
	} else {
		waitPort(t, addr)
	}
	return p, &stdout
}

// rpStop ends a server with SIGTERM and decodes the JSON line it prints.
func rpStop(t *testing.T, p *harness.Process, stdout *strings.Builder, v any) {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Wait(10 * time.Second); err != nil {
		t.Logf("%s: %v", p.Cmd.Path, err)
	}
	out := strings.TrimSpace(stdout.String())
	lines := strings.Split(out, "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), v); err != nil {
		t.Fatalf("report %q: %v\n%s", out, err, p.LogTail(20))
	}
}

func nodeBin(t *testing.T) string {
	p, err := exec.LookPath("node")
	if err != nil {
		t.Skip("skipping: node not installed")
	}
	return p
}

type nodeRouteStats struct {
	N       int     `json:"n"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// TestHTTPStreamsRealPrograms: Node streaming responses (three res.write()
// in one tick, which Node corks into one writev of three chunks; writes over
// time; server-sent events; NDJSON; a 1 MiB chunked download) fetched by curl
// and by Node's fetch. Server side, every response's body size is exactly
// what Node wrote and its duration within what the clients measured around
// it and at least what Node's timers take; client side, every
// request is counted with a duration within what the client measured, and a
// body whose chunk framing was not captured is counted (framing.lost
// reason=body_size), never reported with a wrong size.
func TestHTTPStreamsRealPrograms(t *testing.T) {
	harness.RequireRoot(t)
	node := nodeBin(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	// Body sizes are opt-in: this test checks them against what Node wrote.
	agent := harness.StartAgent(t, nil, "--collectors=http", "--http.body-sizes")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	server := "streams-" + sfx
	port := harness.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p, stdout := rpServer(t, server, fmt.Sprintf("127.0.0.1:%d", port), node, testdata(t, "streams.js"), strconv.Itoa(port))

	routes := []string{"/corked", "/sse", "/ndjson", "/big"}
	const perCurl = 3
	type clientRun struct {
		n       int
		bytes   int64
		seconds float64
	}
	curlRuns := map[string]clientRun{}
	for _, r := range routes {
		service := "curl" + strings.ReplaceAll(r, "/", "-") + "-" + sfx
		argv := []string{"curl", "-s", "-w", "%{size_download} %{time_total}\\n"}
		for i := 0; i < perCurl; i++ {
			argv = append(argv, "-o", "/dev/null", base+r)
		}
		var run clientRun
		for _, l := range strings.Split(strings.TrimSpace(runClient(t, service, argv...)), "\n") {
			var size int64
			var secs float64
			if _, err := fmt.Sscanf(l, "%d %f", &size, &secs); err != nil {
				t.Fatalf("curl output %q: %v", l, err)
			}
			run.n++
			run.bytes += size
			run.seconds += secs
		}
		curlRuns[r] = run
	}
	fetchSvc := "fetch-" + sfx
	var fetchArgs []string
	for _, r := range routes {
		fetchArgs = append(fetchArgs, base+r, base+r)
	}
	var fetched map[string]nodeRouteStats
	if err := json.Unmarshal([]byte(strings.TrimSpace(runClient(t, fetchSvc, append([]string{node, testdata(t, "fetchclient.js")}, fetchArgs...)...))), &fetched); err != nil {
		t.Fatal(err)
	}
	var served map[string]nodeRouteStats
	rpStop(t, p, stdout, &served)

	total := 0
	for _, r := range routes {
		total += served[r].N
	}
	mfs := rpWait(t, agent, "the server's requests", func(mfs map[string]*dto.MetricFamily) bool {
		n, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
		return n >= uint64(total)
	})
	// what streams.js's timers take at least
	floor := map[string]float64{"/corked": 0.4, "/sse": 0.3, "/ndjson": 0.1, "/big": 0}
	for _, r := range routes {
		st := served[r]
		if st.N != perCurl+2 {
			t.Fatalf("%s: node served %d, want %d", r, st.N, perCurl+2)
		}
		m := svc(server, "url_template", r)
		n, dur := rpHist(mfs, "http_server_request_duration_seconds", m)
		_, body := rpHist(mfs, "http_server_response_body_size_bytes", m)
		if n != uint64(st.N) || int64(body) != st.Bytes {
			t.Errorf("server %s: %d requests, %v body bytes; node served %d, %d bytes", r, n, body, st.N, st.Bytes)
		}
		// The agent measures from the request's read to the response's
		// last write: within what the clients measured around the same
		// requests, and at least what streams.js's timers take. (Node's
		// own figure, from its callback to its 'finish' event, is close on
		// a quiet machine; under load a preemption on either side of
		// those syscalls moves it by tens of milliseconds either way:
		// 33 ms under the agent's over 5 requests at load 20.)
		clients := curlRuns[r].seconds + fetched[r].Seconds
		if dur < floor[r]*float64(st.N) || dur > clients {
			t.Errorf("server %s: duration sum %.4fs, not within the timers' floor %.4fs and the clients' %.4fs (node measured %.4fs)", r, dur, floor[r]*float64(st.N), clients, st.Seconds)
		}
		t.Logf("server %s: %d requests, %.0f bytes, %.4fs (node: %.4fs, clients %.4fs)", r, n, body, dur, st.Seconds, clients)
	}
	checkClient := func(service string, n int, bytes int64, clientSeconds, minSeconds float64) {
		t.Helper()
		mfs := rpWait(t, agent, service+"'s requests", func(mfs map[string]*dto.MetricFamily) bool {
			got, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(service))
			if got < uint64(n) {
				t.Logf("waiting for %s: %d requests so far, framing lost end %v body_size %v, malformed %v, dropped %v", service, got,
					rpCounter(mfs, "otelbee_http_framing_lost", svc(service, "reason", "end")), rpCounter(mfs, "otelbee_http_framing_lost", svc(service, "reason", "body_size")),
					rpCounter(mfs, "otelbee_http_malformed", svc(service)), rpCounter(mfs, "otelbee_http_requests_dropped", svc(service)))
			}
			// the body sizes and the lost framing's counter as well: a
			// counter can reach the exposition a scrape after the histogram
			sized, _ := rpHist(mfs, "http_client_response_body_size_bytes", svc(service))
			unknown := rpCounter(mfs, "otelbee_http_framing_lost", svc(service, "reason", "body_size"))
			return got >= uint64(n) && sized+uint64(unknown) >= uint64(n)
		})
		got, dur := rpHist(mfs, "http_client_request_duration_seconds", svc(service))
		sized, body := rpHist(mfs, "http_client_response_body_size_bytes", svc(service))
		unknown := rpCounter(mfs, "otelbee_http_framing_lost", svc(service, "reason", "body_size"))
		ended := rpCounter(mfs, "otelbee_http_framing_lost", svc(service, "reason", "end"))
		if got != uint64(n) || ended != 0 {
			t.Errorf("client %s: %d requests (%v given up), want %d", service, got, ended, n)
		}
		if sized+uint64(unknown) != uint64(n) {
			t.Errorf("client %s: %d body sizes + %v unknown, want %d", service, sized, unknown, n)
		}
		if sized == uint64(n) && int64(body) != bytes {
			t.Errorf("client %s: %v body bytes, the client read %d", service, body, bytes)
		}
		if dur > clientSeconds || dur < minSeconds {
			t.Errorf("client %s: duration sum %.4fs, not within the server's floor %.4fs and the client's %.4fs", service, dur, minSeconds, clientSeconds)
		}
		t.Logf("client %s: %d requests, %d sized (%.0f bytes of %d), %.4fs (client %.4fs, floor %.4fs)", service, got, sized, body, bytes, dur, clientSeconds, minSeconds)
	}
	var fetchN int
	var fetchBytes int64
	var fetchSecs, fetchServer float64
	for _, r := range routes {
		run := curlRuns[r]
		checkClient("curl"+strings.ReplaceAll(r, "/", "-")+"-"+sfx, run.n, run.bytes, run.seconds, floor[r]*float64(run.n))
		f := fetched[r]
		fetchN += f.N
		fetchBytes += f.Bytes
		fetchSecs += f.Seconds
		fetchServer += floor[r] * float64(f.N)
	}
	checkClient(fetchSvc, fetchN, fetchBytes, fetchSecs, fetchServer)
}

// TestHTTPMethodsUpgradesAndUnseen: methods outside the nine against a
// Python server on keep-alive connections (with the known set overridden by
// OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS); curl --http2 (h2c upgrade) and
// --http2-prior-knowledge against a Go server; WebSocket upgrades; TLS; HTTP
// over a Unix domain socket; a Python ForkingMixIn server.
func TestHTTPMethodsUpgradesAndUnseen(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	py := pythonBin(t)
	agent := harness.StartAgent(t, []string{"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS=GET,HEAD,POST,PROPFIND"}, "--collectors=http")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	rwsrv := buildTool(t, "./e2e/testdata/http/rwsrv")

	t.Run("methods", func(t *testing.T) {
		server, client := "methods-"+sfx, "curl-methods-"+sfx
		port := harness.FreePort(t)
		p, stdout := rpServer(t, server, fmt.Sprintf("127.0.0.1:%d", port), py, testdata(t, "methods.py"), strconv.Itoa(port))
		url := fmt.Sprintf("http://127.0.0.1:%d/m", port)
		for _, m := range []string{"PROPFIND", "MKCOL", "QUERY", "PURGE", "get", "GET"} {
			// two on one keep-alive connection
			runClient(t, client, "curl", "-s", "-X", m, "-o", "/dev/null", url, "-o", "/dev/null", url)
		}
		var counts map[string]int
		rpStop(t, p, stdout, &counts)
		want := map[string]int{"PROPFIND": 2, "_OTHER": 8, "GET": 2}
		for _, k := range []string{"PROPFIND /m", "MKCOL /m", "QUERY /m", "PURGE /m", "get /m", "GET /m"} {
			if counts[k] != 2 {
				t.Fatalf("server counts %v", counts)
			}
		}
		mfs := rpWait(t, agent, "the methods", func(mfs map[string]*dto.MetricFamily) bool {
			n, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
			c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
			return n >= 12 && c >= 12
		})
		for m, n := range want {
			s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "http_request_method", m, "url_template", "/m"))
			c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client, "http_request_method", m))
			if s != uint64(n) || c != uint64(n) {
				t.Errorf("method %s: server %d, client %d, want %d", m, s, c, n)
			}
		}
		if mal := rpCounter(mfs, "otelbee_http_malformed", svc(server)); mal != 0 {
			t.Errorf("server malformed %v", mal)
		}
	})

	t.Run("h2c", func(t *testing.T) {
		server, client := "h2c-"+sfx, "curl-h2c-"+sfx
		addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		p, stdout := rpServer(t, server, addr, rwsrv, "h2c", addr)
		runClient(t, client, "curl", "-s", "--http2", "-o", "/dev/null", "http://"+addr+"/a", "-o", "/dev/null", "http://"+addr+"/err")
		runClient(t, client, "curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "http://"+addr+"/p")
		var counts map[string]int
		rpStop(t, p, stdout, &counts)
		if counts["HTTP/1.1 GET /a"] != 1 || counts["HTTP/2.0 GET /err"] != 1 || counts["HTTP/2.0 GET /p"] != 1 {
			t.Fatalf("server counts %v", counts)
		}
		// Wait for everything asserted below, on both sides: the client's
		// records and the server's exchange can reach the exposition a scrape
		// after the server's upgrade counter (seen once in CI).
		mfs := rpWait(t, agent, "the upgrade", func(mfs map[string]*dto.MetricFamily) bool {
			for _, s := range []string{server, client} {
				if rpCounter(mfs, "otelbee_http_connections_upgraded", svc(s)) < 1 ||
					rpCounter(mfs, "otelbee_http_connections_unobserved", svc(s)) < 1 {
					return false
				}
			}
			s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
			c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
			return s >= 1 && c >= 1
		})
		// The upgrade request as what it was; nothing of the HTTP/2 that
		// follows on that connection taken for HTTP/1.
		up, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "http_response_status_code", "101", "url_template", "/a"))
		all, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
		cup, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client, "http_response_status_code", "101"))
		call, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
		if up != 1 || all != 1 || cup != 1 || call != 1 {
			t.Errorf("server 101 %d of %d, client 101 %d of %d; want 1 of 1", up, all, cup, call)
		}
		for _, s := range []string{server, client} {
			if n := rpCounter(mfs, "otelbee_http_connections_upgraded", svc(s, "network_protocol_name", "h2c")); n != 1 {
				t.Errorf("%s: upgraded{h2c} %v, want 1", s, n)
			}
			if n := rpCounter(mfs, "otelbee_http_connections_unobserved", svc(s, "reason", "http2")); n != 1 {
				t.Errorf("%s: unobserved{http2} %v, want 1", s, n)
			}
		}
	})

	t.Run("websocket", func(t *testing.T) {
		server, client := "ws-"+sfx, "wsclient-"+sfx
		port := harness.FreePort(t)
		rpServer(t, server, fmt.Sprintf("127.0.0.1:%d", port), py, testdata(t, "websocket.py"), "server", strconv.Itoa(port))
		var rep struct{ Upgrades, Echoes int }
		if err := json.Unmarshal([]byte(runClient(t, client, py, testdata(t, "websocket.py"), "client", strconv.Itoa(port), "3", "4")), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Upgrades != 3 || rep.Echoes != 12 {
			t.Fatalf("client report %+v", rep)
		}
		// The upgrade counters and the server's requests: the counter can
		// reach the exposition a scrape before the histogram (h2c, in CI).
		mfs := rpWait(t, agent, "the websocket upgrades", func(mfs map[string]*dto.MetricFamily) bool {
			all, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
			return rpCounter(mfs, "otelbee_http_connections_upgraded", svc(server)) >= 3 &&
				rpCounter(mfs, "otelbee_http_connections_upgraded", svc(client)) >= 3 && all >= 3
		})
		for _, s := range []string{server, client} {
			if n := rpCounter(mfs, "otelbee_http_connections_upgraded", svc(s, "network_protocol_name", "websocket")); n != 3 {
				t.Errorf("%s: upgraded{websocket} %v, want 3", s, n)
			}
			if mal := rpCounter(mfs, "otelbee_http_malformed", svc(s)); mal != 0 {
				t.Errorf("%s: malformed %v", s, mal)
			}
		}
		up, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "http_response_status_code", "101", "url_template", "/ws"))
		all, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
		if up != 3 || all != 3 {
			t.Errorf("server: %d upgrades of %d requests, want 3 of 3 (the frames are not HTTP)", up, all)
		}
	})

	// HTTPS is instrumented by default (tls.enabled): the Go server's
	// crypto/tls and curl's OpenSSL hand their plaintext to the capture, so
	// the connections are measured as HTTP/1.1 over https, none of them
	// unobserved (docs/tls.md).
	t.Run("tls", func(t *testing.T) {
		server, client := "tls-"+sfx, "curl-tls-"+sfx
		addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		p, stdout := rpServer(t, server, addr, rwsrv, "tls", addr)
		// Its exec seen and its file instrumented before the first request.
		waitUprobes(t, agent, rwsrv)
		waitSystemOpenSSL(t, agent) // curl's
		for i := 0; i < 3; i++ {
			runClient(t, client, "curl", "-sk", "--http1.1", "-o", "/dev/null", "https://"+addr+"/secret")
		}
		var counts map[string]int
		rpStop(t, p, stdout, &counts)
		if n := counts["HTTP/1.1 GET /secret"]; n != 3 || len(counts) != 1 {
			t.Fatalf("server counts %v, want 3 HTTP/1.1 GET /secret", counts)
		}
		mfs := rpWait(t, agent, "the HTTPS requests", func(mfs map[string]*dto.MetricFamily) bool {
			s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
			c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
			return s >= 3 && c >= 3
		})
		https, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "url_scheme", "https", "http_request_method", "GET"))
		all, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
		c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client, "http_request_method", "GET"))
		call, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
		if https != 3 || all != 3 || c != 3 || call != 3 {
			t.Errorf("server %d https GETs of %d, client %d GETs of %d; want 3 of 3", https, all, c, call)
		}
		for _, s := range []string{server, client} {
			if n := rpCounter(mfs, "otelbee_http_connections_unobserved", svc(s)); n != 0 {
				t.Errorf("%s: unobserved %v, want 0 (its TLS is instrumented)", s, n)
			}
		}
	})

	t.Run("unix", func(t *testing.T) {
		server, client := "uds-"+sfx, "curl-uds-"+sfx
		sock := filepath.Join(t.TempDir(), "http.sock")
		p, stdout := rpServer(t, server, sock, rwsrv, "unix", sock)
		for i := 0; i < 3; i++ {
			runClient(t, client, "curl", "-s", "--unix-socket", sock, "-o", "/dev/null", "http://localhost/x/"+strconv.Itoa(i), "-o", "/dev/null", "http://localhost/err")
		}
		var counts map[string]int
		rpStop(t, p, stdout, &counts)
		if counts["HTTP/1.1 GET /err"] != 3 {
			t.Fatalf("server counts %v", counts)
		}
		mfs := rpWait(t, agent, "the unix socket requests", func(mfs map[string]*dto.MetricFamily) bool {
			n, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
			c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
			return n >= 6 && c >= 6
		})
		ok, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "http_response_status_code", "200", "url_template", "/x/{id}"))
		bad, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "http_response_status_code", "500", "url_template", "/err"))
		cok, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client, "http_response_status_code", "200", "network_transport", "unix"))
		cbad, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client, "http_response_status_code", "500", "network_transport", "unix"))
		if ok != 3 || bad != 3 || cok != 3 || cbad != 3 {
			t.Errorf("server 200 %d 500 %d, client 200 %d 500 %d; want 3 each", ok, bad, cok, cbad)
		}
	})

	t.Run("fork", func(t *testing.T) {
		server, client := "forking-"+sfx, "curl-fork-"+sfx
		port := harness.FreePort(t)
		p, _ := rpServer(t, server, fmt.Sprintf("127.0.0.1:%d", port), py, testdata(t, "forking.py"), strconv.Itoa(port))
		const n = 5
		for i := 0; i < n; i++ {
			// each answered by a child the server forked for it
			if out := runClient(t, client, "curl", "-s", "-w", "%{http_code}", "-o", "/dev/null", fmt.Sprintf("http://127.0.0.1:%d/f", port)); out != "200" {
				t.Fatalf("curl: %q\n%s", out, p.LogTail(10))
			}
		}
		// Both sides (a fixed second after the client's was once all the
		// server's side had), then a second more: nothing counted twice.
		rpWait(t, agent, "the forked children's requests", func(mfs map[string]*dto.MetricFamily) bool {
			c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
			s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "url_template", "/f"))
			return c >= n && s >= n
		})
		time.Sleep(time.Second)
		mfs := rpScrape(t, agent.MetricsURL)
		s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "url_template", "/f"))
		if s != n {
			t.Errorf("server side: %d requests, the forked children served %d", s, n)
		}
	})
}

// TestHTTPConnectionsBeforeStart: four keep-alive connections opened (and
// used) before the agent starts; once it is ready, 1,000 more requests on
// them are every one counted, server side (Go's net/http) and client side
// (Python's http.client). (A server thread already blocked in read(2) when
// the agent starts, as Python's threaded servers are, loses that one read:
// its arguments were passed before the hooks existed.)
func TestHTTPConnectionsBeforeStart(t *testing.T) {
	harness.RequireRoot(t)
	py := pythonBin(t)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	server, client := "before-"+sfx, "kaclient-"+sfx
	addr, stop := goServer(t, server)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	gofile := filepath.Join(t.TempDir(), "go")
	cmd := exec.Command(py, testdata(t, "keepalive.py"), port, gofile, "4", "1000")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+client)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cp := harness.StartProcess(t, client, cmd)
	br := bufio.NewReader(out)
	if l, err := br.ReadString('\n'); err != nil || strings.TrimSpace(l) != "connected" {
		t.Fatalf("client: %q %v\n%s", l, err, cp.LogTail(10))
	}
	agent := harness.StartAgent(t, nil, "--collectors=http")
	os.WriteFile(gofile, nil, 0o644)
	rest, _ := io.ReadAll(br)
	if err := cp.Wait(60 * time.Second); err != nil {
		t.Fatalf("client: %v", err)
	}
	var rep struct{ After int }
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(rest))), &rep); err != nil || rep.After != 1000 {
		t.Fatalf("client report %q: %v", rest, err)
	}
	counts := stop().Counts
	if counts["GET 200 /users/{id}"] != 1000 || counts["GET 200 /hello"] != 4 {
		t.Fatalf("server counts %v", counts)
	}
	rpWait(t, agent, "the requests after the start", func(mfs map[string]*dto.MetricFamily) bool {
		s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
		c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
		return s >= 1000 && c >= 1000
	})
	time.Sleep(time.Second)
	mfs := rpScrape(t, agent.MetricsURL)
	s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "url_template", "/users/{id}"))
	sAll, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
	c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
	if s != 1000 || sAll != 1000 || c != 1000 {
		t.Errorf("after the start: server %d (of %d), client %d; want 1000", s, sAll, c)
	}
}

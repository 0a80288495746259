package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// nodeReport is what testdata/http/tlsnode.js prints.
type nodeReport struct {
	PID    int            `json:"pid"`
	Counts map[string]int `json:"counts"`
	Client map[string]int `json:"client"`
	Errors int            `json:"errors"`
}

func parseNodeReport(t *testing.T, what, out string) nodeReport {
	t.Helper()
	var r nodeReport
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("parsing %s's report %q: %v", what, out, err)
	}
	if r.Errors != 0 {
		t.Fatalf("%s: %d requests failed", what, r.Errors)
	}
	return r
}

// startNodeTLS runs testdata/http/tlsnode.js in a server mode; stop
// interrupts it and returns its report.
func startNodeTLS(t *testing.T, node, service string, args ...string) (port string, stop func() nodeReport) {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	argv := append([]string{testdata(t, "tlsnode.js"), args[0], addrFile}, args[1:]...)
	cmd := exec.Command(node, argv...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	p := harness.StartProcess(t, service, cmd)
	addr := waitFileContent(t, addrFile)
	_, port, _ = strings.Cut(addr, ":")
	return port, func() nodeReport {
		p.Cmd.Process.Signal(os.Interrupt)
		if err := p.Wait(10 * time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", service, err, p.LogTail(20))
		}
		return parseNodeReport(t, service, stdout.String())
	}
}

// withPort appends a server port to every key of a client's counts (the
// key of clientLabels plus server_port).
func withPort(m map[string]int, port string) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k+" "+port] += v
	}
	return out
}

// TestTLSNode (issue 11 tests 1 and 2, Node's part): Node's HTTPS, whose
// OpenSSL (built into node) runs on memory BIOs, so that no socket call is
// made inside SSL_read/SSL_write: a Node https server driven by curl and a
// Go client; Node's fetch (undici) against a Go HTTPS server, 200 requests
// over 20 concurrent keep-alive connections; and a Node proxy (an https
// server whose every request makes an HTTPS request to the Node server, up
// to 20 connections) driven by fetch the same way, and one that opens a
// new backend connection for every request (200 connections opened and
// closed: SSL objects and descriptors reused). Each hop answers with
// routes and statuses of its own, so a request or response joined to
// another connection of the same process would show: every server's
// series (method, status, route; url.scheme=https) equal its own counts,
// every client's (method, status, server.port) its own. Once with the
// kernel's one program per system call (its exit: 5.15+), once with the
// entry and exit pairs older kernels use (OTELBEE_L7_SYSCALL_PAIRS).
func TestTLSNode(t *testing.T) {
	harness.RequireRoot(t)
	t.Run("exit", func(t *testing.T) { testTLSNode(t, nil) })
	t.Run("pairs", func(t *testing.T) { testTLSNode(t, []string{"OTELBEE_L7_SYSCALL_PAIRS=1"}) })
}

func testTLSNode(t *testing.T, env []string) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("skipping: node not installed")
	}
	if node, err = filepath.EvalSymlinks(node); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	svc := func(s string) string { return "tls-" + s + "-" + sfx }
	cert, key := tlsCert(t)
	// Only the test's programs' connections in the agent's ring (other
	// tests on the host load it; their lost records would be lost requests
	// here).
	agent := harness.StartAgent(t, append([]string{"OTEL_METRIC_EXPORT_INTERVAL=1000"}, env...),
		"--collectors=http", "--http.client-url-scheme", "--l7.include-executables=node,curl,httpload")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	waitUprobes(t, agent, node) // pinned at the agent's start

	backendPort, stopBackend := startNodeTLS(t, node, svc("node-backend"), "server", cert, key)
	proxyPort, stopProxy := startNodeTLS(t, node, svc("node-proxy"), "proxy", cert, key, "https://127.0.0.1:"+backendPort, "20")
	// A new backend connection for every request: SSL objects freed and
	// their addresses reused, descriptors closed and reused, all the time.
	churnPort, stopChurn := startNodeTLS(t, node, svc("node-churn"), "proxy", cert, key, "https://127.0.0.1:"+backendPort, "0")
	httpload := buildTool(t, "./e2e/cmd/httpload")
	goAddrFile := filepath.Join(t.TempDir(), "addr")
	goCmd := exec.Command(httpload, "-listen", "127.0.0.1:0", "-addr-file", goAddrFile, "-cert", cert, "-key", key)
	goCmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+svc("goserver"))
	var goOut strings.Builder
	goCmd.Stdout = &goOut
	goServer := harness.StartProcess(t, "goserver", goCmd)
	goAddr := waitFileContent(t, goAddrFile)
	_, goPort, _ := strings.Cut(goAddr, ":")
	waitUprobes(t, agent, httpload)

	backend := "https://127.0.0.1:" + backendPort
	curl := curlCounts(t, svc("curl"), []string{"--cacert", cert},
		backend+"/users/1", backend+"/users/abc12345", backend+"/fail", backend+"/hello", backend+"/nothing", backend+"/users/2")
	addCounts(curl, curlCounts(t, svc("curl"), []string{"--cacert", cert, "-X", "POST", "-d", "a=1&b=2"}, backend+"/users/5"))
	gocl := parseHTTPReport(t, runClient(t, svc("goclient"), httpload,
		"-url", backend, "-plan", "GET /users/1*5,GET /fail*2,POST /users/9*3,GET /zzz,GET /hello*2", "-body", "300"))

	fetch := func(service, base, plan string) nodeReport {
		cmd := exec.Command(node, testdata(t, "tlsnode.js"), "fetch", base, "20", plan)
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service, "NODE_EXTRA_CA_CERTS="+cert)
		var stdout strings.Builder
		cmd.Stdout = &stdout
		p := harness.StartProcess(t, service, cmd)
		if err := p.Wait(90 * time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", service, err, p.LogTail(20))
		}
		return parseNodeReport(t, service, stdout.String())
	}
	fetchGo := fetch(svc("fetch-go"), "https://127.0.0.1:"+goPort,
		"GET /users/1*80,GET /fail*40,POST /users/2*40,GET /hello*30,GET /zzz*10")
	fetchProxy := fetch(svc("fetch-proxy"), "https://127.0.0.1:"+proxyPort,
		"GET /users/1*100,GET /fail*50,GET /zzz*30,POST /users/3*20")
	fetchChurn := fetch(svc("fetch-churn"), "https://127.0.0.1:"+churnPort,
		"GET /users/1*100,GET /fail*50,GET /zzz*30,POST /users/3*20")

	goServer.Cmd.Process.Signal(os.Interrupt)
	if err := goServer.Wait(10 * time.Second); err != nil {
		t.Fatalf("goserver: %v", err)
	}
	goSrv := parseHTTPReport(t, goOut.String())
	proxy := stopProxy()
	churn := stopChurn()
	back := stopBackend()
	t.Logf("node backend: %s", sorted(back.Counts))
	t.Logf("node proxy: in %s out %s", sorted(proxy.Counts), sorted(proxy.Client))
	t.Logf("node churn proxy: in %s out %s", sorted(churn.Counts), sorted(churn.Client))
	defer func() {
		if t.Failed() {
			for _, q := range []string{`otelbee_tls_calls_dropped_total`, `otelbee_tls_calls_total`, `otelbee_tls_membio_descriptors_total`,
				`otelbee_http_connections_unobserved_total`, `otelbee_http_requests_incomplete_total`, `otelbee_http_requests_dropped_total`} {
				ss, _ := prom.Query(context.Background(), q)
				for _, s := range ss {
					t.Logf("%s%v = %v", q, s.Labels, s.Value)
				}
			}
		}
	}()

	portLabels := append(append([]string{}, clientLabels...), "server_port")
	for _, s := range []struct {
		service string
		want    map[string]int
	}{
		{svc("node-backend"), back.Counts},
		{svc("node-proxy"), proxy.Counts},
		{svc("node-churn"), churn.Counts},
		{svc("goserver"), goSrv.Counts},
	} {
		waitPromCounts(t, prom, "http_server_request_duration_seconds", fmt.Sprintf(`job=%q,url_scheme="https"`, s.service), serverLabels, s.want)
	}
	for _, c := range []struct {
		service string
		want    map[string]int
	}{
		{svc("curl"), withPort(curl, backendPort)},
		{svc("goclient"), withPort(gocl.Counts, backendPort)},
		{svc("node-proxy"), withPort(proxy.Client, backendPort)},
		{svc("fetch-go"), withPort(fetchGo.Counts, goPort)},
		{svc("fetch-proxy"), withPort(fetchProxy.Counts, proxyPort)},
		{svc("node-churn"), withPort(churn.Client, backendPort)},
		{svc("fetch-churn"), withPort(fetchChurn.Counts, churnPort)},
	} {
		waitPromCounts(t, prom, "http_client_request_duration_seconds", fmt.Sprintf(`job=%q,url_scheme="https"`, c.service), portLabels, c.want)
	}
	for _, q := range []string{`otelbee_tls_membio_descriptors_total`, `otelbee_tls_calls_dropped_total{reason="no_fd"}`} {
		ss, _ := prom.Query(context.Background(), q)
		for _, s := range ss {
			t.Logf("%s%v = %v (host-wide)", q, s.Labels["outcome"], s.Value)
		}
	}
	if exited, _ := agent.Exited(); exited {
		t.Fatalf("agent exited:\n%s", agent.LogTail(40))
	}
}

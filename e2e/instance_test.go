package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// metricsText is one scrape of the agent's /metrics.
func metricsText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// seriesOf counts the exposed series (sample lines, each histogram bucket
// one) of a job, and the distinct instances among them.
func seriesOf(text, job string) (series int, instances map[string]bool) {
	instances = map[string]bool{}
	sel := `job="` + job + `"`
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' || !strings.Contains(line, sel) {
			continue
		}
		series++
		if _, rest, ok := strings.Cut(line, `instance="`); ok {
			inst, _, _ := strings.Cut(rest, `"`)
			instances[inst] = true
		}
	}
	return series, instances
}

// seriesDiff lists the series (sample lines without their values) of job
// that text has and base has not.
func seriesDiff(text, base, job string) []string {
	keys := func(text string) map[string]bool {
		m := map[string]bool{}
		sel := `job="` + job + `"`
		for _, line := range strings.Split(text, "\n") {
			if line == "" || line[0] == '#' || !strings.Contains(line, sel) {
				continue
			}
			if i := strings.LastIndexByte(line, '}'); i > 0 {
				line = line[:i+1]
			}
			m[line] = true
		}
		return m
	}
	have := keys(base)
	var out []string
	for k := range keys(text) {
		if !have[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// textSum adds the values of the sample lines of name whose labels
// include every one of labels (`k="v"` strings).
func textSum(text, name string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		lbls, val, ok := strings.Cut(line[len(name):], "} ")
		if !ok {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(lbls, l)
		}
		if v, err := strconv.ParseFloat(strings.Fields(val)[0], 64); err == nil && match {
			sum += v
		}
	}
	return sum
}

// runClients runs n curl requests to url from a shell loop, every process
// named svc, as a cron job or a health-check script would.
func runClients(t *testing.T, svc, url string, n int) {
	t.Helper()
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do curl -sf -o /dev/null %s || exit 1; i=$((i+1)); done`, n, url)
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+svc)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%d curl clients: %v: %s", n, err, out)
	}
}

// clientsByJob sums the client requests to port by service.
func clientsByJob(text string, port int) map[string]float64 {
	byJob := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "http_client_request_duration_seconds_count{") && strings.Contains(line, fmt.Sprintf(`server_port="%d"`, port)) {
			_, rest, _ := strings.Cut(line, `job="`)
			job, _, _ := strings.Cut(rest, `"`)
			f := strings.Fields(line)
			n, _ := strconv.ParseFloat(f[len(f)-1], 64)
			byJob[job] += n
		}
	}
	return byJob
}

// TestInstanceFolding (issue 16): 3,000 short-lived curl processes of one
// service add no series beyond the ones a single curl made, and their
// requests and connections are counted exactly (3,000, on both sides); an
// nginx with 4 workers is one instance, its master's.
func TestInstanceFolding(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	agent := harness.StartAgent(t, nil, "--collectors=all")
	sfx := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	serverSvc, clientSvc := "fold-server-"+sfx, "fold-curl-"+sfx
	port := harness.FreePort(t)
	srv := exec.Command(pythonBin(t), "-m", "http.server", strconv.Itoa(port), "--bind", "127.0.0.1", "--directory", t.TempDir())
	srv.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+serverSvc)
	harness.StartProcess(t, serverSvc, srv)
	waitPort(t, fmt.Sprintf("127.0.0.1:%d", port))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	wait := func(what string, cond func(text string) error) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			text := metricsText(t, agent.MetricsURL)
			err := cond(text)
			if err == nil {
				return text
			}
			if time.Now().After(deadline) {
				for _, line := range strings.Split(text, "\n") {
					if strings.HasPrefix(line, "http_client_request_duration_seconds_count{") && strings.Contains(line, fmt.Sprintf(`server_port="%d"`, port)) {
						t.Logf("client series to the server: %s", line)
					}
					if strings.HasPrefix(line, "otelbee_events_") && strings.Contains(line, `collector="process"`) {
						t.Logf("exec watcher: %s", line) // ringbuf and late_exec
					}
				}
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	var lostBefore float64 // otelbee_http_requests_dropped_total before the clients
	exact := func(n int) func(string) error {
		return func(text string) error {
			// Every connection once, on both sides, whichever service it
			// is credited to (a process whose exec the agent had not
			// handled when its traffic came is named later): the kernel's
			// counters are exact; waitPort's probe is one more.
			to := fmt.Sprintf(`server_port="%d"`, port)
			if v := textSum(text, "otelbee_tcp_connection_closed_total", to, `otelbee_network_connection_direction="outbound"`); v != float64(n+1) {
				return fmt.Errorf("client connections = %v, want %d", v, n+1)
			}
			if v := textSum(text, "otelbee_tcp_connection_closed_total", fmt.Sprintf(`job=%q`, serverSvc), `otelbee_network_connection_direction="inbound"`); v != float64(n+1) {
				return fmt.Errorf("server connections = %v, want %d", v, n+1)
			}
			// HTTP: every request once, each client's on its own
			// service (issue 16: one whose exec the agent handled after
			// its traffic used to land on unknown_service or curl). What
			// the capture lost on this shared host is counted in
			// otelbee_http_requests_dropped_total (host-wide): with no
			// loss the counts are exact.
			lost := int(textSum(text, "otelbee_http_requests_dropped_total") - lostBefore)
			for _, s := range [][]string{
				{"http_server_request_duration_seconds_count", fmt.Sprintf(`job=%q`, serverSvc)},
				{"http_client_request_duration_seconds_count", to},
			} {
				if v := int(textSum(text, s[0], s[1:]...)); v > n || v < n-lost {
					return fmt.Errorf("%v = %v, want %d (%d lost)", s, v, n, lost)
				}
			}
			all := textSum(text, "http_client_request_duration_seconds_count", to)
			if mine := textSum(text, "http_client_request_duration_seconds_count", to, fmt.Sprintf(`job=%q`, clientSvc)); mine != all {
				return fmt.Errorf("%v of the %v client requests credited to %s; by service: %v", mine, all, clientSvc, clientsByJob(text, port))
			}
			return nil
		}
	}

	lostBefore = textSum(metricsText(t, agent.MetricsURL), "otelbee_http_requests_dropped_total")
	runClients(t, clientSvc, url, 1)
	one := wait("one client", exact(1))
	seriesOne, instOne := seriesOf(one, clientSvc)
	if seriesOne == 0 || len(instOne) != 1 {
		t.Fatalf("one client: %d series, instances %v", seriesOne, instOne)
	}
	start := time.Now()
	runClients(t, clientSvc, url, 2999)
	t.Logf("2,999 more curl processes in %s", time.Since(start).Round(time.Millisecond))
	many := wait("3,000 clients", exact(3000))
	seriesMany, instMany := seriesOf(many, clientSvc)
	// The series that may come only with churn are not an instance's:
	// curl maps GnuTLS (through libcurl's dependencies), which the TLS
	// attacher counts once per service in otelbee.tls.processes.unobserved
	// when a scan of its maps (at exec, then 100ms, 1s, 5s later) finds
	// a curl still alive. A single curl is usually gone before the linker
	// has mapped the library; one of 3,000 is not. That series is per
	// service (service.name, stack, reason: no instance), so its resource
	// is the service's alone, with its own target_info without an
	// instance. Both are bounded by the service, not by its processes.
	churnOnly := func(s string) bool {
		svc := fmt.Sprintf(`job=%q`, clientSvc)
		switch {
		case strings.HasPrefix(s, "otelbee_tls_processes_unobserved_total{"):
			return strings.Contains(s, svc) && strings.Contains(s, `otelbee_tls_stack="gnutls"`) &&
				strings.Contains(s, `reason="unsupported_stack"`) && !strings.Contains(s, `instance="`)
		case strings.HasPrefix(s, "target_info{"):
			return strings.Contains(s, svc) && !strings.Contains(s, `instance="`)
		case strings.HasPrefix(s, "otelbee_http_requests_dropped_total{"), strings.HasPrefix(s, "otelbee_http_requests_incomplete_total{"):
			// What the HTTP capture lost under load, per service (no
			// instance): only when a loss happens, which one curl
			// rarely meets and 3,000 on a loaded host may.
			return strings.Contains(s, svc) && !strings.Contains(s, `instance="`)
		}
		return false
	}
	added, gone := seriesDiff(many, one, clientSvc), seriesDiff(one, many, clientSvc)
	var unexpected []string
	for _, s := range added {
		if !churnOnly(s) {
			unexpected = append(unexpected, s)
		}
	}
	if len(unexpected) > 0 || len(gone) > 0 || len(instMany) != 1 {
		t.Errorf("3,000 short-lived clients: %d series in %d instances %v; one client made %d in %v; series added %v, gone %v",
			seriesMany, len(instMany), instMany, seriesOne, instOne, unexpected, gone)
	}
	want := hostname() + ":" + clientSvc
	if !instMany[want] {
		t.Errorf("the clients' instance is %v, want %s", instMany, want)
	}
	t.Logf("one client: %d series; 3,000 clients: %d series (of them added by churn: %v), instance %v", seriesOne, seriesMany, added, instMany)
	for _, line := range strings.Split(many, "\n") {
		if strings.HasPrefix(line, "otelbee_events_") && strings.Contains(line, `stage="late_exec"`) {
			t.Logf("exec watcher: %s", line) // lookups that waited for a late exec
		}
	}

	// nginx with 4 workers: one instance, the master's.
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Skip("skipping the nginx part: nginx not installed")
	}
	ngSvc := "fold-nginx-" + sfx
	ngPort, master, workers := startNginxWorkers(t, ngSvc, 4)
	getN(t, fmt.Sprintf("http://127.0.0.1:%d/index.html", ngPort), 40)
	text := wait("nginx", func(text string) error {
		if v := textSum(text, "http_server_request_duration_seconds_count", fmt.Sprintf(`job=%q`, ngSvc)); v != 40 {
			return fmt.Errorf("nginx requests = %v, want 40", v)
		}
		return nil
	})
	_, inst := seriesOf(text, ngSvc)
	wantNg := fmt.Sprintf("%s:%d", hostname(), master.Pid())
	if len(inst) != 1 || !inst[wantNg] {
		t.Errorf("nginx with workers %v: instances %v, want only %s (the master's)", workers, inst, wantNg)
	}
	targets := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "target_info{") && strings.Contains(line, fmt.Sprintf(`job=%q`, ngSvc)) {
			targets++
		}
	}
	if targets != 1 {
		t.Errorf("nginx with 4 workers: %d target_info series, want 1", targets)
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// grafanaDashboard is the part of a Grafana dashboard's JSON the test reads.
type grafanaDashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboards executes every panel query of every dashboard under
// dashboards/grafana against the real Prometheus scraping the agent while
// real programs make HTTP calls (Python against a Go server, with a 5xx), a
// refused TCP connect and DNS lookups (Python's resolver against dnsmasq, an
// NXDOMAIN each round),
// and fails for a panel whose query returns nothing or only NaN: a renamed
// metric or label shows up here, not on a user's empty dashboard. $job is
// the test's own services, $__rate_interval one minute.
func TestDashboards(t *testing.T) {
	harness.RequireRoot(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "dashboards", "grafana", "*.json"))
	if err != nil || len(files) < 4 {
		t.Fatalf("dashboards: %v %v, want the HTTP, TCP, DNS and agent dashboards", files, err)
	}
	dashboards := map[string]grafanaDashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d grafanaDashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.Title == "" || len(d.Panels) == 0 {
			t.Fatalf("%s: no title or no panels", f)
		}
		dashboards[filepath.Base(f)] = d
	}

	env := startDNSEnv(t, "dashbd")
	col := harness.StartCollector(t)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000", "OTEL_BSP_SCHEDULE_DELAY=200"},
		"--collectors=tcp,dns,http", "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)

	sfx := strconv.Itoa(rand.IntN(1 << 30))
	srv, cli, dnsSvc := "dash-srv-"+sfx, "dash-cli-"+sfx, "dash-dns-"+sfx
	addr, stop := goServer(t, srv)
	defer stop()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedHost, closedPort, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	// Long-lived clients making rounds of calls a few scrapes apart, so that
	// every rate has an increase inside its window (a series is one
	// process's: a short-lived client's series never increases after its
	// first sample, and rate() cannot see that one).
	const rounds = 4
	httpClient := fmt.Sprintf(`
import socket, time, urllib.request, urllib.error
for r in range(%d):
    for path in ["/fail"] + ["/users/%%d" %% (r*10+i) for i in range(4)]:
        try:
            urllib.request.urlopen("http://%s" + path).read()
        except urllib.error.HTTPError as e:
            e.read()
    s = socket.socket()
    try:
        s.connect(("%s", %s))
    except ConnectionRefusedError:
        pass
    s.close()
    time.sleep(3)
`, rounds, addr, closedHost, closedPort)
	dnsClient := fmt.Sprintf(`
import socket, time
for r in range(%d):
    for name in ["web.%s", "missing.%s"]:
        try:
            socket.gethostbyname(name)
        except socket.gaierror:
            pass
    time.sleep(3)
`, rounds, dnsDomain, dnsDomain)
	hc := exec.Command("python3", "-c", httpClient)
	hc.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+cli)
	hp := harness.StartProcess(t, cli, hc)
	dnsRunClient(t, env.pair.A, dnsSvc, "python3", "-c", dnsClient)
	if err := hp.Wait(60 * time.Second); err != nil {
		t.Fatalf("http client: %v\n%s", err, hp.LogTail(20))
	}
	// The last round is in Prometheus.
	prom.WaitFor(t, fmt.Sprintf(`sum(dns_lookup_duration_seconds_count{job=%q,dns_question_name="missing.%s"})`, dnsSvc, dnsDomain),
		func(s []harness.Sample) bool { return len(s) == 1 && s[0].Value >= rounds }, 30*time.Second)

	jobs := strings.Join([]string{srv, cli, dnsSvc}, "|")
	subst := strings.NewReplacer("$__rate_interval", "1m", "$job", jobs)
	for file, d := range dashboards {
		for _, p := range d.Panels {
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				q := subst.Replace(tg.Expr)
				ss, err := prom.Query(t.Context(), q)
				if err != nil {
					t.Errorf("%s: panel %q query %s: %v\n%s", file, p.Title, tg.RefID, err, q)
					continue
				}
				data := 0
				for _, s := range ss {
					if !math.IsNaN(s.Value) {
						data++
					}
				}
				if data == 0 {
					t.Errorf("%s: panel %q query %s returns no data (%d series, all NaN):\n%s", file, p.Title, tg.RefID, len(ss), q)
				}
			}
		}
	}
}

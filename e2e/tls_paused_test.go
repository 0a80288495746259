package e2e

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestTLSGoClientBeforeItsExecIsHandled: a new process of a Go executable
// whose crypto/tls is already instrumented (a server of the same file runs)
// makes its HTTPS requests while the agent's user space is stopped
// (SIGSTOP), so the agent cannot have handled its exec when its handshake
// reaches the kernel: a short-lived client's whole life can fit in that gap
// on a busy host. The kernel knows the executable from its descriptor
// offsets and holds the connection for the plaintext to come, so the
// client's requests are recorded once the agent resumes, exactly as the
// client counted them, and nothing is counted as unobserved TLS. (Before,
// the connection was counted as unobserved TLS although its plaintext was
// read; under load the client's requests were lost too.)
func TestTLSGoClientBeforeItsExecIsHandled(t *testing.T) {
	harness.RequireRoot(t)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	svc := func(s string) string { return "tlspause-" + s + "-" + sfx }
	cert, key := tlsCert(t)
	agent := harness.StartAgent(t, nil, "--collectors=http")
	ng := startTLSNginx(t, svc("nginx"), cert, key)
	waitLibUprobes(t, agent, ng.proc.Pid(), "libssl.so")
	httpload := buildTool(t, "./e2e/cmd/httpload")
	_, stopGoServer := startHTTPLoadServer(t, httpload, svc("goserver"))
	defer stopGoServer()
	waitUprobes(t, agent, httpload)

	if err := agent.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			agent.Cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	gocl := parseHTTPReport(t, runClient(t, svc("goclient"), httpload,
		"-url", fmt.Sprintf("https://127.0.0.1:%d", ng.Port), "-plan", "GET /api/items/3*6,GET /api/fail*2,GET /missing*3"))
	resume()
	if gocl.Errors != 0 || sumCounts(gocl.Counts) != 11 {
		t.Fatalf("client: %+v", gocl)
	}
	client := func(mfs map[string]*dto.MetricFamily) map[string]int {
		out := map[string]int{}
		if mf := mfs["http_client_request_duration_seconds"]; mf != nil {
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if l["job"] == svc("goclient") {
					out[l["http_request_method"]+" "+l["http_response_status_code"]] += int(m.GetHistogram().GetSampleCount())
				}
			}
		}
		return out
	}
	mfs := rpWait(t, agent, "the paused client's requests", func(mfs map[string]*dto.MetricFamily) bool {
		return sumCounts(client(mfs)) >= sumCounts(gocl.Counts)
	})
	time.Sleep(time.Second) // anything extra would show up too
	mfs = rpScrape(t, agent.MetricsURL)
	if got := client(mfs); !equalCounts(got, gocl.Counts) {
		t.Errorf("client series %v, the client counted %v", got, gocl.Counts)
	}
	if n := rpCounter(mfs, "otelbee_tls_processes_unobserved", map[string]string{"job": svc("goclient")}); n != 0 {
		t.Errorf("the client counted as unobserved TLS %v times", n)
	}
	if n := rpCounter(mfs, "otelbee_http_connections_unobserved", map[string]string{"job": svc("goclient")}); n != 0 {
		t.Errorf("%v of the client's connections counted as unobserved", n)
	}
}

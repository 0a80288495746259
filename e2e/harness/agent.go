package harness

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Agent is a running otelbee binary.
type Agent struct {
	*Process
	// MetricsURL is the Prometheus endpoint, "" when turned off.
	MetricsURL string
	// PromAddr is host:port of the Prometheus endpoint.
	PromAddr string
}

// AgentBin is the binary under test: $OTELBEE_BIN, else build/bin/otelbee
// under the repository root (`make build`). Tests skip when it is missing.
func AgentBin() (string, error) {
	if p := os.Getenv("OTELBEE_BIN"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "build", "bin", "otelbee")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("agent binary %s missing (run `make build`): %w", p, err)
	}
	return p, nil
}

// StartAgent runs the agent with args plus a Prometheus endpoint on a free
// loopback port (unless args set --prometheus.listen), with env added to
// the test's environment, and waits until /metrics answers and every enabled
// collector is loaded. It is stopped (SIGTERM) on cleanup.
func StartAgent(t testing.TB, env []string, args ...string) *Agent {
	t.Helper()
	RequireRoot(t)
	bin, err := AgentBin()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	a := &Agent{}
	hasListen := false
	for _, arg := range args {
		if strings.HasPrefix(arg, "--prometheus.listen") || strings.HasPrefix(arg, "-prometheus.listen") {
			hasListen = true
		}
	}
	if !hasListen {
		a.PromAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		args = append(args, "--prometheus.listen="+a.PromAddr)
		a.MetricsURL = "http://" + a.PromAddr + "/metrics"
	}
	hasState := false
	for _, arg := range args {
		hasState = hasState || strings.HasPrefix(arg, "--state-dir") || strings.HasPrefix(arg, "-state-dir")
	}
	for _, kv := range env {
		hasState = hasState || strings.HasPrefix(kv, "OTELBEE_STATE_DIR=")
	}
	if !hasState {
		// Each test's agent keeps its identities to itself, not in the
		// host's /var/lib/otelbee.
		args = append(args, "--state-dir="+t.TempDir())
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	a.Process = StartProcess(t, "otelbee", cmd)
	// Registered after the process's own cleanup, so it runs first, while
	// the agent still serves: a failed test says what the agent gave up.
	t.Cleanup(func() {
		if t.Failed() && a.MetricsURL != "" {
			t.Logf("agent's non-zero loss counters at the end of the test:\n%s", a.lossCounters())
		}
	})
	// Loading takes a few seconds on a quiet machine; the verifier's work
	// on the L7 programs grows with the machine's load (30 s was passed at
	// load 29).
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if a.MetricsURL != "" {
		if err := WaitHTTP(ctx, a.MetricsURL); err != nil {
			t.Fatalf("agent did not serve metrics: %v\n%s", err, a.LogTail(40))
		}
	}
	// "otelbee running" is logged after every collector's Load returned.
	for !strings.Contains(a.Log(), "otelbee running") {
		if ctx.Err() != nil {
			t.Fatalf("agent did not finish starting:\n%s", a.LogTail(40))
		}
		if exited, _ := a.Exited(); exited {
			t.Fatalf("agent exited during start-up:\n%s", a.LogTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return a
}

// lossCounters returns the agent's non-zero self-metric lines that count
// something given up (dropped, lost, undecodable, overflow, unobserved), so
// a failing exact-count test shows where the difference went.
func (a *Agent) lossCounters() string {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(a.MetricsURL)
	if err != nil {
		return "scraping: " + err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "otelbee_") || strings.HasSuffix(line, " 0") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		for _, w := range []string{"dropped", "lost", "undecodable", "overflow", "unobserved", "gave_up", "given_up", "errors"} {
			if strings.Contains(name, w) {
				b.WriteString(line)
				b.WriteByte('\n')
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		b.WriteString("reading: " + err.Error())
	}
	return b.String()
}

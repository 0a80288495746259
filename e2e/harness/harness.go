// Package harness holds the pieces otelbee's end-to-end tests are built from:
// a real Prometheus server (Debian's /usr/bin/prometheus), a real OpenTelemetry
// Collector built with the official builder (scripts/build-otelcol.sh) whose file
// exporter output is parsed back into plain Go structs, network namespace pairs
// joined by a veth link, and small helpers (free ports, readiness polling, root
// checks, supervised child processes).
//
// Everything a helper starts is stopped, and everything it creates is deleted,
// through t.Cleanup, also when the test fails. Child processes get SIGKILL if the
// test binary dies (PR_SET_PDEATHSIG, set from a goroutine pinned to its OS thread
// for the child's whole life, so an unrelated thread exit cannot kill it).
//
// Helpers that need something the machine may lack (root, the collector binary,
// a kernel feature) skip the test with the reason; they never pass vacuously.
//
// A typical TCP test:
//
//	harness.RequireRoot(t)
//	col := harness.StartCollector(t)            // skips unless scripts/build-otelcol.sh ran
//	prom := harness.StartPrometheus(t, []string{agentMetricsAddr}, time.Second)
//	pair := harness.NewNetnsPair(t, "tcp")      // or NewEmulatedPair for delay and loss
//	srv := exec.Command(...)                    // or harness.Command(pair.B, tcpload, "-server", ...)
//	p := harness.StartProcess(t, "server", srv) // stopped on cleanup, output shown on failure
//	...
//	col.WaitForMetric(t, "otelbee.tcp.connection.opened", harness.Filter{
//		Resource: map[string]string{"service.name": "tcpload-client"},
//	}, func(v float64) bool { return v == 11 }, 30*time.Second)
//	prom.WaitFor(t, `sum(otelbee_tcp_connection_opened_total{job="tcpload-client"})`, ...)
//
// Notes: Prometheus applies its scrape targets about 5s after it starts (its
// discovery manager's update interval), so the first samples of a target appear
// then. This kernel family may lack netem (CONFIG_NET_SCH_NETEM); Netem then
// returns ErrNetemUnsupported, and EmulatedPair gives delay and deterministic
// packet drops without it.
package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ModulePath is the Go module whose root RepoRoot looks for.
const ModulePath = "github.com/otelbee/otelbee"

// RequireRoot skips the test when the process does not run as root (uid 0):
// the e2e tests load BPF programs, create network namespaces and bind raw sockets.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("e2e: needs root (running as uid %d): BPF, network namespaces and raw sockets need CAP_SYS_ADMIN/CAP_NET_ADMIN", os.Geteuid())
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago (the
// kernel picked it for a listener that is closed again before returning). Servers
// started by this package retry with a new port when they lose that race.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("harness: free port: %v", err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on 127.0.0.1:0: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitHTTP polls url with GET until it answers with a 2xx status or ctx is done.
// The error on timeout names the last status or transport error seen.
func WaitHTTP(ctx context.Context, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 300 {
				return nil
			}
			last = fmt.Errorf("status %s", resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %v)", url, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// waitTCP polls addr until a TCP connect succeeds, ctx is done, or alive reports
// an error (the server process exited).
func waitTCP(ctx context.Context, addr string, alive func() error) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if err := alive(); err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %v)", addr, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// RepoRoot returns the root of the otelbee checkout: the nearest directory at or
// above the working directory whose go.mod declares ModulePath.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repo root: %w", err)
	}
	for {
		if isModuleRoot(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repo root: no go.mod for module %s at or above the working directory", ModulePath)
		}
		dir = parent
	}
}

func isModuleRoot(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == ModulePath
		}
	}
	return false
}

// errAddrInUse reports whether a server log says its listen address was taken,
// which happens when another process grabs a FreePort port first.
func errAddrInUse(log string) bool {
	return strings.Contains(log, "address already in use")
}

var errExited = errors.New("process exited")

package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Collector is a running OpenTelemetry Collector (the otelcol-otelbee build) with
// an OTLP receiver on loopback and file exporters writing OTLP JSON lines.
type Collector struct {
	GRPCEndpoint string // 127.0.0.1:PORT, OTLP/gRPC
	HTTPEndpoint string // 127.0.0.1:PORT, OTLP/HTTP (paths /v1/metrics, /v1/traces, /v1/logs)

	MetricsPath string // file exporter output for metrics
	TracesPath  string // file exporter output for traces
	LogsPath    string // file exporter output for logs (not parsed by the harness)
	ConfigPath  string
	Process     *Process
}

// CollectorBin returns the collector binary the harness runs: $OTELCOL_BIN, or
// <user cache>/otelbee/otelcol/otelcol-otelbee (built there by `make otelcol`,
// outside the checkout so that fresh clones reuse it).
func CollectorBin() (string, error) {
	if v := os.Getenv("OTELCOL_BIN"); v != "" {
		return v, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "otelbee", "otelcol", "otelcol-otelbee"), nil
}

// StartCollector runs the collector and waits until both OTLP endpoints accept
// connections. It skips the test when the binary is missing, and stops the
// collector on t.Cleanup.
func StartCollector(t testing.TB) *Collector {
	t.Helper()
	bin, err := CollectorBin()
	if err != nil {
		t.Skipf("e2e: collector binary not located (%v): set OTELCOL_BIN", err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("e2e: collector binary not available (%v): run scripts/build-otelcol.sh or set OTELCOL_BIN", err)
	}
	dir := t.TempDir()
	c := &Collector{
		MetricsPath: filepath.Join(dir, "metrics.jsonl"),
		TracesPath:  filepath.Join(dir, "traces.jsonl"),
		LogsPath:    filepath.Join(dir, "logs.jsonl"),
		ConfigPath:  filepath.Join(dir, "otelcol.yaml"),
	}
	mk := func() (*exec.Cmd, error) {
		gp, err := freePort()
		if err != nil {
			return nil, err
		}
		hp, err := freePort()
		if err != nil {
			return nil, err
		}
		if hp == gp {
			return nil, fmt.Errorf("collector: got the same free port twice (%d)", gp)
		}
		c.GRPCEndpoint = fmt.Sprintf("127.0.0.1:%d", gp)
		c.HTTPEndpoint = fmt.Sprintf("127.0.0.1:%d", hp)
		if err := os.WriteFile(c.ConfigPath, []byte(collectorConfig(c)), 0o644); err != nil {
			return nil, fmt.Errorf("collector: write config: %w", err)
		}
		return exec.Command(bin, "--config="+c.ConfigPath), nil
	}
	ready := func(p *Process) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, addr := range []string{c.GRPCEndpoint, c.HTTPEndpoint} {
			if err := waitTCP(ctx, addr, p.alive); err != nil {
				return fmt.Errorf("collector not ready: %w", err)
			}
		}
		return nil
	}
	p, err := startServer(t, "otelcol", mk, ready)
	if err != nil {
		t.Fatalf("harness: start collector: %v", err)
	}
	c.Process = p
	return c
}

// Stop stops the collector (SIGTERM: it drains its receivers and flushes
// its file exporters first), e.g. to simulate an outage.
func (c *Collector) Stop() { c.Process.Stop() }

// Restart starts a stopped collector again with the same ports and
// configuration. Its file exporters start their files anew: read what the
// previous run wrote before calling it.
func (c *Collector) Restart(t testing.TB) {
	t.Helper()
	bin, err := CollectorBin()
	if err != nil {
		t.Fatalf("harness: restart collector: %v", err)
	}
	p, err := startProcess(t, "otelcol", exec.Command(bin, "--config="+c.ConfigPath))
	if err != nil {
		t.Fatalf("harness: restart collector: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, addr := range []string{c.GRPCEndpoint, c.HTTPEndpoint} {
		if err := waitTCP(ctx, addr, p.alive); err != nil {
			t.Fatalf("harness: restarted collector not ready: %v", err)
		}
	}
	c.Process = p
}

func collectorConfig(c *Collector) string {
	return fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %q
      http:
        endpoint: %q
exporters:
  file/metrics:
    path: %q
    format: json
    flush_interval: 100ms
  file/traces:
    path: %q
    format: json
    flush_interval: 100ms
  file/logs:
    path: %q
    format: json
    flush_interval: 100ms
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: info
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [file/metrics, debug]
    traces:
      receivers: [otlp]
      exporters: [file/traces, debug]
    logs:
      receivers: [otlp]
      exporters: [file/logs, debug]
`, c.GRPCEndpoint, c.HTTPEndpoint, c.MetricsPath, c.TracesPath, c.LogsPath)
}

// Metrics parses everything the collector has written to its metrics file so far,
// in export order.
func (c *Collector) Metrics() ([]ResourceMetrics, error) { return ReadMetricsFile(c.MetricsPath) }

// Spans parses everything the collector has written to its traces file so far.
func (c *Collector) Spans() ([]Span, error) { return ReadTracesFile(c.TracesPath) }

// Latest returns the latest point of each series of metric name matching f (see
// the package function Latest).
func (c *Collector) Latest(name string, f Filter) ([]SeriesPoint, error) {
	rms, err := c.Metrics()
	if err != nil {
		return nil, err
	}
	return Latest(rms, name, f), nil
}

// Total returns the accumulated value of metric name over all series matching f
// (see the package function Total); ok is false when no series matched.
func (c *Collector) Total(name string, f Filter) (total float64, ok bool, err error) {
	rms, err := c.Metrics()
	if err != nil {
		return 0, false, err
	}
	total, ok = Total(rms, name, f)
	return total, ok, nil
}

// WaitForMetric polls the metrics file every 100ms until metric name has at least
// one series matching f and cond holds for their Total, and returns the matching
// series. It fails the test after timeout, showing what it saw last.
func (c *Collector) WaitForMetric(t testing.TB, name string, f Filter, cond func(total float64) bool, timeout time.Duration) []SeriesPoint {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		last    []SeriesPoint
		lastErr error
		names   []string
	)
	for {
		rms, err := c.Metrics()
		lastErr = err
		if err == nil {
			last = Latest(rms, name, f)
			names = MetricNames(rms)
			var total float64
			for _, sp := range last {
				total += sp.Total
			}
			if len(last) > 0 && cond(total) {
				return last
			}
		}
		if time.Now().After(deadline) {
			break
		}
		if err := c.Process.alive(); err != nil {
			t.Fatalf("collector: waiting for %s %s: %v", name, f, err)
		}
		<-tick.C
	}
	if lastErr != nil {
		t.Fatalf("collector: %s %s: condition not met within %v; last error: %v", name, f, timeout, lastErr)
	}
	msg := fmt.Sprintf("collector: %s %s: condition not met within %v; %d matching series:", name, f, timeout, len(last))
	for _, sp := range last {
		msg += fmt.Sprintf("\n  resource%s attributes%s total=%g", mapString(sp.Resource), mapString(sp.Point.Attributes), sp.Total)
	}
	msg += fmt.Sprintf("\nmetric names seen: %v", names)
	t.Fatal(msg)
	return nil
}

// WaitForSpans polls the traces file every 100ms until cond holds for all spans
// exported so far, and returns them. It fails the test after timeout.
func (c *Collector) WaitForSpans(t testing.TB, cond func([]Span) bool, timeout time.Duration) []Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		last    []Span
		lastErr error
	)
	for {
		last, lastErr = c.Spans()
		if lastErr == nil && cond(last) {
			return last
		}
		if time.Now().After(deadline) {
			break
		}
		if err := c.Process.alive(); err != nil {
			t.Fatalf("collector: waiting for spans: %v", err)
		}
		<-tick.C
	}
	if lastErr != nil {
		t.Fatalf("collector: spans: condition not met within %v; last error: %v", timeout, lastErr)
	}
	t.Fatalf("collector: spans: condition not met within %v; %d spans exported", timeout, len(last))
	return nil
}

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestBadInput: every invalid flag, value or file is one line naming the
// problem, exit status 2, and nothing started.
func TestBadInput(t *testing.T) {
	bin, err := harness.AgentBin()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("collectors: [tcp\n"), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--collectors=tcp,nope"}, nil, `unknown collector "nope" (valid:`},
		{[]string{"--prometheus.listen=localhost"}, nil, `invalid prometheus.listen "localhost"`},
		{[]string{"--otlp.protocol=carrier-pigeon"}, nil, "carrier-pigeon"},
		{nil, []string{"OTEL_EXPORTER_OTLP_PROTOCOL=thrift"}, "thrift"},
		{[]string{"--config", badYAML}, nil, "parsing config file"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, nil, "reading config file"},
		{[]string{"--attach-mode=kprobes"}, nil, `unknown attach mode "kprobes"`},
		{[]string{"--bogus"}, nil, "flag provided but not defined"},
		// These used to read forever (9 GB and growing) or block.
		{[]string{"--config=/dev/zero"}, nil, `reading config file "/dev/zero": not a regular file`},
		{[]string{"--config=/dev/urandom"}, nil, `reading config file "/dev/urandom": not a regular file`},
		{[]string{"--config", fifo}, nil, "not a regular file (p"},
		{nil, []string{"OTEL_BSP_MAX_QUEUE_SIZE=2000000000"}, "invalid OTEL_BSP_MAX_QUEUE_SIZE"},
		{nil, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://[::1"}, `OTEL_EXPORTER_OTLP_ENDPOINT "http://[::1"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append(tt.args, tt.env...), " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			cmd.Env = append(os.Environ(), tt.env...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("still running after %v (killed); output:\n%.2000s", time.Since(start), out)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want status 2; output:\n%s", err, out)
			}
			if lines := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; lines != 1 || len(out) > 2048 {
				t.Fatalf("want one short line, got %d lines, %d bytes:\n%.2000s", lines, len(out), out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("output %q does not name the problem (%q)", out, tt.want)
			}
			if strings.Contains(string(out), "level=") {
				t.Fatalf("something started before the config was rejected:\n%s", out)
			}
		})
	}
}

// TestOTLPEndpointRefusing: with an OTLP endpoint that refuses connections
// the agent keeps running, /metrics keeps serving, and the failed exports are
// counted in otelbee_exporter_failures_total.
func TestOTLPEndpointRefusing(t *testing.T) {
	harness.RequireRoot(t)
	port := harness.FreePort(t) // nothing listens there
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=300", "OTEL_EXPORTER_OTLP_TIMEOUT=500"},
		"--collectors=tcp", "--otlp.protocol=grpc", fmt.Sprintf("--otlp.endpoint=http://127.0.0.1:%d", port))
	var last float64
	deadline := time.Now().Add(30 * time.Second)
	for seen := 0; seen < 3; {
		v := scrapeValue(t, agent.MetricsURL, `otelbee_exporter_failures_total{exporter="otlp_metrics",job="otelbee"}`)
		if v > last {
			seen++
			last = v
		}
		if time.Now().After(deadline) {
			t.Fatalf("export failures did not keep rising (last %v):\n%s", last, agent.LogTail(20))
		}
		if exited, err := agent.Exited(); exited {
			t.Fatalf("agent exited: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("failed exports counted: %v; agent alive, /metrics serving", last)
}

// scrapeValue scrapes url and returns the sum of the values of the series
// of a family whose labels include the selector's (series is
// name{label="value",...}): other labels, like otel_scope_version, need not
// be spelled out.
func scrapeValue(t *testing.T, url, series string) float64 {
	t.Helper()
	name, sel, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
	match := map[string]string{}
	for _, m := range labelPairRE.FindAllStringSubmatch(sel, -1) {
		v, err := strconv.Unquote(`"` + m[2] + `"`)
		if err != nil {
			t.Fatalf("series %s: label %s: %v", series, m[1], err)
		}
		match[m[1]] = v
	}
	return dnsFamilySum(dnsScrapeFamilies(t, url), name, match)
}

// labelPairRE matches one name="value" of a series selector.
var labelPairRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// TestTracepointPathAndFallback: on this kernel (no kprobes, fentry refused)
// the agent asked to prefer fentry logs why fentry cannot attach and falls
// back along the chain; asked for the classic tracepoints it runs every hook
// on them. Either way the counts are exact, and doctor says why.
func TestTracepointPathAndFallback(t *testing.T) {
	harness.RequireRoot(t)
	bin, err := harness.AgentBin()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	doctor, err := exec.Command(bin, "doctor").CombinedOutput()
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, doctor)
	}
	fentryOK := !strings.Contains(string(doctor), "fentry        unavailable")
	kprobeOK := !strings.Contains(string(doctor), "kprobe        unavailable")
	if fentryOK || kprobeOK {
		t.Skipf("skipping: this kernel has fentry or kprobes; the fallback case is for kernels without:\n%s", doctor)
	}
	t.Logf("doctor:\n%s", doctor)
	for _, want := range []string{"tcp: runs", "process watcher: runs"} {
		if !strings.Contains(string(doctor), want) {
			t.Errorf("doctor does not say %q", want)
		}
	}

	for _, mode := range []string{"fentry", "tracepoint"} {
		t.Run(mode, func(t *testing.T) {
			agent := harness.StartAgent(t, nil, "--collectors=tcp", "--attach-mode="+mode)
			log := agent.Log()
			if mode == "fentry" {
				for _, want := range []string{
					`hook=send mode=fentry reason=`, `hook=recv mode=fentry reason=`,
					`msg="hook attached" component=tcp hook=send mode=tp_btf`,
				} {
					if !strings.Contains(log, want) {
						t.Errorf("log lacks %q:\n%s", want, log)
					}
				}
			}
			for _, hook := range []string{"state", "send", "recv", "retransmit", "reset_sent", "reset_received"} {
				series := fmt.Sprintf(`otelbee_bpf_program_attached{collector="tcp",mode=%q,program=%q,job="otelbee"}`,
					map[bool]string{true: "tracepoint", false: "tp_btf"}[mode == "tracepoint"], hook)
				if v := scrapeValue(t, agent.MetricsURL, series); v != 1 {
					t.Errorf("%s = %v, want 1", series, v)
				}
			}
			exactLoopbackCounts(t, agent)
		})
	}
}

// exactLoopbackCounts runs 10 exchanges of known size against the agent and
// reads its /metrics directly.
func exactLoopbackCounts(t *testing.T, agent *harness.Agent) {
	t.Helper()
	svc := "fallback-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	addr, stop := tcpServer(t, "", "127.0.0.1:0", svc+"-server")
	c := tcpClient(t, "", svc, "-addr", addr, "-n", "10", "-send", "12345", "-recv", "678")()
	stop()
	_, port, _ := net.SplitHostPort(addr)
	lbl := fmt.Sprintf(`otelbee_network_connection_direction="outbound",network_io_direction="transmit",network_peer_address="127.0.0.1",network_transport="tcp",network_type="ipv4",server_port=%q,instance="%s:%s",job=%q`,
		port, hostname(), svc, svc) // a client that does not listen: its service's instance on this host
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if v := scrapeValue(t, agent.MetricsURL, "otelbee_tcp_connection_io_bytes_total{"+lbl+"}"); v == float64(c.BytesSent) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("otelbee_tcp_connection_io_bytes_total{%s} never reached %d", lbl, c.BytesSent)
}

func hostname() string { h, _ := os.Hostname(); return h }

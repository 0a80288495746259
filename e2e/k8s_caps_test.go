package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/otelbee/otelbee/e2e/harness"
)

// chartCapabilities is the capability list the Helm chart grants by default.
func chartCapabilities(t *testing.T) []string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "charts", "otelbee", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Capabilities []string `yaml:"capabilities"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v.Capabilities
}

// withCaps runs argv with only caps (e.g. "BPF") in its bounding set, so a
// root process has exactly those capabilities, as in the chart's container.
func withCaps(caps []string, argv ...string) *exec.Cmd {
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(c)
	}
	return exec.Command("setpriv", append([]string{"--bounding-set=" + set, "--inh-caps=-all", "--"}, argv...)...)
}

func without(caps []string, drop string) []string {
	var out []string
	for _, c := range caps {
		if c != drop {
			out = append(out, c)
		}
	}
	return out
}

// TestChartCapabilities proves that each capability the Helm chart grants is
// needed, by running the real agent with the chart's set and with the set
// less that one capability: with all of them every collector and the
// process watcher run and a process of another user is named by its
// OTEL_SERVICE_NAME; without CAP_BPF nothing loads, without CAP_PERFMON the
// tracepoint collectors do not attach, without CAP_NET_ADMIN the DNS
// collector's socket hooks are refused, and without CAP_SYS_PTRACE or
// CAP_DAC_READ_SEARCH another user's process loses its service name.
func TestChartCapabilities(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("skipping: setpriv (util-linux) not installed")
	}
	bin, err := harness.AgentBin()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	caps := chartCapabilities(t)
	if strings.Join(caps, ",") != "BPF,PERFMON,NET_ADMIN,SYS_PTRACE,DAC_READ_SEARCH" {
		t.Fatalf("the chart grants %v: this test proves BPF, PERFMON, NET_ADMIN, SYS_PTRACE and DAC_READ_SEARCH; update it", caps)
	}
	doctor := func(caps []string) string {
		out, _ := withCaps(caps, bin, "doctor", "--collectors=all").CombinedOutput()
		return string(out)
	}
	full := doctor(caps)
	for _, want := range []string{"  dns: runs\n", "  http: runs\n", "  tcp: runs\n", "process watcher: runs"} {
		if !strings.Contains(full, want) {
			t.Errorf("with the chart's capabilities, doctor lacks %q:\n%s", want, full)
		}
	}
	for _, tc := range []struct {
		drop string
		want []string
	}{
		{"BPF", []string{"tcp: cannot run", "http: cannot run", "dns: cannot run", "missing capabilities CAP_BPF"}},
		{"PERFMON", []string{"tcp: cannot run", "http: cannot run", "missing capabilities CAP_PERFMON"}},
		{"NET_ADMIN", []string{"dns: runs degraded", "missing capabilities CAP_NET_ADMIN"}},
	} {
		out := doctor(without(caps, tc.drop))
		for _, want := range tc.want {
			if !strings.Contains(out, want) {
				t.Errorf("without CAP_%s, doctor lacks %q:\n%s", tc.drop, want, out)
			}
		}
	}

	// /proc/<pid>/environ of another user's process: a tcpload server run
	// as nobody before the agent starts (so only /proc tells its name).
	svc := fmt.Sprintf("capsvc-%d", rand.IntN(1<<30))
	dir, err := os.MkdirTemp("", "otelbee-caps-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	ready := filepath.Join(dir, "ready")
	tcpload := buildTool(t, "./e2e/cmd/tcpload")
	os.Chmod(filepath.Dir(tcpload), 0o755)
	srv := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		tcpload, "-server", "-addr", "127.0.0.1:0", "-ready-file", ready)
	srv.Env = []string{"OTEL_SERVICE_NAME=" + svc, "PATH=/usr/bin:/bin"}
	harness.StartProcess(t, "nobody-server", srv)
	addr := waitAddrFile(t, ready)
	port := addr[strings.LastIndex(addr, ":")+1:]

	serverName := func(caps []string) string {
		t.Helper()
		promAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		cmd := withCaps(caps, bin, "--collectors=tcp", "--prometheus.listen="+promAddr)
		p := harness.StartProcess(t, "otelbee-caps", cmd)
		defer p.Stop()
		deadline := time.Now().Add(120 * time.Second)
		for !strings.Contains(p.Log(), "otelbee running") {
			if time.Now().After(deadline) {
				t.Fatalf("agent did not start:\n%s", p.LogTail(20))
			}
			time.Sleep(50 * time.Millisecond)
		}
		runClientNamed(t, tcpload, addr)
		for time.Now().Before(deadline) {
			resp, err := http.Get("http://" + promAddr + "/metrics")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, "otelbee_tcp_connection_opened_total{") && strings.Contains(l, `otelbee_network_connection_direction="inbound"`) &&
						strings.Contains(l, `server_port="`+port+`"`) {
						// job is the series' service.name (no namespace here).
						i := strings.Index(l, `job="`)
						if i < 0 {
							t.Fatalf("no job label: %s", l)
						}
						i += len(`job="`)
						return l[i : i+strings.IndexByte(l[i:], '"')]
					}
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("no inbound series for port %s:\n%s", port, p.LogTail(20))
		return ""
	}
	if got := serverName(caps); got != svc {
		t.Errorf("with the chart's capabilities the nobody-owned server is %q, want %q", got, svc)
	}
	for _, drop := range []string{"SYS_PTRACE", "DAC_READ_SEARCH"} {
		if got := serverName(without(caps, drop)); got == svc {
			t.Errorf("without CAP_%s the agent still read another user's environment (%q): the capability is not needed", drop, got)
		} else {
			t.Logf("without CAP_%s the nobody-owned server is named %q, not by its OTEL_SERVICE_NAME", drop, got)
		}
	}
}

// runClientNamed makes one tcpload exchange to addr.
func runClientNamed(t *testing.T, tcpload, addr string) {
	t.Helper()
	cmd := exec.Command(tcpload, "-client", "-addr", addr, "-n", "1", "-send", "100", "-recv", "100")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=capclient")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tcpload client: %v\n%s", err, out)
	}
}

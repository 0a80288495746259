package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/otelbee/otelbee/e2e/harness"
)

// tlsGoToolchains are the Go releases the HTTPS test builds its server and
// client with: the local one, and one from the module proxy (the newest
// release supported upstream before it; cached in the module cache).
var tlsGoToolchains = []string{"local", "go1.25.9"}

// buildHTTPLoadWith builds e2e/cmd/httpload (standard library only) in a
// module of its own with a toolchain, with or without -ldflags=-s -w.
func buildHTTPLoadWith(t *testing.T, toolchain string, stripped bool) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(filepath.Join(root, "e2e", "cmd", "httpload", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "main.go"), code, 0o644)
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module httpload\n\ngo 1.25\n"), 0o644)
	name := "httpload-" + strings.TrimPrefix(toolchain, "go")
	args := []string{"build", "-o"}
	if stripped {
		name += "-stripped"
		args = append(args, filepath.Join(src, name), "-ldflags=-s -w", ".")
	} else {
		args = append(args, filepath.Join(src, name), ".")
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+toolchain, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building httpload with %s: %v\n%s", toolchain, err, out)
	}
	os.Chmod(src, 0o755)
	return filepath.Join(src, name)
}

// uprobeLinksOn counts the uprobe links the process agentPID holds on the
// file at path (attached through /proc/<pid>/root<path> or path itself),
// from the kernel: its link descriptors (fdinfo's link_id), whatever other
// agents on the host attach to the same file.
func uprobeLinksOn(t *testing.T, agentPID int, path string) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", agentPID)
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("reading the agent's descriptors: %v", err)
	}
	n := 0
	for _, fd := range fds {
		b, err := os.ReadFile(filepath.Join(dir, fd.Name()))
		if err != nil {
			continue
		}
		_, rest, ok := strings.Cut(string(b), "link_id:\t")
		if !ok {
			continue
		}
		id, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]))
		if err != nil {
			continue
		}
		l, err := link.NewFromID(link.ID(id))
		if err != nil {
			continue
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			continue
		}
		// A perf-event uprobe, or a uprobe_multi link where the kernel has
		// them; the path given at attach: through /proc/<pid>/root.
		var file string
		if pe := info.PerfEvent(); info.Type == link.PerfEventType && pe != nil {
			if u := pe.Uprobe(); u != nil {
				file = u.File
			}
		} else if um := info.UprobeMulti(); info.Type == link.UprobeMultiType && um != nil {
			file = um.File
		}
		if file != "" && (file == path || strings.HasSuffix(file, "/root"+path)) {
			n++
		}
	}
	return n
}

// TestTLSGoPrograms: a Go HTTPS server and client built with two Go
// toolchains, each with and without -ldflags=-s -w, started after the agent
// (found at exec; the client runs while its file, the server's, is
// instrumented). Both sides of each are exact, with url.scheme=https; when
// the programs exit the kernel has no uprobe left on their files.
func TestTLSGoPrograms(t *testing.T) {
	harness.RequireRoot(t)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	svc := func(s string) string { return "tls-" + s + "-" + sfx }
	cert, key := tlsCert(t)
	type goBuild struct {
		name, bin string
	}
	var builds []goBuild
	for _, tc := range tlsGoToolchains {
		for _, stripped := range []bool{false, true} {
			bin := buildHTTPLoadWith(t, tc, stripped)
			builds = append(builds, goBuild{strings.ReplaceAll(filepath.Base(bin), ".", "_"), bin})
		}
	}
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000"}, "--collectors=http", "--http.client-url-scheme")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)

	plan := "GET /users/1*5,GET /users/abc12345*2,POST /users/9*3,GET /fail*2,GET /chunked*2,GET /zzz"
	goServers, goClients := map[string]httpReport{}, map[string]httpReport{}
	for _, b := range builds {
		addrFile := filepath.Join(t.TempDir(), "addr")
		cmd := exec.Command(b.bin, "-listen", "127.0.0.1:0", "-addr-file", addrFile, "-cert", cert, "-key", key)
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+svc(b.name+"-server"))
		var stdout strings.Builder
		cmd.Stdout = &stdout
		p := harness.StartProcess(t, b.name, cmd)
		addr := waitFileContent(t, addrFile)
		// Its exec seen and its file instrumented before the client starts:
		// the client, the same file, is covered from its first call.
		waitUprobes(t, agent, b.bin)
		goClients[b.name] = parseHTTPReport(t, runClient(t, svc(b.name+"-client"), b.bin, "-url", "https://"+addr, "-plan", plan, "-body", "300"))
		p.Cmd.Process.Signal(os.Interrupt)
		if err := p.Wait(10 * time.Second); err != nil {
			t.Fatalf("%s server: %v", b.name, err)
		}
		goServers[b.name] = parseHTTPReport(t, stdout.String())
	}
	for _, b := range builds {
		waitPromCounts(t, prom, "http_server_request_duration_seconds", fmt.Sprintf(`job=%q,url_scheme="https"`, svc(b.name+"-server")), serverLabels, goServers[b.name].Counts)
		waitPromCounts(t, prom, "http_client_request_duration_seconds", fmt.Sprintf(`job=%q,url_scheme="https"`, svc(b.name+"-client")), clientLabels, goClients[b.name].Counts)
	}
	// Their probes went with their exits (the resolver's sweep finds an
	// exit within its interval, at most 10 s).
	deadline := time.Now().Add(30 * time.Second)
	for _, b := range builds {
		for uprobeLinksOn(t, agent.Pid(), b.bin) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s exited, and the kernel still has %d uprobes on its file", b.name, uprobeLinksOn(t, agent.Pid(), b.bin))
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if exited, _ := agent.Exited(); exited {
		t.Fatalf("agent exited:\n%s", agent.LogTail(40))
	}
}

// waitFileContent waits until a program wrote a file and returns it.
func waitFileContent(t *testing.T, path string) string {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("%s not written", path)
	return ""
}

// TestTLSRunningBeforeAgent (issue 11, test 6): a Go HTTPS server running
// before the agent starts is found by the agent's start-up scan; its
// requests from then on are exact on the server side (and on the client
// side, a process of the same file started later); when the server exits
// the kernel has no uprobe left on its file. The agent's log line for the
// file carries one component attribute.
func TestTLSRunningBeforeAgent(t *testing.T) {
	harness.RequireRoot(t)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	cert, key := tlsCert(t)
	bin := buildHTTPLoadWith(t, "local", true)
	addrFile := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-addr-file", addrFile, "-cert", cert, "-key", key)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=tls-before-server-"+sfx)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	server := harness.StartProcess(t, "server", cmd)
	addr := waitFileContent(t, addrFile)

	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000"}, "--collectors=http", "--http.client-url-scheme")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	// Found by the start-up scan, not by an exec event: the server's exec
	// was before the agent.
	waitUprobes(t, agent, bin)
	plan := "GET /users/1*4,GET /users/abc12345*2,POST /users/9*3,GET /fail*2,GET /zzz"
	client := parseHTTPReport(t, runClient(t, "tls-before-client-"+sfx, bin, "-url", "https://"+addr, "-plan", plan, "-body", "300"))
	server.Cmd.Process.Signal(os.Interrupt)
	if err := server.Wait(10 * time.Second); err != nil {
		t.Fatalf("server: %v", err)
	}
	srv := parseHTTPReport(t, stdout.String())
	waitPromCounts(t, prom, "http_server_request_duration_seconds", fmt.Sprintf(`job="tls-before-server-%s",url_scheme="https"`, sfx), serverLabels, srv.Counts)
	waitPromCounts(t, prom, "http_client_request_duration_seconds", fmt.Sprintf(`job="tls-before-client-%s",url_scheme="https"`, sfx), clientLabels, client.Counts)
	// Both processes of the file exited: its probes go (the resolver's
	// sweep finds an exit within its interval, at most 10 s).
	for deadline := time.Now().Add(30 * time.Second); uprobeLinksOn(t, agent.Pid(), bin) != 0; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server exited, and the kernel still has %d uprobes on its file", uprobeLinksOn(t, agent.Pid(), bin))
		}
	}
	// The line was written before the links existed (waited for above).
	var line string
	for _, l := range strings.Split(agent.Log(), "\n") {
		if strings.Contains(l, `msg="TLS plaintext instrumented"`) && strings.Contains(l, filepath.Base(bin)) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no log line for the instrumented server:\n%s", agent.LogTail(40))
	}
	if n := strings.Count(line, " component="); n != 1 {
		t.Errorf("%d component attributes in %q, want 1", n, line)
	}
	if exited, _ := agent.Exited(); exited {
		t.Fatalf("agent exited:\n%s", agent.LogTail(40))
	}
}

package tls

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// certificate makes a self-signed key and certificate with openssl req.
func certificate(t *testing.T) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return cert, key
}

// start runs a program until the test ends, with a stdin kept open (s_server
// and gnutls-cli quit at its end), and returns the first output line that
// contains ready.
func start(t *testing.T, ready string, name string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	stdin, keep, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = stdin
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); keep.Close() })
	lines := make(chan string, 16)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s exited before printing %q", name, ready)
			}
			if strings.Contains(l, ready) {
				go func() {
					for range lines {
					}
				}()
				return cmd, l
			}
		case <-deadline:
			t.Fatalf("%s: no %q within 20s", name, ready)
		}
	}
}

func TestProcesses(t *testing.T) {
	cert, key := certificate(t)
	sserver, _ := start(t, "ACCEPT", "openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key)
	// A copy of node is a file of its own: its target must be one of its own.
	node := filepath.Join(t.TempDir(), "node")
	if out, err := exec.Command("cp", "/usr/bin/node", node).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	js := fmt.Sprintf(`require("https").createServer({cert: require("fs").readFileSync(%q), key: require("fs").readFileSync(%q)},
		(q, s) => s.end("ok")).listen(0, "127.0.0.1", function() { console.log("listening " + this.address().port) })`, cert, key)
	node1, listening := start(t, "listening", node, "-e", js)
	node2, _ := start(t, "listening", node, "-e", js)
	nodes := []*exec.Cmd{node1, node2}
	goBin := buildGo(t, "goserver", goToolchains[0]).stripped
	goSrv, _ := start(t, "", goBin)

	c := NewCache(64)
	d, err := NewDiscoverer("/proc", c)
	if err != nil {
		t.Fatal(err)
	}
	targets := func(pid int) []*Target {
		p, err := d.Process(pid)
		if err != nil {
			t.Fatal(err)
		}
		return p.Targets
	}

	ts := targets(sserver.Process.Pid)
	if len(ts) != 1 || ts[0].Path != libssl3 || !ts[0].Instrumentable() {
		t.Fatalf("openssl s_server: targets %+v", ts)
	}
	var nodeTarget *Target
	for i, cmd := range nodes {
		ts := targets(cmd.Process.Pid)
		if len(ts) != 1 || ts[0].Path != node || !ts[0].Instrumentable() || !ts[0].Static {
			t.Fatalf("node %d: targets %+v", i, ts)
		}
		if i == 1 && ts[0] != nodeTarget {
			t.Error("two processes of one executable gave two targets")
		}
		nodeTarget = ts[0]
	}
	if c.Reads != 3 { // openssl, libssl, the node copy: the second node was a cache hit
		t.Errorf("%d files read, want 3", c.Reads)
	}
	ts = targets(goSrv.Process.Pid)
	if len(ts) != 1 || ts[0].Stack != StackGo || !ts[0].Instrumentable() || ts[0].FD.Source != "table" {
		t.Fatalf("go server: targets %+v", ts)
	}

	// A GnuTLS client connected to the node server: its library is found
	// and named unsupported.
	lib := gnutlsLib(t)
	gnutls, _ := start(t, "Handshake was completed", "gnutls-cli", "--insecure", "-p",
		strings.TrimPrefix(listening, "listening "), "127.0.0.1")
	ts = targets(gnutls.Process.Pid)
	if len(ts) != 1 || ts[0].Path != lib || ts[0].Stack != StackGnuTLS || ts[0].Reason != ReasonUnsupportedStack {
		t.Fatalf("gnutls-cli: targets %+v (want %s)", *ts[0], lib)
	}

	var buf bytes.Buffer
	if err := WriteReport(&buf, "/proc"); err != nil {
		t.Fatal(err)
	}
	report := buf.String()
	for _, want := range []string{
		node + ": openssl 3.0.19 (built into the executable): instrumentable: SSL_read SSL_write",
		fmt.Sprintf("%d(node) %d(node)", nodes[0].Process.Pid, nodes[1].Process.Pid),
		goBin + ": go go1.26.8: instrumentable: crypto/tls.(*Conn).Read[",
		lib + ": gnutls: not instrumentable: unsupported_stack",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	// The system's GnuTLS is shared with whatever else runs on the host
	// (PostgreSQL from other packages' tests in CI): its process list is
	// cut at reportPIDs, so gnutls-cli is either listed or behind "+N more".
	_, after, _ := strings.Cut(report, lib+": gnutls")
	_, rest, _ := strings.Cut(after, "\n")
	procLine, _, _ := strings.Cut(rest, "\n")
	if !strings.Contains(procLine, fmt.Sprintf("%d(gnutls-cli)", gnutls.Process.Pid)) && !strings.Contains(procLine, " more") {
		t.Errorf("gnutls processes line %q lacks gnutls-cli (pid %d)", procLine, gnutls.Process.Pid)
	}
}

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// Waits on what the agent has done, instead of fixed sleeps: a test's
// ground truth must not depend on how fast a loaded machine schedules the
// agent (CI runs the e2e package next to other packages' tests).

// uprobeWait is how long a test waits for the agent to instrument a file
// after a process mapping it started: the attacher scans a new process at
// its exec and again 100 ms, 1 s and 5 s later (collectors/tls), and a
// loaded machine delays each scan.
const uprobeWait = 30 * time.Second

// waitUprobes waits until agent holds its whole uprobe set on the file at
// path: from then on every process mapping that file has its TLS read (one
// uprobe set per file), from its first call. The attacher makes the set's
// links one at a time (a Go executable's Read and then its Write; ~100 ms
// apart on a loaded machine) and logs the file, with the set's size, once
// all are there: a test that went on at the first link had its client's
// or server's first writes (HTTP/2's first header blocks, HPACK's table)
// unseen now and then, its calls undecodable.
func waitUprobes(t *testing.T, agent *harness.Agent, path string) {
	t.Helper()
	partial := time.Time{}
	for deadline := time.Now().Add(uprobeWait); ; time.Sleep(20 * time.Millisecond) {
		n := uprobeLinksOn(t, agent.Pid(), path)
		if want := instrumentedProbes(agent.Log(), path); n > 0 && want > 0 && n >= want {
			if !partial.IsZero() {
				t.Logf("%s: %d of its uprobes were on %v before the rest", path, n, time.Since(partial).Round(time.Millisecond))
			}
			return
		}
		if n > 0 && partial.IsZero() {
			partial = time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not instrumented by the agent (pid %d) within %v: %d uprobe links", path, agent.Pid(), uprobeWait, n)
		}
	}
}

// instrumentedRE is the attacher's line for a file whose uprobe set is on.
var instrumentedRE = regexp.MustCompile(`msg="TLS plaintext instrumented" .*?\bpath=(\S+) .*?\bprobes=(\d+)`)

// instrumentedProbes is the size of the uprobe set the agent's log last
// said it put on the file at path (0: none yet).
func instrumentedProbes(log, path string) int {
	want := 0
	for _, m := range instrumentedRE.FindAllStringSubmatch(log, -1) {
		if m[1] == path {
			want, _ = strconv.Atoi(m[2])
		}
	}
	return want
}

// waitLibUprobes waits until agent instruments the shared library whose
// file name contains lib (e.g. "libssl.so") as process pid maps it.
func waitLibUprobes(t *testing.T, agent *harness.Agent, pid int, lib string) {
	t.Helper()
	waitUprobes(t, agent, mappedFile(t, pid, lib))
}

// mappedFile returns the path of the first file process pid maps whose
// name contains lib, waiting for the dynamic linker to map it.
func mappedFile(t *testing.T, pid int, lib string) string {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
		if err != nil {
			t.Fatalf("maps of process %d: %v", pid, err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// address perms offset dev inode path
			fields := strings.Fields(sc.Text())
			if len(fields) == 6 && strings.Contains(fields[5][strings.LastIndexByte(fields[5], '/')+1:], lib) {
				f.Close()
				return fields[5]
			}
		}
		f.Close()
		if time.Now().After(deadline) {
			t.Fatalf("process %d maps no %s", pid, lib)
		}
	}
}

// pidFromFile reads a server's pid file (its first line), waiting for the
// server to write it.
func pidFromFile(t *testing.T, path string) int {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err == nil {
			line, _, _ := strings.Cut(string(b), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil && pid > 0 {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid file %s: %q %v", path, b, err)
		}
	}
}

// waitSystemOpenSSL makes sure agent instruments the system's libssl before
// a short-lived client (curl) uses it: such a client is usually done before
// the attacher's rescan after its exec, and its TLS is read only when the
// file is instrumented already, as on a host where long-running programs
// map it. Here a Python process that imports ssl holds it mapped.
func waitSystemOpenSSL(t *testing.T, agent *harness.Agent) {
	t.Helper()
	p := harness.StartProcess(t, "libssl-holder", exec.Command(pythonBin(t), "-c", "import ssl, time; time.sleep(3600)"))
	waitLibUprobes(t, agent, p.Pid(), "libssl.so")
}

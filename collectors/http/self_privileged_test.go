package httpc

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/collectors/hook"
)

// TestPrivilegedSelfTrafficLeftOut: the collector runs as it does in the
// agent (its own process left out). Its process's requests to a Python
// server are recorded on neither side (the server side is matched against
// the client end the kernel remembered), and counted: one connection ignored
// as "self" at the client's connect and one at the server's first read. A
// curl to the same server is recorded exactly.
func TestPrivilegedSelfTrafficLeftOut(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("skipping: python3 not installed")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	saved := selfExecutable
	selfExecutable = "" // only this process: other agents on the host would move the counter
	t.Cleanup(func() { selfExecutable = saved })
	c, env := collectortest.Start(t, Name, func(d collectors.Deps) collectors.Collector {
		return New(d, DefaultConfig())
	}, collectortest.Options{})
	h := &harness{c: c.(*Collector), reader: env.Reader}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	srv := exec.Command(py, "-u", "-m", "http.server", "--bind", "127.0.0.1", fmt.Sprint(port))
	srv.Dir = t.TempDir()
	os.WriteFile(srv.Dir+"/index.html", []byte("hello\n"), 0o644)
	out, _ := srv.StderrPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	logged := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "GET /") {
				logged <- sc.Text()
			}
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close() // no request: classified by nothing, counted by nothing
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("python server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	selfBefore := hook.SumCounters(h.c.counters, int(httpHttpCounterHC_MAX))[httpHttpCounterHC_CONNS_SELF]

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	const self, others = 4, 3
	for range self {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range others {
		if out, err := exec.Command("curl", "-sf", "-o", "/dev/null", url).CombinedOutput(); err != nil {
			t.Fatalf("curl: %v %s", err, out)
		}
	}
	for range self + others {
		select {
		case <-logged:
		case <-time.After(10 * time.Second):
			t.Fatal("the server did not log every request")
		}
	}
	// The server's own log says 7 requests; the agent sees curl's 3.
	want := fmt.Sprint(srv.Process.Pid)
	deadline = time.Now().Add(10 * time.Second)
	var got map[string]uint64
	for time.Now().Before(deadline) {
		got = h.countsOf(t, want)
		if fmt.Sprint(got) == fmt.Sprint(map[string]uint64{"server GET 200 /index.html": others}) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fmt.Sprint(got) != fmt.Sprint(map[string]uint64{"server GET 200 /index.html": others}) {
		t.Fatalf("python server's requests recorded: %v, want curl's %d only", got, others)
	}
	if mine := h.countsOf(t, fmt.Sprint(os.Getpid())); len(mine) != 0 {
		t.Errorf("the agent's own process shows up: %v", mine)
	}
	selfAfter := hook.SumCounters(h.c.counters, int(httpHttpCounterHC_MAX))[httpHttpCounterHC_CONNS_SELF]
	if n := selfAfter - selfBefore; n != 2*self {
		t.Errorf("connections ignored as self: %d, want %d (both ends of %d connections)", n, 2*self, self)
	}
}

// countsOf is counts for the process pid.
func (h *harness) countsOf(t *testing.T, pid string) map[string]uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			side := map[string]string{"http.server.request.duration": "server", "http.client.request.duration": "client"}[m.Name]
			if side == "" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				if v, _ := dp.Attributes.Value("process.pid"); v.Emit() != pid {
					continue
				}
				get := func(k string) string { v, _ := dp.Attributes.Value(attribute.Key(k)); return v.Emit() }
				key := side + " " + get("http.request.method") + " " + get("http.response.status_code")
				if side == "server" {
					// No --http.routes here: the heuristic's template is
					// url.template, and http.route must not be set.
					if r := get("http.route"); r != "" {
						key += " http.route=" + r
					} else {
						key += " " + get("url.template")
					}
				}
				out[key] += dp.Count
			}
		}
	}
	return out
}

// keepAliveServer is a Python HTTP/1.1 server that answers every request of
// a connection "200 ok". A connection accepted before the file <argv[2]>
// exists is read only once it does: the test has its clients write their
// first request, then starts the collector (which picks the connections up
// from /proc), then lets the server read. It appends a line per accepted
// connection to <argv[1]>.accepted and one per request to <argv[1]>.log.
const keepAliveServer = `
import os, socket, sys, threading, time
base, gate = sys.argv[1], sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
lock = threading.Lock()
def note(f, line):
    with lock, open(base + f, "a") as out:
        out.write(line + "\n")
def serve(c):
    while not os.path.exists(gate):
        time.sleep(0.01)
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                c.close()
                return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        note(".log", head.split(b"\r\n")[0].decode())
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
open(base + ".port.tmp", "w").write(str(s.getsockname()[1]))
os.rename(base + ".port.tmp", base + ".port")
while True:
    c, _ = s.accept()
    note(".accepted", "x")
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`

// agentClient is a Python client run under an agent's executable name: it
// writes its first request at once, reads the answer, writes a second and
// reads it, then waits for its stdin to close.
const agentClient = `
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(2):
    c.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    got = b""
    while not got.endswith(b"ok\n"):
        d = c.recv(4096)
        if not d:
            sys.exit("closed")
        got += d
print("done", flush=True)
sys.stdin.read()
`

// TestPrivilegedSelfExistingServerReadsFirst: connections of agents open
// before the collector starts, on which the server reads a request the
// agent wrote before the start (so the server's first call since the
// pick-up comes before the agent's). One client is the collector's own
// process, one another agent (a process under an agent's executable name).
// The server side of neither is recorded, on the request written before
// the start nor on the next, while curl's requests to the same server are,
// exactly; both ends of both connections are counted as ignored ("self").
// Before the fix the kernel learned the agent's end at its first call, after
// the server had parsed the connection (the Collector's side of an agent's
// export, TestHTTPAgentsOwnExportLeftOut).
func TestPrivilegedSelfExistingServerReadsFirst(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("skipping: python3 not installed")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	dir := t.TempDir()
	// An agent's executable name of this test's own: agents on the host
	// (named otelbee) are not this test's.
	agentName := fmt.Sprintf("otbself%d", os.Getpid()%100000)
	// The interpreter itself, not a launcher that picks it by its name.
	real, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(strings.TrimSpace(string(real)), filepath.Join(dir, agentName)); err != nil {
		t.Fatal(err)
	}
	saved := selfExecutable
	selfExecutable = agentName
	t.Cleanup(func() { selfExecutable = saved })

	base, gate := filepath.Join(dir, "srv"), filepath.Join(dir, "gate")
	srv := exec.Command(py, "-c", keepAliveServer, base, gate)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	var port []byte
	for deadline := time.Now().Add(10 * time.Second); len(port) == 0; time.Sleep(20 * time.Millisecond) {
		if port, _ = os.ReadFile(base + ".port"); time.Now().After(deadline) {
			t.Fatal("python server did not start")
		}
	}
	addr := "127.0.0.1:" + string(port)
	lines := func(f string) int {
		b, _ := os.ReadFile(base + f)
		return strings.Count(string(b), "\n")
	}
	req := []byte("GET /x HTTP/1.1\r\nHost: t\r\n\r\n")

	// The collector's own process: its request is written before the start.
	own, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if _, err := own.Write(req); err != nil {
		t.Fatal(err)
	}
	// Another agent: its first request is written at once.
	other := exec.Command(filepath.Join(dir, agentName), "-c", agentClient, string(port))
	stdin, err := other.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := other.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); other.Process.Kill(); other.Wait() })
	for deadline := time.Now().Add(10 * time.Second); lines(".accepted") < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server did not accept both connections")
		}
	}

	c, env := collectortest.Start(t, Name, func(d collectors.Deps) collectors.Collector {
		return New(d, DefaultConfig())
	}, collectortest.Options{})
	h := &harness{c: c.(*Collector), reader: env.Reader}
	selfBefore := hook.SumCounters(h.c.counters, int(httpHttpCounterHC_MAX))[httpHttpCounterHC_CONNS_SELF] + h.c.eng.SelfPickedUp()

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	readAnswer := func() {
		t.Helper()
		own.SetReadDeadline(time.Now().Add(10 * time.Second))
		var got []byte
		buf := make([]byte, 4096)
		for !strings.HasSuffix(string(got), "ok\n") {
			n, err := own.Read(buf)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			got = append(got, buf[:n]...)
		}
	}
	readAnswer()
	if _, err := own.Write(req); err != nil {
		t.Fatal(err)
	}
	readAnswer()
	done := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := io.ReadAtLeast(stdout, b, 4)
		done <- string(b[:n])
	}()
	select {
	case s := <-done:
		if !strings.HasPrefix(s, "done") {
			t.Fatalf("the other agent's client: %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other agent's client did not finish")
	}
	const curls = 3
	for range curls {
		if out, err := exec.Command("curl", "-sf", "-o", "/dev/null", "http://"+addr+"/x").CombinedOutput(); err != nil {
			t.Fatalf("curl: %v %s", err, out)
		}
	}
	if n := lines(".log"); n != 4+curls {
		t.Fatalf("the server logged %d requests, want %d", n, 4+curls)
	}

	want := map[string]uint64{"server GET 200 /x": curls}
	var got map[string]uint64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = h.countsOf(t, fmt.Sprint(srv.Process.Pid)); fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // nothing more may come
	if got = h.countsOf(t, fmt.Sprint(srv.Process.Pid)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the server's requests recorded: %v, want curl's only %v", got, want)
	}
	for _, pid := range []int{os.Getpid(), other.Process.Pid} {
		if mine := h.countsOf(t, fmt.Sprint(pid)); len(mine) != 0 {
			t.Errorf("agent %d's client side recorded: %v", pid, mine)
		}
	}
	// Both ends of both connections: the clients' at the pick-up, the
	// server's at its first read. At least: this test binary's name is an
	// agent's too (SelfComms), and the same tests running on the host
	// meanwhile are counted as well.
	selfAfter := hook.SumCounters(h.c.counters, int(httpHttpCounterHC_MAX))[httpHttpCounterHC_CONNS_SELF] + h.c.eng.SelfPickedUp()
	if n := selfAfter; n < 4 {
		t.Errorf("connections ignored as self: %d in all, want at least the 4 ends (%d before the gate)", n, selfBefore)
	}
}

package httpc

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
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

package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestKVMemcached: pymemcache (Debian python3-pymemcache) against
// memcached -vv with the agent running: the client's commands per name,
// and its noreply ones apart, equal what memcached logged it received;
// multi-key gets, a refused add and a 500 KB value included.
func TestKVMemcached(t *testing.T) {
	harness.RequireRoot(t)
	py := "/usr/bin/python3"
	if _, err := exec.LookPath("memcached"); err != nil {
		t.Skip("skipping: memcached not installed")
	}
	if exec.Command(py, "-c", "import pymemcache").Run() != nil {
		t.Skip("skipping: python3-pymemcache not installed")
	}
	agent := harness.StartAgent(t, nil, "--collectors=memcached")
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	port := harness.FreePort(t)
	srv := harness.StartProcess(t, "memcached-"+sfx, exec.Command("memcached", "-vv", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-u", "nobody", "-m", "64"))
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(end) {
			t.Fatal("memcached did not listen")
		}
	}
	client := "pymc-" + sfx
	runClient(t, client, py, "-c", fmt.Sprintf(`
from pymemcache.client.base import Client
c = Client(("127.0.0.1", %d), default_noreply=False)
nr = Client(("127.0.0.1", %d), default_noreply=True)
for i in range(40):
    c.set("a%%d" %% i, "x" * i)
for i in range(25):
    nr.set("b%%d" %% i, "y")
nr.delete("a39")
nr.version()
for i in range(15):
    assert len(c.get_many(["a1", "b1", "b2", "missing%%d" %% i])) == 3
assert c.add("a1", "q") is False
c.incr("n", 1); c.set("n", "1"); c.incr("n", 5); c.touch("a2", 10); c.delete("nothere")
big = "B" * 500000
c.set("big", big)
assert c.get("big").decode() == big
c.close(); nr.close()
`, port, port))
	want, noreply := map[string]uint64{}, map[string]uint64{}
	line := regexp.MustCompile(`^<\d+ (\S+)(.*)$`)
	wait := func() bool {
		want, noreply = map[string]uint64{}, map[string]uint64{}
		for _, l := range strings.Split(srv.Log(), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil || m[1] == "new" || m[1] == "connection" || m[1] == "server" {
				continue
			}
			if strings.HasSuffix(m[2], " noreply") {
				noreply[m[1]]++
			} else {
				want[m[1]]++
			}
		}
		return want["get"] == 16 && noreply["set"] == 25
	}
	// memcached -vv logs each command as it handles it: all of them by now
	// but on a loaded machine, where its log can trail the client's end.
	for end := time.Now().Add(30 * time.Second); !wait() && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
	}
	if want["get"] != 16 || noreply["set"] != 25 {
		t.Fatalf("memcached -vv logged %v, noreply %v", want, noreply)
	}
	noreplyOps := func(mfs map[string]*dto.MetricFamily) map[string]uint64 {
		n := map[string]uint64{}
		if mf := mfs["otelbee_memcached_noreply_operations_total"]; mf != nil {
			for _, m := range mf.GetMetric() {
				if rpMatch(m, svc(client)) {
					for _, l := range m.GetLabel() {
						if l.GetName() == "db_operation_name" {
							n[l.GetValue()] += uint64(m.GetCounter().GetValue())
						}
					}
				}
			}
		}
		return n
	}
	// Both the operations and the noreply counter: a counter can reach
	// the exposition a scrape apart from the histogram.
	mfs := kvWait(t, agent, func(mfs map[string]*dto.MetricFamily) bool {
		return sum(memcachedOps(mfs, client)) >= sum(want) && sum(noreplyOps(mfs)) >= sum(noreply)
	})
	got, gotNR := memcachedOps(mfs, client), noreplyOps(mfs)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("commands: agent %v\nmemcached -vv %v", got, want)
	}
	if fmt.Sprint(gotNR) != fmt.Sprint(noreply) {
		t.Errorf("noreply commands: agent %v\nmemcached -vv %v", gotNR, noreply)
	}
	if n, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(client, "db_operation_name", "add", "db_response_status_code", "NOT_STORED")); n != 1 {
		t.Errorf("add NOT_STORED: %d, want 1", n)
	}
	kvNoDrops(t, mfs, client)
}

func memcachedOps(mfs map[string]*dto.MetricFamily, service string) map[string]uint64 {
	n := map[string]uint64{}
	if mf := mfs["db_client_operation_duration_seconds"]; mf != nil {
		for _, m := range mf.GetMetric() {
			if !rpMatch(m, svc(service, "db_system_name", "memcached")) {
				continue
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "db_operation_name" {
					n[l.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return n
}

package httpc

import (
	"os"
	"os/exec"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TestSelfCountersPerServiceOnlyWhenNonZero: the drop counters of two
// processes of one service are one series per reason, with the service's
// name and no process attribute; a service that lost nothing has none;
// a process forgotten after it exited leaves its counts in its service's.
func TestSelfCountersPerServiceOnlyWhenNonZero(t *testing.T) {
	c, reader := unitCollector(t, sdktrace.NeverSample())
	if err := c.selfInstruments(); err != nil {
		t.Fatal(err)
	}
	start := func(service string) *exec.Cmd {
		cmd := exec.Command("sleep", "60")
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	a1, a2, b := start("svc-a"), start("svc-a"), start("svc-b")
	time.Sleep(50 * time.Millisecond) // exec'd: /proc shows the environment
	pa1 := c.statsFor(uint32(a1.Process.Pid))
	pa2 := c.statsFor(uint32(a2.Process.Pid))
	c.statsFor(uint32(b.Process.Pid))
	pa1.Incomplete.Add(1)
	pa2.Incomplete.Add(2)
	pa2.Lost.Add(4)

	check := func(when string) {
		t.Helper()
		pts := selfPoints(t, c, reader)
		want := map[string]int64{
			"otelbee.http.requests.incomplete svc-a ":          3,
			"otelbee.http.requests.dropped svc-a records_lost": 4,
		}
		if len(pts) != len(want) {
			t.Fatalf("%s: self points %v, want %v", when, pts, want)
		}
		for k, v := range want {
			if pts[k] != v {
				t.Fatalf("%s: self points %v, want %v", when, pts, want)
			}
		}
	}
	check("running")
	a2.Process.Kill()
	a2.Wait()
	b.Process.Kill()
	b.Wait()
	dead := func(tgid uint32) bool { return tgid == uint32(a2.Process.Pid) || tgid == uint32(b.Process.Pid) }
	now := time.Now()
	c.retireProcs(dead, now)
	c.retireProcs(dead, now.Add(retainDead))
	if len(c.procs) != 1 || len(c.svcs) != 1 {
		t.Fatalf("%d processes and %d services kept, want 1 and 1", len(c.procs), len(c.svcs))
	}
	check("after a process of svc-a was forgotten")
}

// selfPoints are the otelbee.http.* points by "name service reason".
func selfPoints(tb testing.TB, c *Collector, reader any) map[string]int64 {
	tb.Helper()
	out := map[string]int64{}
	rm := collect(tb, reader)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := sumInt64(m.Data)
			if !ok {
				continue
			}
			for _, p := range sum.DataPoints {
				svc, _ := p.Attributes.Value("service.name")
				reason, _ := p.Attributes.Value("reason")
				if _, ok := p.Attributes.Value("process.pid"); ok {
					tb.Errorf("%s carries process.pid", m.Name)
				}
				if _, ok := p.Attributes.Value("service.instance.id"); ok {
					tb.Errorf("%s carries service.instance.id", m.Name)
				}
				if svc.AsString() == "" {
					continue // the agent's own
				}
				out[m.Name+" "+svc.AsString()+" "+reason.AsString()] += p.Value
			}
		}
	}
	return out
}

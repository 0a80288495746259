package tcp

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
)

// A real process opens a connection and exits; the agent learns of every exit
// on the host, here also of 20,000 pids that never had a TCP series (the
// burst a CI job or a cron run makes). The exited process's series are
// reported once more and then deleted from the kernel and the agent; the
// other exits are forgotten without kernel work.
func TestPrivilegedRetireExitedProcess(t *testing.T) {
	if addr := os.Getenv(retireChildEnv); addr != "" {
		// The child: a process of its own that connects, sends 5 bytes,
		// reads 7 and exits.
		exchange(t, "tcp4", addr, 5, 7)
		os.Exit(0)
	}
	c, reader := startCollector(t)
	ln := echoServer(t, "tcp4", "127.0.0.1:0", 5, 7)
	cmd := exec.Command(os.Args[0], "-test.run=^TestPrivilegedRetireExitedProcess$")
	cmd.Env = append(os.Environ(), retireChildEnv+"="+ln.Addr().String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("running the client: %v: %s", err, out)
	}
	pid := uint32(cmd.Process.Pid)
	childKeys := func() []tcpConnKey {
		var ks []tcpConnKey
		for k := range c.snapshot(t) {
			if k.Tgid == pid {
				ks = append(ks, k)
			}
		}
		return ks
	}
	waitFor(t, c, func(m map[tcpConnKey]tcpConnCounters) error {
		for k, v := range m {
			if k.Tgid == pid && v.Opened == 1 && v.Closed == 1 && v.BytesSent == 5 && v.BytesReceived == 7 {
				return nil
			}
		}
		return fmt.Errorf("no closed series for pid %d yet", pid)
	})

	const burst = 20000
	c.mu.Lock()
	gone := time.Now().Add(-c.cfg.RetireAfter - time.Second)
	c.retired[pid] = gone
	for i := uint32(0); i < burst; i++ {
		// pids above the kernel's pid_max: no process has them.
		c.retired[1<<30+i] = gone
	}
	c.mu.Unlock()

	var rm metricdata.ResourceMetrics
	start := time.Now()
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// The last collection still reports the exited process's bytes.
	if !strings.Contains(fmt.Sprint(rm), fmt.Sprint(pid)) {
		t.Errorf("the collection after the exit does not report pid %d", pid)
	}
	if ks := childKeys(); len(ks) != 0 {
		t.Errorf("series of exited pid %d still in the kernel: %v", pid, ks)
	}
	c.mu.Lock()
	left := len(c.retired)
	for k := range c.series {
		if k.Tgid == pid {
			t.Errorf("agent still holds series %v of exited pid %d", k, pid)
		}
	}
	c.mu.Unlock()
	if left != 0 {
		t.Errorf("%d exits still pending after their retention", left)
	}
	t.Logf("collection with %d exits due took %s", burst+1, took)
}

const retireChildEnv = "OTELBEE_TEST_RETIRE_CHILD"

const foldChildEnv = "OTELBEE_TEST_FOLD_CHILD"

// 30 short-lived processes of one service (a client run by cron or a
// loop), each with one connection of 5 bytes out and 7 in, are one
// instance: one series per direction, not 30; and when their kernel
// series are retired one by one, the instance's series keeps every byte
// and connection exactly, before and after.
func TestPrivilegedFoldedInstanceExact(t *testing.T) {
	if addr := os.Getenv(foldChildEnv); addr != "" {
		exchange(t, "tcp4", addr, 5, 7)
		os.Exit(0)
	}
	const children = 30
	cc, env := collectortest.Start(t, Name, func(d collectors.Deps) collectors.Collector {
		return New(d, DefaultConfig())
	}, collectortest.Options{FoldInstances: true})
	c, reader := cc.(*Collector), env.Reader
	ln := echoServer(t, "tcp4", "127.0.0.1:0", 5, 7)
	svc := fmt.Sprintf("fold-tcp-%d", os.Getpid())
	var pids []uint32
	for range children {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPrivilegedFoldedInstanceExact$")
		cmd.Env = append(os.Environ(), foldChildEnv+"="+ln.Addr().String(), "OTEL_SERVICE_NAME="+svc)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// As the exec watcher does at exec.
		c.deps.Processes.RefreshExec(uint32(cmd.Process.Pid), "", []byte("OTEL_SERVICE_NAME="+svc+"\x00"), 0)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("running the client: %v", err)
		}
		pids = append(pids, uint32(cmd.Process.Pid))
	}
	isChild := map[uint32]bool{}
	for _, p := range pids {
		isChild[p] = true
	}
	waitFor(t, c, func(m map[tcpConnKey]tcpConnCounters) error {
		closed := 0
		for k, v := range m {
			if isChild[k.Tgid] {
				closed += int(v.Closed)
			}
		}
		if closed != children {
			return fmt.Errorf("%d of %d connections closed", closed, children)
		}
		return nil
	})
	check := func(when string) {
		t.Helper()
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		series := map[string]int{}
		var durations uint64
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				switch d := m.Data.(type) {
				case metricdata.Sum[int64]:
					for _, p := range d.DataPoints {
						if v, ok := p.Attributes.Value(attribute.Key("service.name")); ok && v.AsString() == svc {
							dir, _ := p.Attributes.Value(attribute.Key("network.io.direction"))
							got[m.Name+"/"+dir.AsString()] += p.Value
							series[m.Name]++
						}
					}
				case metricdata.Histogram[float64]:
					for _, p := range d.DataPoints {
						if v, ok := p.Attributes.Value(attribute.Key("service.name")); ok && v.AsString() == svc && m.Name == "otelbee.tcp.connection.duration" {
							durations += p.Count
							series[m.Name]++
						}
					}
				}
			}
		}
		want := map[string]int64{
			"otelbee.tcp.connection.opened/": children, "otelbee.tcp.connection.closed/": children,
			"otelbee.tcp.connection.io/transmit": 5 * children, "otelbee.tcp.connection.io/receive": 7 * children,
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s: %s = %d, want %d", when, k, got[k], w)
			}
		}
		if durations != children {
			t.Errorf("%s: %d connection durations, want %d", when, durations, children)
		}
		for name, n := range map[string]int{"otelbee.tcp.connection.opened": 1, "otelbee.tcp.connection.io": 2, "otelbee.tcp.connection.duration": 1} {
			if series[name] != n {
				t.Errorf("%s: %s has %d series for %d processes of one service, want %d", when, name, series[name], children, n)
			}
		}
	}
	check("before retirement")
	// Retire half of them, then the rest: the instance keeps what they counted.
	c.mu.Lock()
	gone := time.Now().Add(-c.cfg.RetireAfter - time.Second)
	for _, p := range pids[:children/2] {
		c.retired[p] = gone
	}
	c.mu.Unlock()
	check("half retired")
	c.mu.Lock()
	for _, p := range pids[children/2:] {
		c.retired[p] = gone
	}
	c.mu.Unlock()
	check("all retired")
	for k := range c.snapshot(t) {
		if isChild[k.Tgid] {
			t.Errorf("kernel series %v of an exited child kept", k)
		}
	}
	check("after retirement")
}

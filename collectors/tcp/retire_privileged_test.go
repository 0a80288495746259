package tcp

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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

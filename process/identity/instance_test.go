package identity

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

func attrValue(kvs []attribute.KeyValue, k attribute.Key) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value.Emit(), true
		}
	}
	return "", false
}

// TestOwnerFoldsShortLivedProcesses runs 200 short-lived processes of one
// service, one after the other as a cron job or a shell loop would: they
// are one instance (host:<service>, no process.pid), which outlives each
// of them and ends when the last one is forgotten.
func TestOwnerFoldsShortLivedProcesses(t *testing.T) {
	svc := fmt.Sprintf("fold-%d", os.Getpid())
	r := NewResolver("/proc", "host1")
	r.Retention = time.Second
	owners := map[uint32]int{}
	for range 200 {
		cmd := exec.Command("sleep", "0.001")
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+svc)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := uint32(cmd.Process.Pid)
		// As the exec watcher does, with the environment the kernel
		// captured at exec: the process may be gone already.
		r.RefreshExec(pid, "", []byte("OTEL_SERVICE_NAME="+svc+"\x00"), 0)
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		// Its first series is made after it exited (a scrape later).
		owners[r.Owner(pid)]++
	}
	if len(owners) != 1 {
		t.Fatalf("200 short-lived processes of one service are %d instances, want 1", len(owners))
	}
	var o uint32
	for id := range owners {
		o = id
	}
	if !isSynthetic(o) || !r.Alive(o) {
		t.Fatalf("owner %d: synthetic %v, alive %v; want a live folded instance", o, isSynthetic(o), r.Alive(o))
	}
	attrs := r.Lookup(o).Attributes()
	if v, _ := attrValue(attrs, KeyServiceInstanceID); v != "host1:"+svc {
		t.Errorf("service.instance.id = %q, want %q", v, "host1:"+svc)
	}
	if v, ok := attrValue(attrs, KeyProcessPID); ok {
		t.Errorf("a folded instance carries process.pid=%s", v)
	}
	if v, _ := attrValue(attrs, KeyServiceName); v != svc {
		t.Errorf("service.name = %q, want %q", v, svc)
	}
	// Every process exited: after the retention they are forgotten, and
	// the instance with them.
	r.Sweep()
	time.Sleep(1100 * time.Millisecond)
	r.Sweep()
	if r.Alive(o) {
		t.Errorf("the instance is alive after its processes were forgotten")
	}
	time.Sleep(1100 * time.Millisecond)
	r.Sweep()
	if n := r.Instances(); n != 0 {
		t.Errorf("%d folded instances kept after the retention, want 0", n)
	}
}

// poolServer starts a python3 server that listens and forks n workers, as
// nginx, gunicorn or php-fpm do; it returns the master's and the workers'
// pids.
func poolServer(t *testing.T, svc string, n int) (uint32, []uint32) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	script := fmt.Sprintf(`
import os, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
pids = []
for _ in range(%d):
    pid = os.fork()
    if pid == 0:
        time.sleep(60); os._exit(0)
    pids.append(pid)
print(os.getpid(), *pids, flush=True)
time.sleep(60)
`, n)
	cmd := exec.Command("python3", "-c", script)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+svc)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var pids []uint32
	for _, f := range strings.Fields(line) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, uint32(n))
	}
	t.Cleanup(func() {
		for _, p := range pids[1:] {
			if proc, err := os.FindProcess(int(p)); err == nil {
				_ = proc.Kill()
			}
		}
	})
	return pids[0], pids[1:]
}

// TestOwnerPoolIsItsServer: a listening master and its 4 forked workers are
// one instance, the master's (host:<master pid>); two such servers of one
// service stay two instances.
func TestOwnerPoolIsItsServer(t *testing.T) {
	svc := fmt.Sprintf("pool-%d", os.Getpid())
	masterA, workersA := poolServer(t, svc, 4)
	masterB, workersB := poolServer(t, svc, 4)
	r := NewResolver("/proc", "host1")
	r.RefreshExec(masterA, "", nil, 0)
	r.RefreshExec(masterB, "", nil, 0)
	// Workers are looked up first, as their series usually come first.
	for _, w := range workersA {
		if o := r.Owner(w); o != masterA {
			t.Errorf("worker %d of master %d: owner %d, want the master", w, masterA, o)
		}
	}
	for _, w := range workersB {
		if o := r.Owner(w); o != masterB {
			t.Errorf("worker %d of master %d: owner %d, want the master", w, masterB, o)
		}
	}
	if o := r.Owner(masterA); o != masterA {
		t.Errorf("master %d: owner %d, want itself", masterA, o)
	}
	attrs := r.Lookup(masterA).Attributes()
	if v, _ := attrValue(attrs, KeyServiceInstanceID); v != fmt.Sprintf("host1:%d", masterA) {
		t.Errorf("service.instance.id = %q, want host1:%d", v, masterA)
	}
}

// TestOwnerPIDMode: --process.instance=pid keeps one instance per process.
func TestOwnerPIDMode(t *testing.T) {
	master, workers := poolServer(t, fmt.Sprintf("pidmode-%d", os.Getpid()), 2)
	r := NewResolver("/proc", "host1")
	r.InstanceMode = InstancePID
	for _, p := range append([]uint32{master}, workers...) {
		if o := r.Owner(p); o != p {
			t.Errorf("pid %d: owner %d, want itself", p, o)
		}
	}
}

func TestParseInstanceMode(t *testing.T) {
	for in, want := range map[string]InstanceMode{"": InstanceService, "service": InstanceService, "pid": InstancePID} {
		if got, err := ParseInstanceMode(in); err != nil || got != want {
			t.Errorf("ParseInstanceMode(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseInstanceMode("host"); err == nil {
		t.Error("ParseInstanceMode(host): no error")
	}
}

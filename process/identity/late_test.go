package identity

import (
	"os/exec"
	"sync/atomic"
	"testing"
	"time"
)

// goneProcess runs a process to its end and returns its pid, which /proc
// no longer shows.
func goneProcess(t *testing.T) uint32 {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return uint32(cmd.Process.Pid)
}

// TestLookupWaitsForLateExec (issue 16): a short-lived client whose
// traffic is handled before its exec (the exec watcher behind under load)
// is gone when it is first looked up. It used to be named by what /proc
// still showed, unknown_service here, and stay in that instance; now the
// lookup waits for the watcher's backlog, and the exec names it.
func TestLookupWaitsForLateExec(t *testing.T) {
	r := NewResolver("/proc", "node-1")
	pid := goneProcess(t)
	var pending atomic.Int64
	pending.Store(1)
	r.SetExecBacklog(func() int { return int(pending.Load()) })
	go func() {
		time.Sleep(30 * time.Millisecond) // the watcher gets to the exec
		r.RefreshExec(pid, []byte("PATH=/bin\x00OTEL_SERVICE_NAME=late-client\x00"))
		pending.Store(0)
	}()
	p := r.Lookup(pid)
	if p.ServiceName != "late-client" {
		t.Fatalf("a process gone before its exec was handled is %q, want late-client", p.ServiceName)
	}
	if o := r.Owner(pid); !isSynthetic(o) || r.Lookup(o).ServiceName != "late-client" {
		t.Errorf("its instance is %d (%s), want late-client's folded one", o, r.Lookup(o).ServiceName)
	}
	if w, ok, no := r.LateExecStats(); w != 1 || ok != 1 || no != 0 {
		t.Errorf("LateExecStats = %d waited, %d resolved, %d not; want 1, 1, 0", w, ok, no)
	}

	// Nothing pending: no exec is coming, the lookup does not wait.
	pid = goneProcess(t)
	start := time.Now()
	if p := r.Lookup(pid); p.ServiceName != UnknownService {
		t.Errorf("gone without an exec: %q, want %s", p.ServiceName, UnknownService)
	}
	if d := time.Since(start); d > lateExecWait {
		t.Errorf("the lookup waited %s with nothing pending", d)
	}
	if w, ok, no := r.LateExecStats(); w != 2 || ok != 1 || no != 1 {
		t.Errorf("LateExecStats = %d waited, %d resolved, %d not; want 2, 1, 1", w, ok, no)
	}

	// No watcher: nothing to wait for.
	r.SetExecBacklog(nil)
	if p := r.Lookup(goneProcess(t)); p.ServiceName != UnknownService {
		t.Errorf("without a watcher: %q", p.ServiceName)
	}
	if w, _, _ := r.LateExecStats(); w != 2 {
		t.Errorf("waited %d times, want still 2", w)
	}
}

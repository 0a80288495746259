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
	w := &fakeWatcher{}
	w.pending.Store(64)
	r.SetExecProgress(w)
	go func() {
		time.Sleep(30 * time.Millisecond) // the watcher gets to the exec
		r.RefreshExec(pid, "", []byte("PATH=/bin\x00OTEL_SERVICE_NAME=late-client\x00"), 0)
		w.handled.Add(64)
		w.pending.Store(0)
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

	// Events pending but none for the pid: the lookup waits only until
	// the watcher has handled them.
	w.pending.Store(128)
	go func() {
		time.Sleep(20 * time.Millisecond)
		w.handled.Add(128)
		w.pending.Store(0)
	}()
	start = time.Now()
	if p := r.Lookup(goneProcess(t)); p.ServiceName != UnknownService {
		t.Errorf("gone, its exec not among the pending ones: %q", p.ServiceName)
	}
	if d := time.Since(start); d < 20*time.Millisecond || d > lateExecWait/2 {
		t.Errorf("the lookup waited %s for a backlog handled in 20ms", d)
	}
	if w, ok, no := r.LateExecStats(); w != 3 || ok != 1 || no != 2 {
		t.Errorf("LateExecStats = %d waited, %d resolved, %d not; want 3, 1, 2", w, ok, no)
	}

	// No watcher: nothing to wait for.
	r.SetExecProgress(nil)
	if p := r.Lookup(goneProcess(t)); p.ServiceName != UnknownService {
		t.Errorf("without a watcher: %q", p.ServiceName)
	}
	if w, _, _ := r.LateExecStats(); w != 3 {
		t.Errorf("waited %d times, want still 3", w)
	}
}

// fakeWatcher is the exec watcher's progress.
type fakeWatcher struct {
	pending atomic.Int64
	handled atomic.Uint64
}

func (w *fakeWatcher) Pending() int    { return int(w.pending.Load()) }
func (w *fakeWatcher) Handled() uint64 { return w.handled.Load() }

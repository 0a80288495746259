package identity

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// procTree is a /proc tree: processes and the boot id.
type procTree struct {
	t    *testing.T
	root string
}

func newProcTree(t *testing.T, bootID string) *procTree {
	t.Helper()
	f := &procTree{t: t, root: t.TempDir()}
	f.boot(bootID)
	return f
}

func (f *procTree) boot(id string) {
	f.t.Helper()
	dir := filepath.Join(f.root, "sys", "kernel", "random")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "boot_id"), []byte(id+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// proc writes (or rewrites) process pid.
func (f *procTree) proc(pid, ppid, start int, exe, environ string) {
	f.t.Helper()
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	stat := strconv.Itoa(pid) + " (x) S " + strconv.Itoa(ppid) + " 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 " + strconv.Itoa(start) + " 0 0\n"
	if err := os.WriteFile(dir+"/stat", []byte(stat), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/environ", []byte(environ), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(exe, dir+"/exe"); err != nil {
		f.t.Fatal(err)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

const workerTitle = "nginx: worker process\x00\x00\x00"

// TestPersistAcrossRestart: an nginx master named at exec and its forked
// worker, whose environment areas now hold process titles, keep their
// service in a resolver that starts after them (an agent restart) when
// the previous one saved its state; without the state they would be named
// nginx.
func TestPersistAcrossRestart(t *testing.T) {
	fp := newProcTree(t, "boot-1")
	fp.proc(10, 1, 5000, "/usr/sbin/nginx", "nginx: master process\x00\x00")
	fp.proc(11, 10, 5001, "/usr/sbin/nginx", workerTitle)
	fp.proc(30, 1, 5002, "/usr/bin/python3", "OTEL_SERVICE_NAME=fromproc\x00")
	fp.proc(40, 1, 5003, "/usr/bin/sleep", "PATH=/bin\x00")
	path := filepath.Join(t.TempDir(), "state", "processes.json")

	r1 := NewResolver(fp.root, "h")
	if err := r1.Persist(path, discard()); err != nil {
		t.Fatal(err)
	}
	r1.RefreshExec(10, "", []byte("OTEL_SERVICE_NAME=web\x00OTEL_RESOURCE_ATTRIBUTES=service.namespace=shop,deployment.environment.name=prod\x00"), 0)
	for _, pid := range []uint32{11, 30, 40} {
		r1.Lookup(pid)
	}
	if err := r1.save(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	var st stateFile
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &st); err != nil || len(st.Processes) != 3 {
		t.Fatalf("saved %s (%v): want the three processes named by their environment", b, err)
	}

	// Without the state, the restart renames them.
	if got := NewResolver(fp.root, "h").Lookup(10).ServiceName; got != "nginx" {
		t.Fatalf("the scenario does not reproduce: without state the master is %q", got)
	}
	r2 := NewResolver(fp.root, "h")
	if err := r2.Persist(path, discard()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		pid      uint32
		name, ns string
	}{{10, "web", "shop"}, {11, "web", "shop"}, {30, "fromproc", ""}, {40, "sleep", ""}} {
		p := r2.Lookup(tt.pid)
		if p.ServiceName != tt.name || p.ServiceNamespace != tt.ns {
			t.Errorf("pid %d after restart: %q/%q, want %q/%q", tt.pid, p.ServiceNamespace, p.ServiceName, tt.ns, tt.name)
		}
		found := false
		for _, kv := range p.Attributes() {
			if kv.Key == KeyServiceName && kv.Value.AsString() == tt.name {
				found = true
			}
		}
		if !found {
			t.Errorf("pid %d: attributes %v lack service.name %q", tt.pid, p.Attributes(), tt.name)
		}
		if tt.ns == "shop" {
			res := ""
			for _, kv := range p.Attributes() {
				if kv.Key == KeyResource {
					res = kv.Value.Emit()
				}
			}
			if !strings.Contains(res, "deployment.environment.name=prod") {
				t.Errorf("pid %d after restart: resource %q lacks the program's own deployment.environment.name", tt.pid, res)
			}
		}
	}
	// A worker forked after the restart inherits from the restored master.
	fp.proc(12, 10, 6000, "/usr/sbin/nginx", workerTitle)
	if got := r2.Lookup(12).ServiceName; got != "web" {
		t.Errorf("worker forked after the restart: %q, want web", got)
	}
}

// TestPersistIgnoresStale: saved entries whose pid now names another
// process (another start time, another executable) or that come from
// before a reboot are not applied.
func TestPersistIgnoresStale(t *testing.T) {
	fp := newProcTree(t, "boot-1")
	fp.proc(10, 1, 5000, "/usr/sbin/nginx", "x\x00")
	fp.proc(20, 1, 5000, "/usr/sbin/nginx", "x\x00")
	fp.proc(30, 1, 5000, "/usr/sbin/nginx", "x\x00")
	path := filepath.Join(t.TempDir(), "processes.json")
	r1 := NewResolver(fp.root, "h")
	if err := r1.Persist(path, discard()); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []uint32{10, 20, 30} {
		r1.RefreshExec(pid, "", []byte("OTEL_SERVICE_NAME=web\x00"), 0)
	}
	if err := r1.save(); err != nil {
		t.Fatal(err)
	}
	fp.proc(10, 1, 7000, "/usr/sbin/nginx", "x\x00") // pid reused
	fp.proc(20, 1, 5000, "/usr/bin/perl", "x\x00")   // exec'd while the agent was away
	r2 := NewResolver(fp.root, "h")
	if err := r2.Persist(path, discard()); err != nil {
		t.Fatal(err)
	}
	for pid, want := range map[uint32]string{10: "nginx", 20: "perl", 30: "web"} {
		if got := r2.Lookup(pid).ServiceName; got != want {
			t.Errorf("pid %d: %q, want %q", pid, got, want)
		}
	}

	fp.boot("boot-2")
	r3 := NewResolver(fp.root, "h")
	if err := r3.Persist(path, discard()); err != nil {
		t.Fatal(err)
	}
	if got := r3.Lookup(30).ServiceName; got != "nginx" {
		t.Errorf("after a reboot: %q, want nginx", got)
	}
}

// TestPersistBoundedAndRobust: the file holds at most maxSaved processes;
// a corrupt file is replaced; a state path that cannot be written is an
// error and the resolver works on without it.
func TestPersistBoundedAndRobust(t *testing.T) {
	fp := newProcTree(t, "boot-1")
	for pid := 10; pid < 15; pid++ {
		fp.proc(pid, 1, 5000+pid, "/usr/sbin/nginx", "x\x00")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "processes.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer func(n int) { maxSaved = n }(maxSaved)
	maxSaved = 3
	r := NewResolver(fp.root, "h")
	if err := r.Persist(path, discard()); err != nil {
		t.Fatal(err)
	}
	for pid := uint32(10); pid < 15; pid++ {
		r.RefreshExec(pid, "", []byte("OTEL_SERVICE_NAME=web\x00"), 0)
	}
	if err := r.save(); err != nil {
		t.Fatal(err)
	}
	var st stateFile
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &st); err != nil || len(st.Processes) != 3 {
		t.Fatalf("saved %s (%v): want 3 processes", b, err)
	}

	file := filepath.Join(dir, "a-file")
	os.WriteFile(file, nil, 0o600)
	r2 := NewResolver(fp.root, "h")
	if err := r2.Persist(filepath.Join(file, "processes.json"), discard()); err == nil {
		t.Fatal("a state directory under a regular file was accepted")
	}
	if err := r2.save(); err != nil {
		t.Fatalf("saving without a state file: %v", err)
	}
	if got := r2.Lookup(10).ServiceName; got != "nginx" {
		t.Fatalf("resolver without state: %q", got)
	}
}

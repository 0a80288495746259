package identity

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestServiceFromEnviron(t *testing.T) {
	tests := []struct {
		name, env, wantName, wantNS string
	}{
		{"none", "PATH=/bin\x00HOME=/root\x00", "", ""},
		{"service name", "A=1\x00OTEL_SERVICE_NAME=checkout\x00", "checkout", ""},
		{"resource attributes", "OTEL_RESOURCE_ATTRIBUTES=service.name=cart, service.namespace=shop\x00", "cart", "shop"},
		{"service name wins", "OTEL_SERVICE_NAME=a\x00OTEL_RESOURCE_ATTRIBUTES=service.name=b,service.namespace=ns\x00", "a", "ns"},
		{"malformed pairs ignored", "OTEL_RESOURCE_ATTRIBUTES=junk,=,service.name=c\x00", "c", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ns := serviceFromEnviron([]byte(tt.env))
			if n != tt.wantName || ns != tt.wantNS {
				t.Fatalf("got (%q, %q), want (%q, %q)", n, ns, tt.wantName, tt.wantNS)
			}
		})
	}
}

func TestContainerIDFromCgroup(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct{ name, cgroup, want string }{
		{"host", "0::/user.slice/user-0.slice/session-1.scope\n", ""},
		{"docker v2", "0::/system.slice/docker-" + id + ".scope\n", id},
		{"kubepods v1", "12:cpu:/kubepods/burstable/pod1234/" + id + "\n", id},
		{"containerd cri", "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + id + ".scope\n", id},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ContainerIDFromCgroup([]byte(tt.cgroup)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestResolverRealProcess resolves a real child process with a service name
// in its environment, then sees it gone after it exits.
func TestResolverRealProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=sleeper", "OTEL_RESOURCE_ATTRIBUTES=service.namespace=tests")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	r := NewResolver("/proc", "host1")
	p := r.Lookup(pid)
	if p.ServiceName != "sleeper" || p.ServiceNamespace != "tests" || p.ExecutableName != "sleep" {
		t.Fatalf("got %+v", p)
	}
	wantInstance := "host1:" + strconv.Itoa(cmd.Process.Pid)
	found := false
	for _, kv := range p.Attributes() {
		if kv.Key == KeyServiceInstanceID && kv.Value.AsString() == wantInstance {
			found = true
		}
	}
	if !found {
		t.Fatalf("no service.instance.id %q in %v", wantInstance, p.Attributes())
	}
	if r.Lookup(pid) != p {
		t.Fatal("second lookup did not hit the cache")
	}
	if gone := r.Sweep(); len(gone) != 0 {
		t.Fatalf("live process swept: %v", gone)
	}
	cmd.Process.Kill()
	cmd.Wait()
	gone := r.Sweep()
	if len(gone) != 1 || gone[0] != pid || r.Len() != 1 {
		t.Fatalf("after exit: swept %v, cache %d", gone, r.Len())
	}
	// Still known for the series it left behind, until the retention ends.
	if r.Lookup(pid).ServiceName != "sleeper" {
		t.Fatalf("identity of the exited process lost: %+v", r.Lookup(pid))
	}
	r.Retention = 0
	if gone := r.Sweep(); len(gone) != 0 || r.Len() != 0 {
		t.Fatalf("after retention: swept %v again, cache %d", gone, r.Len())
	}
	if u := r.Lookup(0); u.ServiceName != UnknownService {
		t.Fatalf("pid 0: %+v", u)
	}
}

// TestResolverProvisionalDuringExec reads a process caught mid-exec (its
// environment still empty), then the same process once exec has written it:
// the second lookup must see the service name, not keep the first answer.
func TestResolverProvisionalDuringExec(t *testing.T) {
	root := t.TempDir()
	dir := root + "/42"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(dir+"/"+name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("stat", "42 (checkout) S 1 42 42 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n")
	write("comm", "checkout\n")
	write("environ", "")
	r := NewResolver(root, "h")
	if got := r.Lookup(42).ServiceName; got != "checkout" {
		t.Fatalf("mid-exec lookup: service %q, want the executable name", got)
	}
	write("environ", "OTEL_SERVICE_NAME=cart\x00")
	if got := r.Lookup(42).ServiceName; got != "cart" {
		t.Fatalf("after exec: service %q, want cart", got)
	}
	write("environ", "OTEL_SERVICE_NAME=changed\x00")
	if got := r.Lookup(42).ServiceName; got != "cart" {
		t.Fatalf("a complete identity was read again: %q", got)
	}
}

// TestResolverForkedChildInherits: a child with its parent's executable
// (forked, never exec'd) whose environment area was rewritten takes the
// service its parent had from its environment at exec; a child running
// another program, or the child of a parent named by its executable, does
// not.
func TestResolverForkedChildInherits(t *testing.T) {
	root := t.TempDir()
	proc := func(pid, ppid int, exe, environ string) {
		t.Helper()
		dir := root + "/" + strconv.Itoa(pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		stat := strconv.Itoa(pid) + " (x) S " + strconv.Itoa(ppid) + " 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 " + strconv.Itoa(1000+pid) + " 0 0\n"
		if err := os.WriteFile(dir+"/stat", []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/environ", []byte(environ), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(exe, dir+"/exe"); err != nil {
			t.Fatal(err)
		}
	}
	title := "nginx: worker process\x00\x00\x00"
	proc(10, 1, "/usr/sbin/nginx", "nginx: master process\x00\x00")
	proc(11, 10, "/usr/sbin/nginx", title)
	proc(12, 10, "/usr/bin/logger", title)
	proc(20, 1, "/usr/sbin/nginx", "nginx: master process\x00")
	proc(21, 20, "/usr/sbin/nginx", title)
	r := NewResolver(root, "h")
	if p := r.RefreshExec(10, "", []byte("PATH=/bin\x00OTEL_SERVICE_NAME=web\x00OTEL_RESOURCE_ATTRIBUTES=service.namespace=shop\x00"), 0); p.ServiceName != "web" {
		t.Fatalf("parent from its exec environment: %+v", p)
	}
	r.RefreshExec(20, "", []byte("PATH=/bin\x00"), 0)
	tests := []struct {
		pid    uint32
		name   string
		wantNS string
	}{
		{11, "web", "shop"},
		{12, "logger", ""},
		{21, "nginx", ""},
	}
	for _, tt := range tests {
		if p := r.Lookup(tt.pid); p.ServiceName != tt.name || p.ServiceNamespace != tt.wantNS {
			t.Errorf("pid %d: %q/%q, want %q/%q", tt.pid, p.ServiceNamespace, p.ServiceName, tt.wantNS, tt.name)
		}
	}
}

// TestResolverPublishesExecAndExit: a subscriber hears a real process's
// exec (as the watcher announces it) and, from the sweep, its exit, once,
// with the identity it had; after unsubscribing it hears nothing.
func TestResolverPublishesExecAndExit(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=pubsub")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	r := NewResolver("/proc", "h")
	var got []Event
	unsubscribe := r.Subscribe(func(e Event) { got = append(got, e) })
	r.RefreshExec(pid, "", nil, 0)
	r.Sweep()
	cmd.Process.Kill()
	cmd.Wait()
	r.Sweep()
	r.Sweep()
	if len(got) != 2 || got[0].Kind != ProcessExec || got[1].Kind != ProcessExit {
		t.Fatalf("events %+v, want one exec then one exit", got)
	}
	for _, e := range got {
		if e.PID != pid || e.Process.ServiceName != "pubsub" {
			t.Fatalf("event %s: pid %d service %q, want %d pubsub", e.Kind, e.PID, e.Process.ServiceName, pid)
		}
	}
	unsubscribe()
	r.RefreshExec(pid, "", nil, 0)
	r.Retention = 0
	r.Sweep()
	if len(got) != 2 {
		t.Fatalf("events after unsubscribing: %+v", got[2:])
	}
}

// TestResolverRunForgetsExited: real short processes announced at exec are
// forgotten by the resolver's own sweep once the retention has passed, with
// no collector calling it, and the cache's maps are rebuilt small.
func TestResolverRunForgetsExited(t *testing.T) {
	r := NewResolver("/proc", "h")
	r.Retention = time.Second
	const n = 2000
	for i := 0; i < n; i++ {
		cmd := exec.Command("/bin/true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		r.RefreshExec(uint32(cmd.Process.Pid), "", []byte("OTEL_SERVICE_NAME=short\x00"), 0)
	}
	if r.Len() < n {
		t.Fatalf("cache %d after %d execs", r.Len(), n)
	}
	exits := 0
	var mu sync.Mutex
	r.Subscribe(func(e Event) {
		if e.Kind == ProcessExit {
			mu.Lock()
			exits++
			mu.Unlock()
		}
	})
	released := 0
	defer func(f func()) { releaseMemory = f }(releaseMemory)
	releaseMemory = func() {
		mu.Lock()
		released++
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for r.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if r.Len() != 0 || exits != n || released != 1 {
		t.Fatalf("after the retention: cache %d, exits published %d, memory released %d times, want 0, %d, 1", r.Len(), exits, released, n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peak != 0 {
		t.Fatalf("maps not rebuilt: peak %d", r.peak)
	}
}

// TestResolverDeadPidReused: a pid found gone and then taken by a forked
// process (no exec announces it) is read anew, not named after the
// process that exited.
func TestResolverDeadPidReused(t *testing.T) {
	root := t.TempDir()
	dir := root + "/42"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(dir+"/"+name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("stat", "42 (old) S 1 42 42 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n")
	write("comm", "old\n")
	write("environ", "OTEL_SERVICE_NAME=old\x00")
	r := NewResolver(root, "h")
	if got := r.Lookup(42).ServiceName; got != "old" {
		t.Fatalf("first process: %q", got)
	}
	os.Remove(dir + "/stat")
	if gone := r.Sweep(); len(gone) != 1 {
		t.Fatalf("exit not found: %v", gone)
	}
	if got := r.Lookup(42).ServiceName; got != "old" {
		t.Fatalf("exited process within its retention: %q, want old", got)
	}
	write("stat", "42 (new) S 1 42 42 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0\n")
	write("comm", "new\n")
	write("environ", "OTEL_SERVICE_NAME=new\x00")
	if got := r.Lookup(42).ServiceName; got != "new" {
		t.Fatalf("pid reused: %q, want new", got)
	}
	if gone := r.Sweep(); len(gone) != 0 {
		t.Fatalf("live process swept: %v", gone)
	}
}

// BenchmarkRefreshExec is the work of one exec on the host: the identity
// of a live process read from /proc with the environment of its exec.
func BenchmarkRefreshExec(b *testing.B) {
	r := NewResolver("/proc", "h")
	pid := uint32(os.Getpid())
	var env []byte
	for _, kv := range os.Environ() {
		env = append(append(env, kv...), 0)
	}
	env = append(env, "OTEL_SERVICE_NAME=bench\x00"...)
	b.ReportAllocs()
	for b.Loop() {
		r.RefreshExec(pid, "", env, 0)
	}
}

// BenchmarkAlive is the sweep's cost per cached process.
func BenchmarkAlive(b *testing.B) {
	r := NewResolver("/proc", "h")
	pid := uint32(os.Getpid())
	r.Lookup(pid)
	b.ReportAllocs()
	for b.Loop() {
		r.Alive(pid)
	}
}

// TestReadStat: the start time and parent from a stat line whose comm holds
// spaces and parentheses.
func TestReadStat(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(root+"/7", 0o755)
	tests := []struct {
		stat       string
		start      uint64
		ppid       uint32
		wantErrNil bool
	}{
		{"7 (a b) c) S 3 7 7 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0\n", 12345, 3, true},
		{"7 (x) S 3 7 7 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 99\n", 99, 3, true},
		{"7 (x) S 3 7 7 0\n", 0, 0, false},
		{"7 x S 3", 0, 0, false},
	}
	for _, tt := range tests {
		os.WriteFile(root+"/7/stat", []byte(tt.stat), 0o644)
		start, ppid, err := readStat(root, 7)
		if (err == nil) != tt.wantErrNil || start != tt.start || ppid != tt.ppid {
			t.Errorf("%q: start %d ppid %d err %v, want %d %d (error: %v)", tt.stat, start, ppid, err, tt.start, tt.ppid, !tt.wantErrNil)
		}
	}
}

func FuzzServiceFromEnviron(f *testing.F) {
	f.Add([]byte("OTEL_SERVICE_NAME=a\x00OTEL_RESOURCE_ATTRIBUTES=service.name=b,service.namespace=ns\x00"))
	f.Add([]byte("OTEL_RESOURCE_ATTRIBUTES=,=,,service.namespace\x00\x00"))
	f.Fuzz(func(t *testing.T, env []byte) {
		name, ns := serviceFromEnviron(env)
		if len(name) > len(env) || len(ns) > len(env) {
			t.Fatalf("%q: got %q %q, longer than the input", env, name, ns)
		}
	})
}

func FuzzContainerIDFromCgroup(f *testing.F) {
	f.Add([]byte("0::/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n"))
	f.Add([]byte("12:cpu:\n::\n:"))
	f.Fuzz(func(t *testing.T, cg []byte) {
		id := ContainerIDFromCgroup(cg)
		if id != "" && !containerIDPattern.MatchString(id) || len(id) != 0 && len(id) != 64 {
			t.Fatalf("%q: id %q", cg, id)
		}
	})
}

// TestRefreshExecOfExitedProcess: a process that is gone before its exec is
// handled keeps the executable name its exec event carried (no /proc entry
// is left to read it from), and is named by it without OTEL_SERVICE_NAME.
func TestRefreshExecOfExitedProcess(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	r := NewResolver("/proc", "h")
	p := r.RefreshExec(uint32(cmd.Process.Pid), "true", []byte("PATH=/bin\x00"), 0)
	if p.ExecutableName != "true" || p.ServiceName != "true" {
		t.Fatalf("executable %q, service %q; want true, true", p.ExecutableName, p.ServiceName)
	}
	p = r.RefreshExec(uint32(cmd.Process.Pid), "true", []byte("OTEL_SERVICE_NAME=web\x00"), 0)
	if p.ExecutableName != "true" || p.ServiceName != "web" {
		t.Fatalf("executable %q, service %q; want true, web", p.ExecutableName, p.ServiceName)
	}
	if !slices.Contains(p.Attributes(), KeyExecutableName.String("true")) {
		t.Errorf("attributes %v lack process.executable.name", p.Attributes())
	}
}

// TestResolverReleasesAfterBurstOverSweeps: a burst of 1,500 short-lived
// processes forgotten over three sweeps (500 each, fewer than releaseAfter)
// gives the memory back once, at the sweep that brings the cache down to a
// quarter of its peak (before: never, as no one sweep forgot 1,024).
func TestResolverReleasesAfterBurstOverSweeps(t *testing.T) {
	r := NewResolver("/proc", "h")
	r.Retention = time.Hour
	released := 0
	r.ReleaseMemory = func() { released++ }
	const n = 1500
	pids := make([]uint32, 0, n)
	for range n {
		cmd := exec.Command("/bin/true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		pid := uint32(cmd.Process.Pid)
		r.RefreshExec(pid, "", []byte("OTEL_SERVICE_NAME=burst\x00"), 0)
		pids = append(pids, pid)
	}
	r.Sweep() // every one found gone, none forgotten yet
	if released != 0 {
		t.Fatalf("released %d times before the retention", released)
	}
	for batch := range 3 {
		r.mu.Lock()
		for _, pid := range pids[batch*500 : (batch+1)*500] {
			if _, ok := r.dead[pid]; ok {
				r.dead[pid] = time.Now().Add(-2 * time.Hour) // its retention is over
			}
		}
		r.mu.Unlock()
		r.Sweep()
		want := 0
		if batch == 2 {
			want = 1
		}
		if released != want {
			t.Fatalf("after forgetting batch %d (cache %d): released %d times, want %d", batch, r.Len(), released, want)
		}
	}
}

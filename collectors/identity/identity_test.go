package identity

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
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
	if p := r.RefreshExec(10, []byte("PATH=/bin\x00OTEL_SERVICE_NAME=web\x00OTEL_RESOURCE_ATTRIBUTES=service.namespace=shop\x00")); p.ServiceName != "web" {
		t.Fatalf("parent from its exec environment: %+v", p)
	}
	r.RefreshExec(20, []byte("PATH=/bin\x00"))
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

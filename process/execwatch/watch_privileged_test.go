package execwatch

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/process/identity"
)

// helperEnv makes the test binary a program that overwrites its whole
// environment area, as nginx and postgres do for their process titles.
const helperEnv = "OTELBEE_PROCWATCH_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "rewrite" {
		if err := overwriteEnvironment(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(os.Getpid())
		time.Sleep(30 * time.Second)
		os.Exit(0)
	}
	if dir, ok := strings.CutPrefix(os.Getenv(helperEnv), "cgroup:"); ok {
		// Into the cgroup, then exec'd again inside it (no shell in the
		// test VMs), to exit at once.
		if err := os.WriteFile(dir+"/cgroup.procs", []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		env := []string{"OTEL_SERVICE_NAME=" + os.Getenv("OTEL_SERVICE_NAME")}
		if err := syscall.Exec(os.Args[0], []string{os.Args[0], "-test.run=^$"}, env); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// overwriteEnvironment writes over the memory /proc/<pid>/environ shows
// (fields env_start and env_end of /proc/self/stat).
func overwriteEnvironment() error {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return err
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	// f[0] is field 3; env_start and env_end are fields 50 and 51.
	start, err1 := strconv.ParseUint(f[47], 10, 64)
	end, err2 := strconv.ParseUint(f[48], 10, 64)
	if err1 != nil || err2 != nil || end <= start {
		return fmt.Errorf("environment bounds %q %q", f[47], f[48])
	}
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer mem.Close()
	_, err = mem.WriteAt(bytes.Repeat([]byte("x"), int(end-start)), int64(start))
	return err
}

// startWatcher attaches the exec hook but does not read its events yet.
func startWatcher(t *testing.T, res *identity.Resolver) (run func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	if err := hook.EnsureMounts(); err != nil {
		t.Logf("mounts: %v", err)
	}
	force, probes := collectortest.ForcedMode(t)
	reg := hook.NewRegistry()
	w, err := NewWatcher(res, probes, reg, hook.Options{Force: force, Strict: force != ""},
		slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", WatcherName))
	if err != nil {
		t.Fatalf("starting the process watcher: %v", err)
	}
	collectortest.CheckAttach(t, reg, force, nil)
	t.Cleanup(func() { w.Close() })
	return func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("watcher: %v", err)
			}
		})
	}
}

// startPids starts cmd and reads the pids it prints on its first line.
func startPids(t *testing.T, cmd *exec.Cmd, want int) []uint32 {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Runs last: the children below are killed first, then the pipe they
	// share with cmd closes.
	t.Cleanup(func() { cmd.Process.Kill(); io.Copy(io.Discard, out); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	var pids []uint32
	for _, f := range strings.Fields(line) {
		n, perr := strconv.ParseUint(f, 10, 32)
		if perr != nil {
			t.Fatalf("pids %q: %v", line, perr)
		}
		pids = append(pids, uint32(n))
		t.Cleanup(func() {
			if p, err := os.FindProcess(int(n)); err == nil {
				p.Kill()
			}
		})
	}
	if err != nil || len(pids) != want {
		t.Fatalf("reading %d pids: %q %v", want, line, err)
	}
	// The environment really is gone from /proc: without the watcher the
	// process is named by its executable.
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pids[0]))
	if bytes.Contains(env, []byte("OTEL_SERVICE_NAME")) {
		t.Fatal("the program's environment still shows OTEL_SERVICE_NAME")
	}
	if p := identity.NewResolver("/proc", "h").Lookup(pids[0]); p.ServiceName == "rewriter" {
		t.Fatalf("without the watcher the service name was still found: %+v", p)
	}
	return pids
}

// waitService waits for the exec event to name pid (it may be on its way).
func waitService(t *testing.T, res *identity.Resolver, pid uint32) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if res.Lookup(pid).ServiceName == "rewriter" {
			return
		}
	}
}

// TestPrivilegedEnvironmentAtExec: a program that rewrites its environment
// after it starts is still named by the OTEL_SERVICE_NAME it was exec'd
// with. It does so while its exec event waits in the ring buffer, so when
// the watcher reads the event only the kernel's copy has the variables.
func TestPrivilegedEnvironmentAtExec(t *testing.T) {
	res := identity.NewResolver("/proc", "testhost")
	run := startWatcher(t, res)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=rewrite",
		"OTEL_SERVICE_NAME=rewriter", "OTEL_RESOURCE_ATTRIBUTES=service.namespace=titles")
	pids := startPids(t, cmd, 1)
	run()
	waitService(t, res, pids[0])
	if p := res.Lookup(pids[0]); p.ServiceName != "rewriter" || p.ServiceNamespace != "titles" {
		t.Errorf("service %q namespace %q, want rewriter/titles", p.ServiceName, p.ServiceNamespace)
	}
}

// rewriterFork rewrites its environment, then forks a child that stays the
// same program (as nginx's master forks its workers), and prints both pids.
const rewriterFork = `
import ctypes, os, time
libc = ctypes.CDLL(None)
environ = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
i = 0
while environ[i]:
    ctypes.memset(environ[i], ord("x"), len(ctypes.string_at(environ[i])))
    i += 1
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
print(os.getpid(), child, flush=True)
time.sleep(30)
`

// TestPrivilegedForkedChildInherits: the forked child of such a program,
// which never exec'd, is named after its parent's environment at exec.
func TestPrivilegedForkedChildInherits(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("skipping: python3 not installed")
	}
	res := identity.NewResolver("/proc", "testhost")
	run := startWatcher(t, res)
	cmd := exec.Command(python, "-c", rewriterFork)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=rewriter", "OTEL_RESOURCE_ATTRIBUTES=service.namespace=titles")
	pids := startPids(t, cmd, 2)
	run()
	waitService(t, res, pids[0])
	for i, pid := range pids {
		if p := res.Lookup(pid); p.ServiceName != "rewriter" || p.ServiceNamespace != "titles" {
			t.Errorf("process %d (pid %d): service %q namespace %q, want rewriter/titles", i, pid, p.ServiceName, p.ServiceNamespace)
		}
	}
}

// TestPrivilegedContainerOfExitedProcess: a process that runs in a
// container's cgroup and exits before the watcher handles its exec (the
// watcher starts reading only after it is gone, as on a busy agent) still
// gets its container id: the exec event carries its cgroup id.
func TestPrivilegedContainerOfExitedProcess(t *testing.T) {
	var v2 string
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[2] == "cgroup2" && (v2 == "" || len(f[1]) < len(v2)) {
				v2 = f[1]
			}
		}
	}
	if v2 == "" {
		t.Skip("skipping: cgroup2 not mounted")
	}
	res := identity.NewResolver("/proc", "testhost")
	run := startWatcher(t, res)
	const id = "feedface0123456789abcdef0123456789abcdef0123456789abcdef01234567"
	slice := fmt.Sprintf("%s/otelbee-execwatch-%d.slice", v2, os.Getpid())
	dir := slice + "/cri-containerd-" + id + ".scope"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Skipf("skipping: creating a cgroup: %v", err)
	}
	t.Cleanup(func() { os.Remove(dir); os.Remove(slice) })
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=cgroup:"+dir, "OTEL_SERVICE_NAME=shortjob")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pid := uint32(cmd.Process.Pid)
	run() // the process is gone: only its exec events say where it ran
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := res.Lookup(pid)
		if p.ContainerID == id && p.ServiceName == "shortjob" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("exited process %d: service %q container %q, want shortjob in %s", pid, p.ServiceName, p.ContainerID, id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

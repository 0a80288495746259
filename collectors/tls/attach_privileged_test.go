package tls

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/otelbee/otelbee/process/identity"
)

// counters are uprobe programs that count their hits in one process (the
// tgid in want[0]), one counter per program: the tests compare them with
// the calls the program says it made.
type counters struct {
	want  *ebpf.Map
	maps  map[string]*ebpf.Map
	progs Programs
}

var counterNames = []string{"ssl_read", "ssl_read_ex", "ssl_read_ret", "ssl_write", "ssl_write_ex", "ssl_write_ret",
	"go_read", "go_read_ret", "go_write", "go_write_ret", "go_read_copy", "go_read_copy_slot"}

func newCounters(t *testing.T) *counters {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and attaches uprobes")
	}
	rlimit.RemoveMemlock()
	want, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { want.Close() })
	c := &counters{want: want, maps: map[string]*ebpf.Map{}}
	progs := map[string]*ebpf.Program{}
	for _, name := range counterNames {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		insns := asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, want.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R6, asm.R0, 0, asm.Word),
			asm.FnGetCurrentPidTgid.Call(),
			asm.RSh.Imm(asm.R0, 32),
			asm.JNE.Reg(asm.R0, asm.R6, "out"),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: ebpf.Kprobe, License: "GPL", Instructions: insns})
		if err != nil {
			t.Fatalf("loading %s: %v", name, err)
		}
		t.Cleanup(func() { p.Close() })
		c.maps[name], progs[name] = m, p
	}
	c.progs = Programs{
		SSLReadEntry: progs["ssl_read"], SSLReadExEntry: progs["ssl_read_ex"], SSLReadReturn: progs["ssl_read_ret"],
		SSLWriteEntry: progs["ssl_write"], SSLWriteExEntry: progs["ssl_write_ex"], SSLWriteReturn: progs["ssl_write_ret"],
		GoReadEntry: progs["go_read"], GoReadReturn: progs["go_read_ret"], GoWriteEntry: progs["go_write"], GoWriteReturn: progs["go_write_ret"],
		GoReadCopy: progs["go_read_copy"], GoReadCopySlot: progs["go_read_copy_slot"],
	}
	return c
}

func (c *counters) watch(t *testing.T, pid int) {
	t.Helper()
	if err := c.want.Put(uint32(0), uint32(pid)); err != nil {
		t.Fatal(err)
	}
}

func (c *counters) get(t *testing.T) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for name, m := range c.maps {
		var v uint64
		if err := m.Lookup(uint32(0), &v); err != nil {
			t.Fatal(err)
		}
		if v != 0 {
			out[name] = v
		}
	}
	return out
}

// attachedIDs are the kernel ids of the links the attacher holds on the
// file at path.
func attachedIDs(t *testing.T, a *Attacher, path string) []link.ID {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []link.ID
	for _, f := range a.files {
		if f.target.Path != path {
			continue
		}
		for _, l := range f.links {
			info, err := l.(link.Link).Info()
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, info.ID)
		}
	}
	return ids
}

// uprobeLinks counts which of ids the kernel has as uprobe links on the
// file at path: the kernel's own account (other agents on the host may
// hold links of their own on the same file).
func uprobeLinks(t *testing.T, path string, ids []link.ID) int {
	t.Helper()
	n := 0
	for _, id := range ids {
		l, err := link.NewFromID(id)
		if err != nil {
			continue // gone
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			continue
		}
		// A perf-event uprobe, or a uprobe_multi link where the kernel has
		// them; the path given at attach: through /proc/<pid>/root.
		var file string
		if pe := info.PerfEvent(); info.Type == link.PerfEventType && pe != nil {
			if u := pe.Uprobe(); u != nil {
				file = u.File
			}
		} else if um := info.UprobeMulti(); info.Type == link.UprobeMultiType && um != nil {
			file = um.File
		}
		if file != "" && (file == path || strings.HasSuffix(file, "/root"+path)) {
			n++
		}
	}
	return n
}

// gated runs a program that waits for a line on stdin before its TLS and
// prints "reads=R writes=W" after it; go() sends the line and returns the
// counts it printed.
type gated struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startGated(t *testing.T, name string, args ...string) *gated {
	t.Helper()
	cmd := exec.Command(name, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gated{cmd: cmd, stdin: stdin, lines: make(chan string, 4)}
	t.Cleanup(func() { g.stop() })
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			g.lines <- s.Text()
		}
		close(g.lines)
	}()
	if l := g.line(t); l != "ready" {
		t.Fatalf("%s printed %q, want ready", name, l)
	}
	return g
}

func (g *gated) line(t *testing.T) string {
	t.Helper()
	select {
	case l := <-g.lines:
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("no line from the program within 30s")
	}
	return ""
}

func (g *gated) run(t *testing.T) (reads, writes uint64) {
	t.Helper()
	fmt.Fprintln(g.stdin)
	l := g.line(t)
	if _, err := fmt.Sscanf(l, "reads=%d writes=%d", &reads, &writes); err != nil {
		t.Fatalf("program printed %q: %v", l, err)
	}
	return reads, writes
}

func (g *gated) stop() {
	g.stdin.Close()
	g.cmd.Process.Kill()
	g.cmd.Wait()
}

// ownChildren is a Filter for the test's own processes: other programs on
// the host (other tests, agents) are left alone.
func ownChildren(pid int, _ string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 1 && (f[1] == strconv.Itoa(os.Getpid()) || ownChild(f[1]))
}

// ownChild reports whether ppid is a child of the test (nginx's workers,
// a program started through sh).
func ownChild(ppid string) bool {
	b, err := os.ReadFile("/proc/" + ppid + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 1 && f[1] == strconv.Itoa(os.Getpid())
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newTestAttacher(t *testing.T, progs Programs, procs *identity.Resolver, host []string) *Attacher {
	t.Helper()
	cfg := DefaultAttachConfig()
	cfg.HostLibraries = host
	cfg.Rescan = time.Hour
	cfg.Filter = ownChildren
	a, err := NewAttacher(cfg, progs, procs, nil, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestAttachGoExact: a Go program (with and without symbols) found at the
// attacher's start is instrumented with one entry probe per function and
// one probe per return instruction; every call it makes is counted once at
// entry and once at return; when it exits its probes go.
func TestAttachGoExact(t *testing.T) {
	c := newCounters(t)
	b := buildGo(t, "gotlscount", goToolchains[0])
	for _, bin := range []string{b.full, b.stripped} {
		t.Run(filepath.Base(bin), func(t *testing.T) {
			procs := identity.NewResolver("/proc", "test")
			a := newTestAttacher(t, c.progs, procs, []string{})
			g := startGated(t, bin, "-n", "96", "-grow") // some Writes grow their stack (testdata/gotlscount)
			if err := a.Start(); err != nil {
				t.Fatal(err)
			}
			tg := Inspect(bin)
			// Read's copy of the plaintext (amd64) in place of its returns.
			copies := tg.Func(goRead).Copy != 0
			if runtime.GOARCH == "amd64" && !copies {
				t.Fatalf("no copy call found in %s's Read", bin)
			}
			// With the receiver's stack slot known, the copy is Read's only
			// probe.
			slot := copies && tg.Func(goRead).CopyRecvSlot != 0
			if runtime.GOARCH == "amd64" && !slot {
				t.Fatalf("no receiver slot found in %s's Read", bin)
			}
			want := 2 + len(tg.Func(goRead).Returns) + len(tg.Func(goWrite).Returns)
			if copies {
				want = 2 + 1 + len(tg.Func(goWrite).Returns)
			}
			if slot {
				want = 1 + 1 + len(tg.Func(goWrite).Returns)
			}
			s := a.Stats()
			if s.Files != 1 || s.Probes != want {
				t.Fatalf("instrumented %d files with %d probes, want 1 with %d: %v", s.Files, s.Probes, want, a.Instrumented())
			}
			ids := attachedIDs(t, a, bin)
			if n := uprobeLinks(t, bin, ids); n != want {
				t.Fatalf("the kernel has %d of the attacher's uprobe links on %s, want %d", n, bin, want)
			}
			before := c.get(t)
			c.watch(t, g.cmd.Process.Pid)
			reads, writes := g.run(t)
			got := c.get(t)
			for k, v := range before {
				got[k] -= v
			}
			exp := map[string]uint64{"go_read": reads, "go_read_ret": reads, "go_write": writes, "go_write_ret": writes}
			if copies {
				// Every Read but the last (io.EOF) copies one message out.
				exp = map[string]uint64{"go_read": reads, "go_read_copy": reads - 1, "go_write": writes, "go_write_ret": writes}
			}
			if slot {
				exp = map[string]uint64{"go_read_copy_slot": reads - 1, "go_write": writes, "go_write_ret": writes}
			}
			for _, k := range counterNames {
				if got[k] != exp[k] {
					t.Errorf("%s: %d hits, want %d (all: %v)", k, got[k], exp[k], got)
				}
			}
			g.stop()
			procs.Sweep() // finds the exit and publishes it
			a.drain()
			if s := a.Stats(); s.Files != 0 || s.Probes != 0 || s.Detached != 1 {
				t.Fatalf("after the exit: %d files, %d probes, %d detached; want 0, 0, 1", s.Files, s.Probes, s.Detached)
			}
			if n := uprobeLinks(t, bin, ids); n != 0 {
				t.Fatalf("after the exit the kernel still has %d uprobe links on %s", n, bin)
			}
		})
	}
}

// TestAttachOpenSSLExact: Python's ssl module through the host's libssl,
// instrumented from the start (a host library): its SSL_read_ex and
// SSL_write_ex calls are counted exactly, at entry and return, and
// SSL_read/SSL_write not at all.
func TestAttachOpenSSLExact(t *testing.T) {
	c := newCounters(t)
	cert, key := certificate(t)
	procs := identity.NewResolver("/proc", "test")
	a := newTestAttacher(t, c.progs, procs, nil)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	lib := hostLibssl(t)
	if _, ok := a.Instrumented()[lib]; !ok {
		t.Fatalf("the host's %s is not instrumented: %v", lib, a.Instrumented())
	}
	g := startGated(t, "python3", "testdata/tlscount.py", cert, key, "40")
	c.watch(t, g.cmd.Process.Pid)
	reads, writes := g.run(t)
	got := c.get(t)
	exp := map[string]uint64{"ssl_read_ex": reads, "ssl_read_ret": reads, "ssl_write_ex": writes, "ssl_write_ret": writes}
	for _, k := range counterNames {
		if got[k] != exp[k] {
			t.Errorf("%s: %d hits, want %d (all: %v)", k, got[k], exp[k], got)
		}
	}
	// The host library stays when its last user exits.
	g.stop()
	a.Rescan()
	if _, ok := a.Instrumented()[lib]; !ok {
		t.Fatalf("the pinned %s lost its probes", lib)
	}
}

// hostLibssl is the libssl path python3's _ssl module loads.
func hostLibssl(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", "ldd $(python3 -c 'import _ssl; print(_ssl.__file__)') | grep libssl").Output()
	if err != nil {
		t.Fatalf("finding python's libssl: %v", err)
	}
	f := strings.Fields(string(out))
	p, err := filepath.EvalSymlinks(f[2])
	if err != nil {
		t.Fatal(err)
	}
	// Reported by the name the glob found: /usr/lib/<triplet>/libssl.so.3.
	return "/usr/lib/" + filepath.Base(filepath.Dir(p)) + "/" + filepath.Base(f[2])
}

// waitChildren waits until process pid has n children.
func waitChildren(t *testing.T, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if len(strings.Fields(string(b))) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has children %q, want %d", pid, b, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAttachPerFile: nginx's master and workers, curl and an openssl
// s_server share one uprobe set on libssl; a copy of node and node itself
// get one each (OpenSSL built in); gnutls-cli is counted unobserved for its
// service with the reason. The probes of node's copy go with its exit.
func TestAttachPerFile(t *testing.T) {
	c := newCounters(t)
	cert, key := certificate(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off; worker_processes 2; pid %s/nginx.pid; error_log stderr;
events {} http { access_log off; server { listen 127.0.0.1:%d ssl; ssl_certificate %s; ssl_certificate_key %s; return 200; } }
`, dir, freePort(t), cert, key)), 0o644)
	nginx := exec.Command("nginx", "-c", conf, "-p", dir)
	nginx.Stderr = os.Stderr
	if err := nginx.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nginx.Process.Signal(syscall.SIGTERM); nginx.Wait() }) // its workers exit with it
	port := strconv.Itoa(freePort(t))
	start(t, "ACCEPT", "openssl", "s_server", "-accept", "127.0.0.1:"+port, "-cert", cert, "-key", key)
	nodeCopy := filepath.Join(dir, "node-copy")
	if out, err := exec.Command("cp", "/usr/bin/node", nodeCopy).CombinedOutput(); err != nil {
		t.Fatalf("copying node: %v %s", err, out)
	}
	node, _ := start(t, "up", nodeCopy, "-e", "console.log('up'); setInterval(() => {}, 1000)")
	start(t, "Handshake was completed", "gnutls-cli", "--insecure", "-p", port, "127.0.0.1")
	// The start-up scan must find nginx's workers: a fixed pause was not
	// always long enough on a loaded machine (the scan then saw 1 user of
	// libssl of the 4).
	waitChildren(t, nginx.Process.Pid, 2)

	procs := identity.NewResolver("/proc", "test")
	a := newTestAttacher(t, c.progs, procs, []string{})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	inst := a.Instrumented()
	lib := hostLibssl(t)
	if n := inst[lib]; n != 4 {
		t.Errorf("%s has %d users, want nginx's master and 2 workers and s_server: %v", lib, n, inst)
	}
	if inst[nodeCopy] != 1 {
		t.Errorf("the node copy has %d users, want 1: %v", inst[nodeCopy], inst)
	}
	// One set per file: node's four functions, entry and return each;
	// libssl's the same, or on amd64 (Debian's build) the two inner
	// functions its four call (probepoint.go).
	libProbes := len(plan(Inspect(lib), &c.progs))
	if s := a.Stats(); s.Files != 2 || s.Probes != 8+libProbes || (runtime.GOARCH == "amd64" && libProbes != 4) {
		t.Errorf("%d probes on %d files, want 8 on node's copy and %d on libssl: %v", s.Probes, s.Files, libProbes, inst)
	}
	found := false
	for k, v := range a.Stats().Unobserved {
		if k.Service == "gnutls-cli" && k.Reason == ReasonUnsupportedStack && k.Stack == StackGnuTLS {
			found = v == 1
		}
	}
	if !found {
		t.Errorf("gnutls-cli is not counted once as unobserved: %v", a.Stats().Unobserved)
	}
	node.Process.Kill()
	node.Wait()
	procs.Sweep()
	a.drain()
	if _, ok := a.Instrumented()[nodeCopy]; ok {
		t.Errorf("the node copy's probes stayed after its exit")
	}
	if a.Instrumented()[lib] != inst[lib] {
		t.Errorf("libssl's users went from %d to %d with no libssl user gone", inst[lib], a.Instrumented()[lib])
	}
}

// TestAttachAtExec: a program started after the attacher is instrumented
// from its exec event, before its TLS starts.
func TestAttachAtExec(t *testing.T) {
	c := newCounters(t)
	b := buildGo(t, "gotlscount", goToolchains[0])
	procs := identity.NewResolver("/proc", "test")
	a := newTestAttacher(t, c.progs, procs, []string{})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	g := startGated(t, b.stripped, "-n", "7")
	// What the exec watcher does for every exec.
	procs.RefreshExec(uint32(g.cmd.Process.Pid), "", nil, 0)
	a.drain()
	if a.Instrumented()[b.stripped] != 1 {
		t.Fatalf("not instrumented at exec: %v", a.Instrumented())
	}
	before := c.get(t)
	c.watch(t, g.cmd.Process.Pid)
	_, writes := g.run(t)
	if got := c.get(t)["go_write"] - before["go_write"]; got != writes {
		t.Fatalf("%d writes counted, want %d", got, writes)
	}
}

// TestAttachBounds: past the probes bound a file is not instrumented and
// its processes are counted unobserved with reason limit.
func TestAttachBounds(t *testing.T) {
	c := newCounters(t)
	b := buildGo(t, "gotlscount", goToolchains[0])
	g := startGated(t, b.full, "-n", "1")
	cfg := DefaultAttachConfig()
	cfg.HostLibraries, cfg.MaxProbes = []string{}, 3
	procs := identity.NewResolver("/proc", "test")
	a, err := NewAttacher(cfg, c.progs, procs, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Start()
	if s := a.Stats(); s.Probes > 3 {
		t.Fatalf("%d probes attached, bound 3", s.Probes)
	}
	if _, ok := a.Instrumented()[b.full]; ok {
		t.Fatalf("%s instrumented past the bound", b.full)
	}
	name := procs.Lookup(uint32(g.cmd.Process.Pid)).ServiceName
	if n := a.Stats().Unobserved[UnobservedKey{Service: name, Stack: StackGo, Reason: ReasonLimit}]; n != 1 {
		t.Fatalf("unobserved{%s, limit} = %d, want 1: %v", name, n, a.Stats().Unobserved)
	}
}

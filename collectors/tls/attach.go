package tls

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/otelbee/otelbee/process/identity"
)

// Programs are the BPF programs a uprobe set runs. A nil program leaves its
// probes out (the _ex variants, Go's return probes).
type Programs struct {
	// OpenSSL: an entry probe saves the call's arguments per thread; the
	// uretprobe shared by a function and its _ex variant captures.
	SSLReadEntry, SSLReadExEntry, SSLReadReturn    *ebpf.Program
	SSLWriteEntry, SSLWriteExEntry, SSLWriteReturn *ebpf.Program
	// SSLHandshakeEntry marks the process before its handshake's
	// ciphertext (SSL_connect and SSL_accept call SSL_do_handshake);
	// with SSLHandshakeReturn, the handshake's socket calls give the SSL*
	// its descriptor.
	SSLHandshakeEntry, SSLHandshakeReturn *ebpf.Program
	// Go crypto/tls: an entry probe, and one probe per return instruction
	// (uretprobes would corrupt moving goroutine stacks).
	GoReadEntry, GoReadReturn, GoWriteEntry, GoWriteReturn *ebpf.Program
	// GoReadCopy captures at Read's copy of the plaintext (Func.Copy), in
	// place of the return probes.
	GoReadCopy *ebpf.Program
	// GoReadCopySlot captures at the copy too, with the receiver read from
	// its stack slot (Func.CopyRecvSlot), in place of Read's entry probe
	// as well.
	GoReadCopySlot *ebpf.Program
	// Multi: the programs were loaded for uprobe_multi links
	// (ebpf.AttachTraceUprobeMulti), which the kernel removes concurrently;
	// otherwise each probe is a perf-event uprobe.
	Multi bool
	// Cookies: the kernel has bpf_get_attach_cookie (5.15+), so each
	// OpenSSL link carries its file's gate slot (Kernel.SetFileGate) and
	// the entry programs act only once the file's last link is on. Without
	// it (5.10) only the link order limits the window.
	Cookies bool
	// Off are the stacks whose programs failed to load: their files are
	// not instrumented and their processes count as unobserved
	// (ReasonProgramFailed); the other stacks run.
	Off map[Stack]bool
}

// Attach-time reasons: a file that could be instrumented but was not. With
// the discovery Reasons they make the reason attribute of
// otelbee.tls.processes.unobserved.
const (
	ReasonLimit        Reason = "limit"         // the instrumented-files or probes bound is reached
	ReasonAttachFailed Reason = "attach_failed" // the kernel refused a uprobe
	// ReasonProgramFailed: the stack's BPF programs did not load (logged
	// once at start, not per file).
	ReasonProgramFailed Reason = "program_failed"
)

// UnobservedReasons lists every reason a process's TLS is counted
// unobserved for.
var UnobservedReasons = append(slices.Clone(Reasons), ReasonLimit, ReasonAttachFailed, ReasonProgramFailed)

// FileSlots is the size of the kernel's table of OpenSSL file gates
// (bpf/l7/tls.h TLS_FILE_SLOTS); slot 0 means a link without a gate.
const FileSlots = 256

// attachOrder is the order a file's links are made in: the probes that
// finish a call (uretprobes, Go's return and copy probes, which act only
// on what an entry saved) before the entries, so that no entry is on
// without the probe that completes its call. With the gates (Cookies, Go's
// offsets) nothing acts before the last link anyway; this is what is left
// on kernels without attach cookies.
func attachOrder(probes []probe, p *Programs) []probe {
	finisher := func(pr probe) bool {
		return pr.ret || (pr.prog != nil && (pr.prog == p.GoReadReturn || pr.prog == p.GoReadCopy || pr.prog == p.GoWriteReturn))
	}
	out := make([]probe, 0, len(probes))
	for _, pr := range probes {
		if finisher(pr) {
			out = append(out, pr)
		}
	}
	for _, pr := range probes {
		if !finisher(pr) {
			out = append(out, pr)
		}
	}
	return out
}

// probe is one uprobe of a plan.
type probe struct {
	offset uint64
	prog   *ebpf.Program
	ret    bool // uretprobe
}

// plan lists the probes a target needs with the given programs.
func plan(t *Target, p *Programs) []probe {
	var out []probe
	add := func(off uint64, prog *ebpf.Program, ret bool) {
		if prog != nil {
			out = append(out, probe{offset: off, prog: prog, ret: ret})
		}
	}
	switch t.Stack {
	case StackOpenSSL:
		for _, fn := range []struct {
			name, inner string
			entry, exit *ebpf.Program
			innerEntry  *ebpf.Program
		}{
			{"SSL_read", sslReadInner, p.SSLReadEntry, p.SSLReadReturn, p.SSLReadExEntry},
			{"SSL_read_ex", sslReadInner, p.SSLReadExEntry, p.SSLReadReturn, p.SSLReadExEntry},
			{"SSL_write", sslWriteInner, p.SSLWriteEntry, p.SSLWriteReturn, p.SSLWriteExEntry},
			{"SSL_write_ex", sslWriteInner, p.SSLWriteExEntry, p.SSLWriteReturn, p.SSLWriteExEntry},
		} {
			if in := t.Func(fn.inner); in != nil && fn.innerEntry != nil {
				// Both exported functions call it once per call: it is
				// probed, once, in their place (probepoint.go).
				if fn.name == "SSL_read" || fn.name == "SSL_write" {
					add(in.EntryProbe(), fn.innerEntry, false)
					add(in.EntryProbe(), fn.exit, true)
				}
				continue
			}
			f := t.Func(fn.name)
			if f == nil || fn.entry == nil {
				continue // an _ex variant the library lacks (1.1.0) or not wanted
			}
			add(f.EntryProbe(), fn.entry, false)
			add(f.EntryProbe(), fn.exit, true)
		}
		if f := t.Func("SSL_do_handshake"); f != nil && len(out) > 0 {
			add(f.EntryProbe(), p.SSLHandshakeEntry, false)
			add(f.EntryProbe(), p.SSLHandshakeReturn, true)
		}
	case StackGo:
		for _, fn := range []struct {
			name        string
			entry, exit *ebpf.Program
		}{{goRead, p.GoReadEntry, p.GoReadReturn}, {goWrite, p.GoWriteEntry, p.GoWriteReturn}} {
			f := t.Func(fn.name)
			if f == nil || fn.entry == nil {
				continue
			}
			if fn.name == goRead && f.Copy != 0 && f.CopyRecvSlot != 0 && p.GoReadCopySlot != nil {
				add(f.Copy, p.GoReadCopySlot, false) // the one probe of Read
				continue
			}
			add(f.EntryProbe(), fn.entry, false)
			if f.Copy != 0 && fn.name == goRead && p.GoReadCopy != nil {
				add(f.Copy, p.GoReadCopy, false)
				continue
			}
			if fn.exit != nil {
				for _, r := range f.Returns {
					add(r, fn.exit, false)
				}
			}
		}
	}
	return out
}

// AttachConfig bounds and paces an Attacher.
type AttachConfig struct {
	ProcRoot  string // "/proc"
	MaxFiles  int    // files instrumented at once
	MaxProbes int    // uprobes at once, over all files
	// Rescan is how often every process is looked at again: libraries a
	// process loads long after its exec, and events lost.
	Rescan time.Duration
	// HostLibraries are patterns (filepath.Glob, in the host's root) of
	// TLS libraries and executables instrumented from the start whether or
	// not a process maps them, so that a program loading one at run time
	// (Python's ssl module) or living for a few milliseconds (a curl, a
	// node script) is seen from its first call; nil: the usual libssl
	// locations and node, empty: none.
	HostLibraries []string
	// Filter, when set, says which processes are looked at (by pid and
	// command name); nil: all.
	Filter func(pid int, comm string) bool
	// BetweenLinks, when set (tests), is called between a file's links,
	// made of them on: it can widen the window in which only some are.
	BetweenLinks func(path string, made, of int)
}

// DefaultHostLibraries are where distributions keep libssl, and node (its
// OpenSSL built in), the usual short-lived HTTPS clients' stacks.
var DefaultHostLibraries = []string{
	"/usr/lib/*-linux-gnu/libssl.so.*", "/usr/lib64/libssl.so.*", "/usr/lib/libssl.so.*", "/lib/*-linux-gnu/libssl.so.*",
	"/usr/bin/node", "/usr/local/bin/node",
}

// DefaultAttachConfig is what the agent uses unless told otherwise.
func DefaultAttachConfig() AttachConfig {
	return AttachConfig{ProcRoot: "/proc", MaxFiles: 64, MaxProbes: 1024, Rescan: time.Minute}
}

// Kernel is what the kernel side keeps of the attacher's work.
type Kernel interface {
	// SetGoFD gives the socket-descriptor offsets of an instrumented Go
	// executable (read by the executable's identity), and where its Read
	// keeps its receiver at the copy (Func.CopyRecvSlot; 0 none);
	// DeleteGoFD forgets them when its probes go. The attacher calls SetGoFD
	// after the file's last link and DeleteGoFD before its first is closed:
	// they are what lets the Go programs act on the file.
	SetGoFD(id FileID, fd *GoFD, readRecvSlot uint64) error
	DeleteGoFD(id FileID)
	// SetFileGate opens (after the last link) or closes (before the first
	// link is closed) the gate of an OpenSSL file's links, whose attach
	// cookie is slot (Programs.Cookies).
	SetFileGate(slot uint32, open bool) error
	// SetProcess says whether pid maps an instrumented file: its
	// handshake's ciphertext is then held for the plaintext to come, not
	// counted as unobserved TLS.
	SetProcess(pid int, instrumented bool)
}

// AttachStats is what an Attacher did, for self-metrics.
type AttachStats struct {
	Files, Probes int // instrumented now
	// Attached and Detached count uprobe sets (files) over the agent's life.
	Attached, Detached uint64
	// EventsDropped counts exec/exit events the queue had no room for (the
	// rescan repairs what they missed).
	EventsDropped uint64
	// Unobserved counts processes whose TLS cannot be read, per service
	// and reason, since the start.
	Unobserved map[UnobservedKey]uint64
}

// UnobservedKey is one series of otelbee.tls.processes.unobserved.
type UnobservedKey struct {
	Service, Namespace string
	Stack              Stack
	Reason             Reason
}

// maxUnobservedSeries bounds UnobservedKey series; past it a service is
// counted under OverflowService.
const maxUnobservedSeries = 1024

// OverflowService names the services past the series bound.
const OverflowService = "otelbee.overflow"

// maxLogged bounds the files remembered as logged.
const maxLogged = 4096

// eventQueue bounds the exec/exit events waiting for the attacher.
const eventQueue = 8192

// releasedQueue is the capacity above which an emptied queue or drain
// buffer is dropped rather than kept for the next burst.
const releasedQueue = 256

// execRescans are the delays after an exec at which a process is scanned
// again: its shared libraries are mapped by the dynamic linker after the
// exec event, and dlopen'ed ones on first use.
var execRescans = []time.Duration{0, 100 * time.Millisecond, time.Second, 5 * time.Second}

// Attacher keeps one uprobe set per TLS file (device and inode), whatever
// the number of processes mapping it: a set is attached when the first
// process mapping the file is found (at start, at exec) and removed when the
// last one exits. Probes are attached for every process (the kernel installs
// them in any process that maps the file, now or later); the kernel side
// filters which connections are observed.
type Attacher struct {
	cfg    AttachConfig
	progs  Programs
	log    *slog.Logger
	disc   *Discoverer
	procs  *identity.Resolver // service names of unobserved processes; nil: the command name
	kernel Kernel
	// attach makes one uprobe with its attach cookie (0: none); tests
	// replace it.
	attach func(path string, p probe, cookie uint64) (io.Closer, error)

	mu         sync.Mutex
	files      map[FileID]*attached
	pids       map[int]*procFiles
	probes     int
	logged     map[FileID]bool
	unobserved map[UnobservedKey]uint64
	stats      AttachStats
	queue      scanQueue
	seq        uint64          // last scan queued
	due        []scan          // drain's buffer (Run's goroutine only)
	slots      [FileSlots]bool // OpenSSL gate slots in use (0 never)
	wake       chan struct{}
	done       chan struct{} // closed by Close: Run returns
	unsub      func()
	closed     bool
}

// attached is the uprobe set of one file.
type attached struct {
	target *Target
	slot   uint32 // the OpenSSL links' gate (cookie); 0 none
	links  []io.Closer
	users  int  // processes mapping it
	pinned bool // a host library kept from the start
}

// procFiles is what one process maps.
type procFiles struct {
	files []FileID          // instrumented files it holds a reference on
	seen  map[FileID]Reason // files counted unobserved for it
}

// scan is one queued piece of work: look at pid at due, or release it.
type scan struct {
	pid  int
	due  time.Time
	seq  uint64 // orders scans due at the same time as they were queued
	exit bool
}

// scanQueue is a min-heap of scans by due time. A burst of execs queues
// four scans each (execRescans) and wakes the attacher for every one: the
// heap takes and hands out each in O(log n) without allocating, where
// filtering a slice on every wake allocated and copied the whole queue
// (thousands of entries, a thousand times a second in a burst). Written
// out rather than with container/heap, whose any-typed Push and Pop
// allocate a box for every scan.
type scanQueue []scan

func (q scanQueue) less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].seq < q[j].seq
}

func (q *scanQueue) push(s scan) {
	*q = append(*q, s)
	h := *q
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

// pop removes and returns the earliest scan; q is not empty.
func (q *scanQueue) pop() scan {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		least, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h.less(l, least) {
			least = l
		}
		if r < len(h) && h.less(r, least) {
			least = r
		}
		if least == i {
			break
		}
		h[i], h[least] = h[least], h[i]
		i = least
	}
	*q = h
	return top
}

// NewAttacher returns an attacher; Start begins its work.
func NewAttacher(cfg AttachConfig, progs Programs, procs *identity.Resolver, kernel Kernel, log *slog.Logger) (*Attacher, error) {
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.HostLibraries == nil {
		cfg.HostLibraries = DefaultHostLibraries
	}
	d, err := NewDiscoverer(cfg.ProcRoot, NewCache(4096))
	if err != nil {
		return nil, err
	}
	attach := attachUprobe
	if progs.Multi {
		attach = attachUprobeMulti
	}
	return &Attacher{cfg: cfg, progs: progs, log: log, disc: d, procs: procs, kernel: kernel, attach: attach,
		files: map[FileID]*attached{}, pids: map[int]*procFiles{}, logged: map[FileID]bool{},
		unobserved: map[UnobservedKey]uint64{}, wake: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

func attachUprobe(path string, p probe, cookie uint64) (io.Closer, error) {
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return nil, err
	}
	opts := &link.UprobeOptions{Address: p.offset, Cookie: cookie}
	if p.ret {
		return ex.Uretprobe("", p.prog, opts)
	}
	return ex.Uprobe("", p.prog, opts)
}

// attachUprobeMulti makes the probe a uprobe_multi link of one address.
func attachUprobeMulti(path string, p probe, cookie uint64) (io.Closer, error) {
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return nil, err
	}
	opts := &link.UprobeMultiOptions{Addresses: []uint64{p.offset}}
	if cookie != 0 {
		opts.Cookies = []uint64{cookie}
	}
	if p.ret {
		return ex.UretprobeMulti(nil, p.prog, opts)
	}
	return ex.UprobeMulti(nil, p.prog, opts)
}

// Start subscribes to execs and exits, instruments the host's libraries and
// every process running now. It fails only when /proc cannot be listed.
func (a *Attacher) Start() error {
	if a.procs != nil {
		a.unsub = a.procs.Subscribe(a.event)
	}
	a.pinHostLibraries()
	pids, err := a.disc.PIDs()
	if err != nil {
		return err
	}
	self := os.Getpid()
	for _, pid := range pids {
		if pid != self {
			a.scanPID(pid)
		}
	}
	return nil
}

// event takes an exec or exit from the resolver; it only queues.
func (a *Attacher) event(e identity.Event) {
	now := time.Now()
	a.mu.Lock()
	switch e.Kind {
	case identity.ProcessExec:
		for _, d := range execRescans {
			a.enqueue(scan{pid: int(e.PID), due: now.Add(d)})
		}
	case identity.ProcessExit:
		a.enqueue(scan{pid: int(e.PID), due: now, exit: true})
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// enqueue adds s; a.mu is held.
func (a *Attacher) enqueue(s scan) {
	if len(a.queue) >= eventQueue {
		a.stats.EventsDropped++
		return
	}
	a.seq++
	s.seq = a.seq
	a.queue.push(s)
}

// Run works through the queue and rescans periodically until ctx ends; then
// it removes the probes (Close), or until Close.
func (a *Attacher) Run(ctx context.Context) {
	rescan := time.NewTicker(max(a.cfg.Rescan, time.Second))
	defer rescan.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := a.drain()
		if next.IsZero() {
			timer.Reset(time.Hour)
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			// The agent is shutting down: the probes' removal (a grace
			// period each) starts now, overlapping the final export, rather
			// than after it, past the shutdown deadline.
			a.Close()
			return
		case <-a.done:
			return
		case <-a.wake:
		case <-timer.C:
		case <-rescan.C:
			a.Rescan()
		}
	}
}

// drain does the queued work that is due and returns when the next is.
func (a *Attacher) drain() (next time.Time) {
	now := time.Now()
	due := a.due[:0]
	a.mu.Lock()
	for len(a.queue) > 0 && !a.queue[0].due.After(now) {
		due = append(due, a.queue.pop())
	}
	if len(a.queue) > 0 {
		next = a.queue[0].due
	} else if cap(a.queue) > releasedQueue {
		a.queue = nil // a burst's backing array goes back to the heap
	}
	a.mu.Unlock()
	for _, s := range due {
		if s.exit {
			a.release(s.pid)
		} else {
			a.scanPID(s.pid)
		}
	}
	if cap(due) > releasedQueue {
		due = nil
	}
	a.due = due[:0]
	return next
}

// Rescan looks at every process again and releases those gone.
func (a *Attacher) Rescan() {
	pids, err := a.disc.PIDs()
	if err != nil {
		a.log.Warn("listing processes for TLS", "error", err)
		return
	}
	alive := map[int]bool{}
	self := os.Getpid()
	for _, pid := range pids {
		alive[pid] = true
		if pid != self {
			a.scanPID(pid)
		}
	}
	a.mu.Lock()
	var gone []int
	for pid := range a.pids {
		if !alive[pid] {
			gone = append(gone, pid)
		}
	}
	a.mu.Unlock()
	for _, pid := range gone {
		a.release(pid)
	}
}

// pinHostLibraries instruments the host's libssl files for good.
func (a *Attacher) pinHostLibraries() {
	// The host's root: through init's when the agent runs in a container
	// that shares the host's processes, else the agent's own.
	root := filepath.Join(a.cfg.ProcRoot, "1", "root")
	if _, err := os.Stat(filepath.Join(root, "usr")); err != nil {
		root = "/"
	}
	for _, pattern := range a.cfg.HostLibraries {
		paths, _ := filepath.Glob(filepath.Join(root, pattern))
		for _, open := range paths {
			name, _ := filepath.Rel(root, open)
			t := a.disc.cache.inspect(open, filepath.Join("/", name))
			if !t.Instrumentable() {
				continue
			}
			a.mu.Lock()
			if f, ok := a.files[t.ID]; ok {
				f.pinned = true
			} else if a.instrumentLocked(t, open) == ReasonNone {
				a.files[t.ID].pinned = true
			}
			a.mu.Unlock()
		}
	}
}

// scanPID finds what pid maps now and moves its references to that.
func (a *Attacher) scanPID(pid int) {
	p, err := a.disc.Process(pid)
	if err != nil {
		return // gone already, or a kernel thread
	}
	if a.cfg.Filter != nil && !a.cfg.Filter(pid, p.Comm) {
		return
	}
	if len(p.Targets) > 0 && a.procs != nil {
		// Known to the resolver, its sweep announces the exit.
		a.procs.Lookup(uint32(pid))
	}
	a.scanProcess(pid, p)
}

// scanProcess moves pid's references to the files p maps.
func (a *Attacher) scanProcess(pid int, p *Process) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	pf := a.pids[pid]
	if pf == nil {
		pf = &procFiles{}
	}
	var files []FileID
	var unseen []*Target
	var reasons []Reason
	for i, t := range p.Targets {
		reason := t.Reason
		if t.Instrumentable() {
			if _, ok := a.files[t.ID]; !ok {
				reason = a.instrumentLocked(t, p.Open[i])
			}
			if reason == ReasonNone {
				files = append(files, t.ID)
				continue
			}
		}
		unseen = append(unseen, t)
		reasons = append(reasons, reason)
	}
	for i, t := range unseen {
		// A library of another stack beside an instrumented one is most
		// likely not the one the process speaks TLS with (curl maps GnuTLS
		// through librtmp, and uses libssl): only a process none of whose
		// TLS is instrumented, or whose own executable is not, counts.
		if len(files) > 0 && !t.Static && t.Stack != StackGo {
			continue
		}
		a.unobservedLocked(pid, p.Comm, pf, t, reasons[i])
	}
	// Take the new references before dropping the old ones, so a file the
	// process still maps keeps its probes.
	for _, id := range files {
		a.files[id].users++
	}
	for _, id := range pf.files {
		a.unrefLocked(id)
	}
	if a.kernel != nil && (len(files) > 0) != (len(pf.files) > 0) {
		a.kernel.SetProcess(pid, len(files) > 0)
	}
	pf.files = files
	if len(files) == 0 && len(pf.seen) == 0 {
		delete(a.pids, pid)
		return
	}
	a.pids[pid] = pf
}

// release drops an exited process's references.
func (a *Attacher) release(pid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	pf, ok := a.pids[pid]
	if !ok {
		// The kernel marks some processes itself before this attacher has
		// seen them (an OpenSSL handshake, a new process of an instrumented
		// Go executable): a process gone before its scan is unmarked too,
		// so the mark neither outlives it nor fills the map.
		if a.kernel != nil {
			a.kernel.SetProcess(pid, false)
		}
		return
	}
	for _, id := range pf.files {
		a.unrefLocked(id)
	}
	if a.kernel != nil && len(pf.files) > 0 {
		a.kernel.SetProcess(pid, false)
	}
	delete(a.pids, pid)
}

func (a *Attacher) unrefLocked(id FileID) {
	f, ok := a.files[id]
	if !ok {
		return
	}
	f.users--
	if f.users > 0 || f.pinned {
		return
	}
	a.detachLocked(id, f)
}

func (a *Attacher) detachLocked(id FileID, f *attached) {
	// The programs stop acting on the file before any of its links goes, so
	// no call is seen in part.
	a.closeGateLocked(id, f)
	closeAll(f.links)
	a.probes -= len(f.links)
	delete(a.files, id)
	a.stats.Detached++
	a.log.Debug("TLS probes removed: no process maps the file any more", "path", f.target.Path)
}

// closeGateLocked stops the file's programs (Go: its offsets; OpenSSL:
// its gate) and frees its slot.
func (a *Attacher) closeGateLocked(id FileID, f *attached) {
	if a.kernel != nil {
		if f.target.Stack == StackGo {
			a.kernel.DeleteGoFD(id)
		}
		if f.slot != 0 {
			if err := a.kernel.SetFileGate(f.slot, false); err != nil {
				a.log.Warn("closing a TLS file's gate", "path", f.target.Path, "error", err)
			}
		}
	}
	a.slots[f.slot] = false
	f.slot = 0
}

// freeSlotLocked returns a free gate slot, 0 if none.
func (a *Attacher) freeSlotLocked() uint32 {
	for i := 1; i < len(a.slots); i++ {
		if !a.slots[i] {
			return uint32(i)
		}
	}
	return 0
}

// closeAll closes links concurrently.
func closeAll(links []io.Closer) {
	var wg sync.WaitGroup
	for _, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Close()
		}()
	}
	wg.Wait()
}

// instrumentLocked attaches t's uprobe set through open, or says why not.
func (a *Attacher) instrumentLocked(t *Target, open string) Reason {
	if a.progs.Off[t.Stack] {
		return ReasonProgramFailed // logged once when the programs failed
	}
	probes := attachOrder(plan(t, &a.progs), &a.progs)
	if len(probes) == 0 {
		return ReasonNone // nothing wanted of this stack: not unobserved either
	}
	f := &attached{target: t}
	gated := t.Stack == StackOpenSSL && a.progs.Cookies && a.kernel != nil
	if gated {
		f.slot = a.freeSlotLocked()
	}
	if len(a.files) >= a.cfg.MaxFiles || a.probes+len(probes) > a.cfg.MaxProbes {
		a.logOnceLocked(t, ReasonLimit, fmt.Sprintf("%d files and %d probes instrumented, bounds %d and %d",
			len(a.files), a.probes, a.cfg.MaxFiles, a.cfg.MaxProbes))
		return ReasonLimit
	}
	if gated && f.slot == 0 {
		a.logOnceLocked(t, ReasonLimit, fmt.Sprintf("every one of the %d OpenSSL file gates in use", FileSlots-1))
		return ReasonLimit
	}
	a.slots[f.slot] = f.slot != 0
	fail := func(reason Reason, detail string) Reason {
		// Nothing acted on the file yet (its gate was never opened).
		a.slots[f.slot] = false
		closeAll(f.links)
		a.logOnceLocked(t, reason, detail)
		return reason
	}
	start := time.Now()
	for i, p := range probes {
		if i > 0 && a.cfg.BetweenLinks != nil {
			a.cfg.BetweenLinks(t.Path, i, len(probes))
		}
		l, err := a.attach(open, p, uint64(f.slot))
		if err != nil {
			return fail(ReasonAttachFailed, fmt.Sprintf("attaching at %#x: %v", p.offset, err))
		}
		f.links = append(f.links, l)
	}
	// Every link is on: the programs may act on the file now (Go: its
	// offsets are what every Go program looks up first).
	if a.kernel != nil {
		if t.Stack == StackGo {
			var slot uint64
			if fn := t.Func(goRead); fn != nil {
				slot = fn.CopyRecvSlot
			}
			if err := a.kernel.SetGoFD(t.ID, t.FD, slot); err != nil {
				return fail(ReasonAttachFailed, err.Error())
			}
		}
		if f.slot != 0 {
			if err := a.kernel.SetFileGate(f.slot, true); err != nil {
				return fail(ReasonAttachFailed, fmt.Sprintf("opening the file's gate: %v", err))
			}
		}
	}
	a.files[t.ID] = f
	a.probes += len(f.links)
	a.stats.Attached++
	a.log.Info("TLS plaintext instrumented", "path", t.Path, "stack", t.Stack, "version", t.Version, "probes", len(f.links),
		"took", time.Since(start).Round(time.Microsecond))
	return ReasonNone
}

// unobservedLocked counts pid once per file whose TLS it cannot be read in.
func (a *Attacher) unobservedLocked(pid int, comm string, pf *procFiles, t *Target, reason Reason) {
	if pf.seen == nil {
		pf.seen = map[FileID]Reason{}
	}
	if _, ok := pf.seen[t.ID]; ok {
		return
	}
	pf.seen[t.ID] = reason
	k := UnobservedKey{Service: comm, Stack: t.Stack, Reason: reason}
	if a.procs != nil {
		id := a.procs.Lookup(uint32(pid))
		k.Service, k.Namespace = id.ServiceName, id.ServiceNamespace
	}
	if _, ok := a.unobserved[k]; !ok && len(a.unobserved) >= maxUnobservedSeries {
		k.Service, k.Namespace = OverflowService, ""
	}
	a.unobserved[k]++
	if reason != ReasonProgramFailed { // logged once for the stack at start
		a.logOnceLocked(t, reason, t.Detail, "pid", pid, "service", k.Service)
	}
}

func (a *Attacher) logOnceLocked(t *Target, reason Reason, detail string, kv ...any) {
	if a.logged[t.ID] || len(a.logged) >= maxLogged {
		return
	}
	a.logged[t.ID] = true
	a.log.Warn("TLS plaintext not observable in this file: its processes' HTTPS is counted as unobserved",
		append([]any{"path", t.Path, "stack", t.Stack, "version", t.Version, "reason", reason, "detail", detail}, kv...)...)
}

// Stats returns the counts so far.
func (a *Attacher) Stats() AttachStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.Files, s.Probes = len(a.files), a.probes
	s.Unobserved = make(map[UnobservedKey]uint64, len(a.unobserved))
	for k, v := range a.unobserved {
		s.Unobserved[k] = v
	}
	return s
}

// Instrumented lists the files with probes now, by path, and their users.
func (a *Attacher) Instrumented() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for _, f := range a.files {
		out[f.target.Path] = f.users
	}
	return out
}

// Close removes every probe. Idempotent.
func (a *Attacher) Close() error {
	if a.unsub != nil {
		a.unsub()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	close(a.done)
	// Each uprobe's removal waits for the kernel's grace period, one after
	// another (~50 ms each here): hundreds of them would outlast the
	// agent's shutdown deadline. They are closed in the background; an
	// agent that exits first has the kernel remove them with its files.
	var all []io.Closer
	for id, f := range a.files {
		// detachLocked closes the file's gate first; the links go after.
		all = append(all, f.links...)
		f.links = nil
		a.detachLocked(id, f)
	}
	go closeAll(all)
	a.probes = 0
	a.pids = map[int]*procFiles{}
	return nil
}

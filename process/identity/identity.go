// Package identity turns a process id into the service identity that labels
// everything the agent reports about that process: service.name from the
// process's own OTEL_SERVICE_NAME (else its executable name), process and
// container attributes. It reads /proc once per process and caches the
// answer; collectors look processes up when they report, never per event.
package identity

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// Attribute keys (OpenTelemetry semantic conventions).
const (
	KeyServiceName       = attribute.Key("service.name")
	KeyServiceNamespace  = attribute.Key("service.namespace")
	KeyServiceInstanceID = attribute.Key("service.instance.id")
	KeyProcessPID        = attribute.Key("process.pid")
	KeyExecutableName    = attribute.Key("process.executable.name")
	KeyContainerID       = attribute.Key("container.id")
)

// UnknownService names traffic that no process can be credited with, such as
// a retransmit on a socket opened before the agent started, seen from a timer.
const UnknownService = "unknown_service"

// Process is the identity of one process.
type Process struct {
	PID              uint32
	ServiceName      string
	ServiceNamespace string
	ExecutableName   string
	ContainerID      string
	ServiceVersion   string // from a ContainerSource
	instanceID       string // from a ContainerSource; "" is host:pid
	containerAttrs   []attribute.KeyValue
	startTime        uint64 // clock ticks since boot; tells a reused pid apart
	attrs            []attribute.KeyValue
	// resource: the program's own OTEL_RESOURCE_ATTRIBUTES (or, for a
	// forked child, its parent's), without service.name/namespace.
	resource []attribute.KeyValue
	// envService: the service name came from the environment (the
	// process's own or, for a forked child, its parent's).
	envService bool
	// otelEnv is what named the process in that environment: its
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES entries, kept
	// across agent restarts (Persist).
	otelEnv []byte

	// provisionalUntil is set when the environment read empty: a process
	// caught between exec's switch of address space and the kernel writing
	// the new stack shows its new executable but no environment yet, so
	// OTEL_SERVICE_NAME would be missed for good. Such an identity is read
	// again on lookup until this time.
	provisionalUntil time.Time
	// unresolved: read from /proc without its environment, because the
	// process was gone (or a zombie, or inside exec) and no exec event had
	// brought the environment it was started with.
	unresolved bool

	ppid uint32 // the parent's pid when read
	// owner: the id its metric series are keyed by (Owner); 0 not yet
	// decided. inst: the folded instance it belongs to. Both under
	// Resolver.mu.
	owner uint32
	inst  *instance
}

// Attributes are the identity attributes, to be put on data points; the
// exporters move them into one resource per service.
func (p *Process) Attributes() []attribute.KeyValue { return p.attrs }

func (p *Process) buildAttributes(host string, base []attribute.KeyValue) {
	p.attrs = []attribute.KeyValue{KeyServiceName.String(p.ServiceName)}
	if kv, ok := resourceAttribute(base, p.resource); ok {
		p.attrs = append(p.attrs, kv)
	}
	if p.ServiceNamespace != "" {
		p.attrs = append(p.attrs, KeyServiceNamespace.String(p.ServiceNamespace))
	}
	if p.ServiceVersion != "" {
		p.attrs = append(p.attrs, KeyServiceVersion.String(p.ServiceVersion))
	}
	if p.PID != 0 || p.instanceID != "" {
		instance := p.instanceID
		if instance == "" {
			instance = host + ":" + strconv.FormatUint(uint64(p.PID), 10)
		}
		p.attrs = append(p.attrs, KeyServiceInstanceID.String(instance))
	}
	if p.PID != 0 {
		p.attrs = append(p.attrs, KeyProcessPID.Int64(int64(p.PID)))
	}
	if p.ExecutableName != "" {
		p.attrs = append(p.attrs, KeyExecutableName.String(p.ExecutableName))
	}
	if p.ContainerID != "" {
		p.attrs = append(p.attrs, KeyContainerID.String(p.ContainerID))
	}
	p.attrs = append(p.attrs, p.containerAttrs...)
}

// Resolver caches process identities by pid.
type Resolver struct {
	procRoot string
	host     string
	unknown  *Process
	// containers adds container metadata (SetContainerSource).
	containers containerSource

	// Retention is how long the identity of an exited process is kept:
	// its last series are still reported (and retired) after it is gone.
	// Set it before Run.
	Retention time.Duration
	// InstanceMode says which processes are one service instance in the
	// metrics (Owner). Set it before Run.
	InstanceMode InstanceMode
	// ReleaseMemory gives memory back to the system after a sweep forgot
	// a burst of processes (releaseAfter); nil: debug.FreeOSMemory. The
	// agent gives back its executable's pages the burst faulted in too.
	// Set it before Run.
	ReleaseMemory func()

	listeners listenCache
	cgroups   cgroupNames

	mu    sync.Mutex
	base  []attribute.KeyValue // SetResourceAttributes
	cache map[uint32]*Process
	dead  map[uint32]time.Time // when Sweep first found the pid gone
	// Folded instances, by what tells them apart and by owner id.
	instances map[foldKey]*instance
	byID      map[uint32]*instance
	nextID    uint32
	// peak is the largest the cache has been since its map was last
	// rebuilt: Go maps never give back their buckets, so after a burst of
	// short-lived processes the maps are copied into smaller ones.
	peak int

	subs subscribers

	// Late execs (SetExecProgress): a process looked up for the first time
	// that is gone already (a short-lived client whose traffic is handled
	// before its exec) waits for the exec watcher to bring its identity.
	execProgress                             atomic.Pointer[ExecProgress]
	refreshing                               atomic.Int32
	lateWaited, lateResolved, lateUnresolved atomic.Int64

	// The state file (Persist); stateMu is taken before mu.
	stateMu     sync.Mutex
	statePath   string
	stateLog    *slog.Logger
	saved       []byte // what was last written
	saveFailing bool
}

// NewResolver reads processes under procRoot (normally "/proc"). host goes
// into service.instance.id.
func NewResolver(procRoot, host string) *Resolver {
	unknown := &Process{ServiceName: UnknownService}
	unknown.buildAttributes(host, nil)
	return &Resolver{procRoot: procRoot, host: host, unknown: unknown, Retention: 5 * time.Minute,
		cache: map[uint32]*Process{}, dead: map[uint32]time.Time{},
		instances: map[foldKey]*instance{}, byID: map[uint32]*instance{}}
}

// Lookup returns the identity of pid (a thread-group id). A process that is
// gone before it was ever looked up keeps a pid-only identity, so its
// telemetry is still reported, under its executable's name if known.
func (r *Resolver) Lookup(pid uint32) *Process {
	if pid == 0 {
		return r.unknown
	}
	if isSynthetic(pid) {
		return r.lookupSynthetic(pid)
	}
	r.mu.Lock()
	p, ok := r.cache[pid]
	_, dead := r.dead[pid]
	r.mu.Unlock()
	if ok && !dead && (p.provisionalUntil.IsZero() || time.Now().After(p.provisionalUntil)) {
		return p
	}
	fresh := r.read(pid, !ok, "", nil, 0)
	if !ok && fresh.unresolved {
		if p := r.awaitExec(pid); p != nil {
			return p
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	existing, ok := r.cache[pid]
	_, dead = r.dead[pid]
	switch {
	case !ok:
		r.insert(pid, fresh)
		return fresh
	case dead:
		// The pid of a process gone within the retention: a new process
		// (forked, so no exec announced it) may have it now. Until then
		// the exited one keeps its identity for the series it left.
		if fresh.startTime != 0 && fresh.startTime != existing.startTime {
			r.leave(existing, time.Now())
			r.cache[pid] = fresh
			delete(r.dead, pid)
			return fresh
		}
		return existing
	case existing.provisionalUntil.IsZero() || fresh.startTime != existing.startTime:
		return existing
	case fresh.provisionalUntil.IsZero():
		r.leave(existing, time.Now())
		r.cache[pid] = fresh
		return fresh
	}
	return existing
}

// RefreshExec reads pid anew, as at exec a process takes a new executable
// and environment. execEnv is the environment it was exec'd with, as the
// kernel captured it before the program ran (nil: read it from /proc): a
// process may rewrite its environment area later, for its process title,
// and its forked children show the rewritten one.
//
// cgroup is the process's cgroup v2 id at exec (0: unknown): what finds its
// container when the process is gone before this reads /proc/<pid>/cgroup.
func (r *Resolver) RefreshExec(pid uint32, exe string, execEnv []byte, cgroup uint64) *Process {
	if pid == 0 {
		return r.unknown
	}
	r.refreshing.Add(1)
	defer r.refreshing.Add(-1)
	p := r.read(pid, true, exe, execEnv, cgroup)
	r.mu.Lock()
	r.insert(pid, p)
	delete(r.dead, pid)
	r.mu.Unlock()
	r.subs.publish(Event{Kind: ProcessExec, PID: pid, Process: p})
	return p
}

// insert caches p; r.mu is held.
func (r *Resolver) insert(pid uint32, p *Process) {
	r.leave(r.cache[pid], time.Now())
	r.cache[pid] = p
	if len(r.cache) > r.peak {
		r.peak = len(r.cache)
	}
}

// Alive reports whether pid still names the process that was cached.
func (r *Resolver) Alive(pid uint32) bool {
	if pid == 0 {
		return true
	}
	if isSynthetic(pid) {
		return r.aliveSynthetic(pid)
	}
	r.mu.Lock()
	p, ok := r.cache[pid]
	r.mu.Unlock()
	st, _, err := readStat(r.procRoot, pid)
	if err != nil {
		return false
	}
	return !ok || p.startTime == 0 || p.startTime == st
}

// Sweep finds cached processes that exited (or whose pid was reused),
// publishes an exit for each one newly found gone and returns them, so
// collectors can retire their series. Their identity stays cached for
// Retention, then is forgotten. Run calls it periodically.
func (r *Resolver) Sweep() []uint32 {
	r.mu.Lock()
	pids := make([]uint32, 0, len(r.cache)-len(r.dead))
	for pid := range r.cache {
		// Found gone before: only its retention is left to check.
		if _, ok := r.dead[pid]; !ok {
			pids = append(pids, pid)
		}
	}
	r.mu.Unlock()
	var dead []uint32
	for _, pid := range pids {
		if !r.Alive(pid) {
			dead = append(dead, pid)
		}
	}
	now := time.Now()
	var gone []Event
	r.mu.Lock()
	for _, pid := range dead {
		p, ok := r.cache[pid]
		if _, known := r.dead[pid]; ok && !known {
			r.dead[pid] = now
			gone = append(gone, Event{Kind: ProcessExit, PID: pid, Process: p})
		}
	}
	forgotten := 0
	for pid, since := range r.dead {
		if now.Sub(since) >= r.Retention {
			r.leave(r.cache[pid], now)
			delete(r.cache, pid)
			delete(r.dead, pid)
			forgotten++
		}
	}
	r.sweepInstances(now)
	shrunk := r.shrink()
	r.mu.Unlock()
	if forgotten >= releaseAfter || (shrunk && forgotten > 0) {
		if r.ReleaseMemory != nil {
			r.ReleaseMemory()
		} else {
			releaseMemory()
		}
	}
	pidsGone := make([]uint32, len(gone))
	for i, e := range gone {
		r.subs.publish(e)
		pidsGone[i] = e.PID
	}
	return pidsGone
}

// releaseAfter is how many identities forgotten in one sweep make it give
// the memory back to the system at once: a burst of short-lived processes
// (20,000 execs: +30 MB resident) otherwise stays resident for minutes,
// until the garbage collector's later cycles lower the heap goal and the
// runtime returns the pages. A burst forgotten over several sweeps (3,000
// curl processes over 40 s, swept every 7.5 s: ~600 a sweep) gives it back
// when the cache has come down to a quarter of its peak (shrink). A burst
// costs one extra collection.
const releaseAfter = 1024

// releaseMemory is debug.FreeOSMemory; tests count its calls.
var releaseMemory = debug.FreeOSMemory

// shrink copies the maps into new ones once the cache is a quarter of the
// size it reached, so a burst of short-lived processes leaves no memory
// behind, and says whether it did; r.mu is held.
func (r *Resolver) shrink() bool {
	const minPeak = 1024
	if r.peak < minPeak || len(r.cache) > r.peak/4 {
		return false
	}
	cache := make(map[uint32]*Process, len(r.cache))
	for pid, p := range r.cache {
		cache[pid] = p
	}
	dead := make(map[uint32]time.Time, len(r.dead))
	for pid, t := range r.dead {
		dead[pid] = t
	}
	r.cache, r.dead, r.peak = cache, dead, len(cache)
	return true
}

// Len is the number of cached processes.
func (r *Resolver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

func (r *Resolver) read(pid uint32, waitForExec bool, execExe string, execEnv []byte, cgroup uint64) *Process {
	dir := filepath.Join(r.procRoot, strconv.FormatUint(uint64(pid), 10))
	p := &Process{PID: pid}
	var ppid uint32
	p.startTime, ppid, _ = readStat(r.procRoot, pid)
	p.ppid = ppid
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		p.ExecutableName = filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	} else {
		// A kernel thread has no executable and no environment to wait
		// for. exe also needs ptrace access; comm is world-readable but
		// truncated to 15.
		waitForExec = false
		if comm, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
			p.ExecutableName = strings.TrimSpace(string(comm))
		}
	}
	if p.ExecutableName == "" {
		// The process is gone (no /proc entry left): the name its exec
		// event carried.
		p.ExecutableName = execExe
	}
	if execEnv != nil {
		p.ServiceName, p.ServiceNamespace = serviceFromEnviron(execEnv)
		p.resource = resourceFromEnviron(execEnv)
		p.otelEnv = otelVars(execEnv)
	} else if env, err := readEnviron(dir, waitForExec); err == nil {
		p.ServiceName, p.ServiceNamespace = serviceFromEnviron(env)
		p.resource = resourceFromEnviron(env)
		p.otelEnv = otelVars(env)
		if len(env) == 0 {
			p.provisionalUntil = time.Now().Add(provisionalFor)
			// A kernel thread (kthreadd's child) has no environment.
			p.unresolved = pid != 2 && ppid != 2
		}
	} else {
		p.unresolved = true
	}
	p.envService = p.ServiceName != ""
	if !p.envService && execEnv == nil {
		r.inherit(p, ppid)
	}
	if cg, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		p.ContainerID = ContainerIDFromCgroup(cg)
	} else if cgroup != 0 {
		p.ContainerID = r.cgroups.containerID(cgroup)
	}
	r.applyContainer(p)
	if p.ServiceName == "" {
		p.ServiceName = p.ExecutableName
	}
	if p.ServiceName == "" {
		p.ServiceName = UnknownService
	}
	p.buildAttributes(r.host, r.resourceAttrs())
	return p
}

// lateExecWait bounds how long a lookup waits for the exec watcher.
const lateExecWait = time.Second

// ExecProgress is the exec watcher's progress through its events, in
// bytes of its ring buffer: Pending is what it has not read yet, Handled
// what it has read and handled (RefreshExec returned) so far.
type ExecProgress interface {
	Pending() int
	Handled() uint64
}

// SetExecProgress tells the resolver how far the exec watcher is (nil: no
// watcher, any more). A process's exec comes before its traffic, so a
// process found gone at its first lookup whose exec was still pending
// then gets its identity from it: the lookup waits (at most lateExecWait)
// until the watcher has handled what was pending when it started, or the
// pid's exec. Without it such a process is named by what /proc still
// shows (its executable at best, unknown_service at worst), and since a
// process's instance is chosen once, its traffic stays there.
func (r *Resolver) SetExecProgress(p ExecProgress) {
	if p == nil {
		r.execProgress.Store(nil)
		return
	}
	r.execProgress.Store(&p)
}

// LateExecStats returns how many first lookups of a process already gone
// waited for the exec watcher, how many of those got their identity from
// it, and how many did not (the watcher had no exec for the pid: it was
// lost, or came before the agent started).
func (r *Resolver) LateExecStats() (waited, resolved, unresolved int64) {
	return r.lateWaited.Load(), r.lateResolved.Load(), r.lateUnresolved.Load()
}

// awaitExec waits for pid's exec to be handled: it returns the identity
// RefreshExec cached, or nil once the watcher has handled everything that
// was pending when the wait began without bringing one, or after
// lateExecWait.
func (r *Resolver) awaitExec(pid uint32) *Process {
	pp := r.execProgress.Load()
	if pp == nil {
		return nil
	}
	prog := *pp
	r.lateWaited.Add(1)
	target := prog.Handled() + uint64(prog.Pending())
	deadline := time.Now().Add(lateExecWait)
	for {
		r.mu.Lock()
		p, ok := r.cache[pid]
		r.mu.Unlock()
		if ok && !p.unresolved {
			r.lateResolved.Add(1)
			return p
		}
		if (prog.Handled() >= target && r.refreshing.Load() == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	r.lateUnresolved.Add(1)
	return nil
}

// inherit gives a forked child that did not exec (same executable as its
// parent) the service its parent was named by its environment: the child
// started with that environment, and what /proc shows may have been
// rewritten since (nginx and postgres rewrite it for their process titles).
// A child that exec'd was refreshed with its own environment at exec.
func (r *Resolver) inherit(p *Process, ppid uint32) {
	if ppid == 0 || p.ExecutableName == "" {
		return
	}
	r.mu.Lock()
	parent, ok := r.cache[ppid]
	r.mu.Unlock()
	if ok && parent.envService && parent.ExecutableName == p.ExecutableName {
		p.ServiceName, p.ServiceNamespace = parent.ServiceName, parent.ServiceNamespace
		p.resource = parent.resource
		p.otelEnv = parent.otelEnv
		p.envService = true
	}
}

// readEnviron reads a process's environment. An empty one is usually a
// process still inside exec, which takes microseconds to write its new stack:
// with waitForExec a few short retries give it that time, so the first
// identity is already the right one.
func readEnviron(dir string, waitForExec bool) ([]byte, error) {
	path := filepath.Join(dir, "environ")
	env, err := os.ReadFile(path)
	for i := 0; waitForExec && err == nil && len(env) == 0 && i < 5; i++ {
		time.Sleep(200 * time.Microsecond)
		env, err = os.ReadFile(path)
	}
	return env, err
}

// provisionalFor bounds how long an identity read with an empty environment
// is read again: exec finishes in far less, and a process that really has no
// environment should not cost /proc reads for longer.
const provisionalFor = time.Second

// serviceFromEnviron finds OTEL_SERVICE_NAME, else service.name and
// service.namespace in OTEL_RESOURCE_ATTRIBUTES, as the OTel SDKs would.
// It runs for every exec on the host: it walks the environment in place.
func serviceFromEnviron(env []byte) (name, namespace string) {
	var resAttrs []byte
	for rest := env; len(rest) > 0; {
		var kv []byte
		kv, rest, _ = bytes.Cut(rest, []byte{0})
		switch {
		case bytes.HasPrefix(kv, []byte("OTEL_SERVICE_NAME=")):
			name = string(kv[len("OTEL_SERVICE_NAME="):])
		case bytes.HasPrefix(kv, []byte("OTEL_RESOURCE_ATTRIBUTES=")):
			resAttrs = kv[len("OTEL_RESOURCE_ATTRIBUTES="):]
		}
	}
	for len(resAttrs) > 0 {
		var pair []byte
		pair, resAttrs, _ = bytes.Cut(resAttrs, []byte(","))
		k, v, ok := bytes.Cut(pair, []byte("="))
		if !ok {
			continue
		}
		switch string(bytes.TrimSpace(k)) {
		case "service.name":
			if name == "" {
				name = string(bytes.TrimSpace(v))
			}
		case "service.namespace":
			namespace = string(bytes.TrimSpace(v))
		}
	}
	return name, namespace
}

// otelVars returns the OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
// entries of env, NUL-terminated as in env; nil when it has neither.
func otelVars(env []byte) []byte {
	var out []byte
	for rest := env; len(rest) > 0; {
		var kv []byte
		kv, rest, _ = bytes.Cut(rest, []byte{0})
		if bytes.HasPrefix(kv, []byte("OTEL_SERVICE_NAME=")) || bytes.HasPrefix(kv, []byte("OTEL_RESOURCE_ATTRIBUTES=")) {
			out = append(append(out, kv...), 0)
		}
	}
	return out
}

var containerIDPattern = regexp.MustCompile(`([0-9a-f]{64})`)

// ContainerIDFromCgroup extracts a container id (64 hex digits, as docker,
// containerd and CRI-O name their cgroups) from /proc/<pid>/cgroup.
func ContainerIDFromCgroup(cgroup []byte) string {
	for rest := cgroup; len(rest) > 0; {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		// hierarchy-ID:controllers:path
		_, path, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		_, path, _ = bytes.Cut(path, []byte{':'})
		if m := containerIDPattern.Find(path); m != nil {
			return string(m)
		}
	}
	return ""
}

// readStat returns the start time (field 22) and the parent's pid (field 4)
// from /proc/<pid>/stat.
func readStat(procRoot string, pid uint32) (start uint64, ppid uint32, err error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "stat"))
	if err != nil {
		return 0, 0, err
	}
	// comm (field 2) may contain spaces and parentheses: count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, os.ErrInvalid
	}
	// After it, field 3 (state) is the first; ppid is field 4, starttime 22.
	pp, ok1 := statField(b[i+1:], 4-3)
	st, ok2 := statField(b[i+1:], 22-3)
	if !ok1 || !ok2 {
		return 0, 0, os.ErrInvalid
	}
	ppid64, err := strconv.ParseUint(string(pp), 10, 32)
	if err != nil {
		return 0, 0, err
	}
	start, err = strconv.ParseUint(string(st), 10, 64)
	return start, uint32(ppid64), err
}

// statField returns the n-th (from 0) space-separated field of b.
func statField(b []byte, n int) ([]byte, bool) {
	for f := 0; ; f++ {
		b = bytes.TrimLeft(b, " ")
		if len(b) == 0 {
			return nil, false
		}
		end := bytes.IndexByte(b, ' ')
		if end < 0 {
			end = len(b)
		}
		if f == n {
			return bytes.TrimRight(b[:end], "\n"), true
		}
		b = b[end:]
	}
}

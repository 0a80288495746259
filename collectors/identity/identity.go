// Package identity turns a process id into the service identity that labels
// everything the agent reports about that process: service.name from the
// process's own OTEL_SERVICE_NAME (else its executable name), process and
// container attributes. It reads /proc once per process and caches the
// answer; collectors look processes up when they report, never per event.
package identity

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
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

	// provisionalUntil is set when the environment read empty: a process
	// caught between exec's switch of address space and the kernel writing
	// the new stack shows its new executable but no environment yet, so
	// OTEL_SERVICE_NAME would be missed for good. Such an identity is read
	// again on lookup until this time.
	provisionalUntil time.Time
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
	if p.PID != 0 {
		instance := p.instanceID
		if instance == "" {
			instance = host + ":" + strconv.FormatUint(uint64(p.PID), 10)
		}
		p.attrs = append(p.attrs, KeyServiceInstanceID.String(instance), KeyProcessPID.Int64(int64(p.PID)))
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
	Retention time.Duration

	mu    sync.Mutex
	base  []attribute.KeyValue // SetResourceAttributes
	cache map[uint32]*Process
	dead  map[uint32]time.Time // when Sweep first found the pid gone
}

// NewResolver reads processes under procRoot (normally "/proc"). host goes
// into service.instance.id.
func NewResolver(procRoot, host string) *Resolver {
	unknown := &Process{ServiceName: UnknownService}
	unknown.buildAttributes(host, nil)
	return &Resolver{procRoot: procRoot, host: host, unknown: unknown, Retention: 5 * time.Minute,
		cache: map[uint32]*Process{}, dead: map[uint32]time.Time{}}
}

// Lookup returns the identity of pid (a thread-group id). A process that is
// gone before it was ever looked up keeps a pid-only identity, so its
// telemetry is still reported, under its executable's name if known.
func (r *Resolver) Lookup(pid uint32) *Process {
	if pid == 0 {
		return r.unknown
	}
	r.mu.Lock()
	p, ok := r.cache[pid]
	r.mu.Unlock()
	if ok && (p.provisionalUntil.IsZero() || time.Now().After(p.provisionalUntil)) {
		return p
	}
	fresh := r.read(pid, !ok, nil)
	r.mu.Lock()
	defer r.mu.Unlock()
	existing, ok := r.cache[pid]
	switch {
	case !ok:
		r.cache[pid] = fresh
		return fresh
	case existing.provisionalUntil.IsZero() || fresh.startTime != existing.startTime:
		return existing
	case fresh.provisionalUntil.IsZero():
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
func (r *Resolver) RefreshExec(pid uint32, execEnv []byte) *Process {
	if pid == 0 {
		return r.unknown
	}
	p := r.read(pid, true, execEnv)
	r.mu.Lock()
	r.cache[pid] = p
	delete(r.dead, pid)
	r.mu.Unlock()
	return p
}

// Alive reports whether pid still names the process that was cached.
func (r *Resolver) Alive(pid uint32) bool {
	if pid == 0 {
		return true
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

// Sweep finds cached processes that exited (or whose pid was reused) and
// returns those newly found gone, so collectors can retire their series. Their
// identity stays cached for Retention, then is forgotten.
func (r *Resolver) Sweep() []uint32 {
	r.mu.Lock()
	pids := make([]uint32, 0, len(r.cache))
	for pid := range r.cache {
		pids = append(pids, pid)
	}
	r.mu.Unlock()
	var gone, dead []uint32
	for _, pid := range pids {
		if !r.Alive(pid) {
			dead = append(dead, pid)
		}
	}
	now := time.Now()
	r.mu.Lock()
	for _, pid := range dead {
		since, known := r.dead[pid]
		switch {
		case !known:
			r.dead[pid] = now
			gone = append(gone, pid)
		case now.Sub(since) >= r.Retention:
			delete(r.cache, pid)
			delete(r.dead, pid)
		}
	}
	r.mu.Unlock()
	return gone
}

// Len is the number of cached processes.
func (r *Resolver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

func (r *Resolver) read(pid uint32, waitForExec bool, execEnv []byte) *Process {
	dir := filepath.Join(r.procRoot, strconv.FormatUint(uint64(pid), 10))
	p := &Process{PID: pid}
	var ppid uint32
	p.startTime, ppid, _ = readStat(r.procRoot, pid)
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
	if execEnv != nil {
		p.ServiceName, p.ServiceNamespace = serviceFromEnviron(execEnv)
		p.resource = resourceFromEnviron(execEnv)
	} else if env, err := readEnviron(dir, waitForExec); err == nil {
		p.ServiceName, p.ServiceNamespace = serviceFromEnviron(env)
		p.resource = resourceFromEnviron(env)
		if len(env) == 0 {
			p.provisionalUntil = time.Now().Add(provisionalFor)
		}
	}
	p.envService = p.ServiceName != ""
	if !p.envService && execEnv == nil {
		r.inherit(p, ppid)
	}
	if cg, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		p.ContainerID = ContainerIDFromCgroup(cg)
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
func serviceFromEnviron(env []byte) (name, namespace string) {
	var resAttrs string
	for _, kv := range bytes.Split(env, []byte{0}) {
		switch {
		case bytes.HasPrefix(kv, []byte("OTEL_SERVICE_NAME=")):
			name = string(kv[len("OTEL_SERVICE_NAME="):])
		case bytes.HasPrefix(kv, []byte("OTEL_RESOURCE_ATTRIBUTES=")):
			resAttrs = string(kv[len("OTEL_RESOURCE_ATTRIBUTES="):])
		}
	}
	for _, pair := range strings.Split(resAttrs, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "service.name":
			if name == "" {
				name = strings.TrimSpace(v)
			}
		case "service.namespace":
			namespace = strings.TrimSpace(v)
		}
	}
	return name, namespace
}

var containerIDPattern = regexp.MustCompile(`([0-9a-f]{64})`)

// ContainerIDFromCgroup extracts a container id (64 hex digits, as docker,
// containerd and CRI-O name their cgroups) from /proc/<pid>/cgroup.
func ContainerIDFromCgroup(cgroup []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cgroup))
	for sc.Scan() {
		line := sc.Text()
		_, path, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		_, path, _ = strings.Cut(path, ":")
		if m := containerIDPattern.FindString(path); m != "" {
			return m
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
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); ppid is field 4, starttime field 22.
	if len(fields) < 20 {
		return 0, 0, os.ErrInvalid
	}
	pp, err := strconv.ParseUint(fields[1], 10, 32)
	if err != nil {
		return 0, 0, err
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return start, uint32(pp), err
}

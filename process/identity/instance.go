package identity

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"time"
)

// InstanceMode says what one service instance (service.instance.id) is in
// the metrics.
type InstanceMode uint8

const (
	// InstanceService (the default): a server and the worker processes it
	// forked are one instance (the server's, host:<pid of the server>);
	// processes of a service that do not serve (clients, jobs, scripts,
	// short-lived workers) are one instance per host or container, so a
	// host running thousands of short-lived processes an hour does not get
	// thousands of copies of every series.
	InstanceService InstanceMode = iota
	// InstancePID: every process is its own instance, host:<pid>.
	InstancePID
)

// ParseInstanceMode parses the process.instance setting.
func ParseInstanceMode(s string) (InstanceMode, error) {
	switch s {
	case "", "service":
		return InstanceService, nil
	case "pid":
		return InstancePID, nil
	}
	return 0, fmt.Errorf("process.instance must be service or pid, got %q", s)
}

func (m InstanceMode) String() string {
	if m == InstancePID {
		return "pid"
	}
	return "service"
}

// syntheticBase starts the owner ids of folded instances: above any pid
// (the kernel's pid_max is at most 2^22), so collectors can key series by
// an owner id as they key them by pid.
const syntheticBase = 1 << 31

func isSynthetic(id uint32) bool { return id >= syntheticBase }

// maxAncestors bounds the walk up a process tree to its pool's root.
const maxAncestors = 16

// instance is a folded instance: the processes of one service (in one
// container, with one resource) that are not a server's.
type instance struct {
	id         uint32
	proc       *Process // the identity its series carry: pid-less
	members    int      // cached processes that belong to it
	emptySince time.Time
}

// foldKey is what tells folded instances apart: a process's service
// identity without its pid.
// The executable is not part of it: a process gone before it was read has
// none, and it must still fold with the others of its service.
type foldKey struct {
	container, namespace, name, version, instanceID, resource string
}

func foldKeyOf(p *Process) foldKey {
	k := foldKey{container: p.ContainerID, namespace: p.ServiceNamespace, name: p.ServiceName,
		version: p.ServiceVersion, instanceID: p.instanceID}
	for _, kv := range p.attrs {
		if kv.Key == KeyResource {
			k.resource = kv.Value.Emit()
		}
	}
	return k
}

// Owner returns the id that the metric series of pid are keyed and
// labelled by: Lookup(owner) is the identity they carry and Alive(owner)
// whether they still have a process. With InstancePID it is pid itself;
// otherwise the pid of the server whose pool pid belongs to, or the id of
// the folded instance of pid's service. The choice is made once per
// process, when its first series is created, and kept: a series never
// changes instance. A nil Resolver returns pid.
//
// A server is the root of a pool (the topmost ancestor of the same service
// in the same container) that holds a listening TCP or Unix socket when
// the choice is made. nginx, gunicorn, php-fpm and Apache workers are
// forked by their listening master, so they are its instance.
func (r *Resolver) Owner(pid uint32) uint32 {
	if r == nil || pid == 0 || isSynthetic(pid) || r.InstanceMode == InstancePID {
		return pid
	}
	p := r.Lookup(pid)
	if p == r.unknown || p.PID == 0 {
		return pid
	}
	r.mu.Lock()
	o := p.owner
	r.mu.Unlock()
	if o != 0 {
		return o
	}
	root := r.poolRoot(p)
	o = r.rootOwner(root)
	if root != p {
		r.mu.Lock()
		if p.owner == 0 {
			r.join(p, o)
		}
		o = p.owner
		r.mu.Unlock()
	}
	return o
}

// poolRoot walks up from p while the parent is of the same service.
func (r *Resolver) poolRoot(p *Process) *Process {
	root := p
	for range maxAncestors {
		if root.ppid <= 1 {
			break
		}
		parent := r.Lookup(root.ppid)
		// A parent younger than its child is a reused pid, not the parent.
		if parent == r.unknown || parent.PID == 0 || (parent.startTime != 0 && root.startTime != 0 && parent.startTime > root.startTime) ||
			parent.ServiceName != root.ServiceName || parent.ServiceNamespace != root.ServiceNamespace || parent.ContainerID != root.ContainerID {
			break
		}
		root = parent
	}
	return root
}

// rootOwner decides the owner of a pool's root, once.
func (r *Resolver) rootOwner(root *Process) uint32 {
	r.mu.Lock()
	o := root.owner
	r.mu.Unlock()
	if o != 0 {
		return o
	}
	// A container source's instance id names the container's instance:
	// every process in it folds into it.
	server := root.instanceID == "" && r.listeners.listening(r.procRoot, root.PID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if root.owner != 0 {
		return root.owner
	}
	if server {
		root.owner = root.PID
		return root.owner
	}
	k := foldKeyOf(root)
	in, ok := r.instances[k]
	if !ok {
		r.nextID++
		in = &instance{id: syntheticBase + r.nextID%(1<<31-1), proc: r.instanceProcess(root)}
		r.instances[k] = in
		r.byID[in.id] = in
	}
	r.join(root, in.id)
	return root.owner
}

// join makes o the owner of p; r.mu is held.
func (r *Resolver) join(p *Process, o uint32) {
	p.owner = o
	if in := r.byID[o]; in != nil && isSynthetic(o) {
		p.inst = in
		in.members++
	}
}

// leave is called for a process that leaves the cache; r.mu is held.
func (r *Resolver) leave(p *Process, now time.Time) {
	if p == nil || p.inst == nil {
		return
	}
	p.inst.members--
	if p.inst.members == 0 {
		p.inst.emptySince = now
	}
	p.inst = nil
}

// instanceProcess is the identity of a folded instance: the root's
// service identity without a pid; r.mu is held.
func (r *Resolver) instanceProcess(root *Process) *Process {
	q := &Process{
		ServiceName: root.ServiceName, ServiceNamespace: root.ServiceNamespace,
		ExecutableName: root.ExecutableName, ContainerID: root.ContainerID,
		ServiceVersion: root.ServiceVersion, instanceID: root.instanceID,
		containerAttrs: root.containerAttrs, resource: root.resource, envService: root.envService,
	}
	if q.instanceID == "" {
		q.instanceID = r.host
		if q.ContainerID != "" {
			q.instanceID += "/" + q.ContainerID[:min(12, len(q.ContainerID))]
		}
		q.instanceID += ":" + q.ServiceName
		if len(root.resource) > 0 || root.ServiceVersion != "" {
			// Processes that declare different resources (their own
			// OTEL_RESOURCE_ATTRIBUTES: deployment.environment.name=prod
			// and =staging) are different instances, each with its
			// target_info.
			h := fnv.New32a()
			for _, kv := range root.resource {
				h.Write([]byte(string(kv.Key) + "=" + kv.Value.Emit() + "\x00"))
			}
			h.Write([]byte(root.ServiceVersion))
			q.instanceID += fmt.Sprintf("#%08x", h.Sum32())
		}
	}
	q.buildAttributes(r.host, r.base)
	return q
}

// sweepInstances forgets folded instances empty for the retention; r.mu
// is held.
func (r *Resolver) sweepInstances(now time.Time) {
	for k, in := range r.instances {
		if in.members <= 0 && now.Sub(in.emptySince) >= r.Retention {
			delete(r.instances, k)
			delete(r.byID, in.id)
		}
	}
}

// Instances is the number of folded instances known.
func (r *Resolver) Instances() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.instances)
}

// lookupSynthetic is Lookup of a folded instance's owner id.
func (r *Resolver) lookupSynthetic(id uint32) *Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	if in := r.byID[id]; in != nil {
		return in.proc
	}
	return r.unknown
}

// aliveSynthetic: a folded instance lives while a process of it is known
// (alive, or exited within the retention).
func (r *Resolver) aliveSynthetic(id uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.byID[id]
	return in != nil && in.members > 0
}

func pidString(pid uint32) string { return strconv.FormatUint(uint64(pid), 10) }

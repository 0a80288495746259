package identity

import (
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
)

// KeyServiceVersion is service.version, which only a ContainerSource sets.
const KeyServiceVersion = attribute.Key("service.version")

// ContainerInfo is what a ContainerSource knows about one container.
type ContainerInfo struct {
	// Attributes describe the container and what runs it (k8s.pod.name,
	// k8s.namespace.name, k8s.deployment.name, ...).
	Attributes []attribute.KeyValue
	// The service fields fill in what the process's own environment did
	// not set; "" is not known. ServiceInstanceID replaces the agent's
	// host:pid.
	ServiceName, ServiceNamespace, ServiceVersion, ServiceInstanceID string
}

// ContainerSource supplies metadata for container ids, such as the
// Kubernetes pod metadata of package k8smeta. Container is called when an
// identity is read (once per process), never per event.
type ContainerSource interface {
	Container(id string) (ContainerInfo, bool)
}

// containerSource is the Resolver's optional source.
type containerSource struct {
	p atomic.Pointer[ContainerSource]
}

// SetContainerSource makes every identity read from now on carry s's
// metadata for its container. Set it before collectors start: identities
// already cached keep what they had.
func (r *Resolver) SetContainerSource(s ContainerSource) { r.containers.p.Store(&s) }

// applyContainer fills p from the container source: the process's own
// OTEL_SERVICE_NAME (and OTEL_RESOURCE_ATTRIBUTES' service.namespace) win,
// as the program chose them.
func (r *Resolver) applyContainer(p *Process) {
	src := r.containers.p.Load()
	if src == nil || p.ContainerID == "" {
		return
	}
	info, ok := (*src).Container(p.ContainerID)
	if !ok {
		return
	}
	if !p.envService && info.ServiceName != "" {
		p.ServiceName = info.ServiceName
	}
	if p.ServiceNamespace == "" {
		p.ServiceNamespace = info.ServiceNamespace
	}
	p.ServiceVersion = info.ServiceVersion
	p.instanceID = info.ServiceInstanceID
	p.containerAttrs = info.Attributes
}

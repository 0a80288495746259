// Package perservice turns the agent's single-resource telemetry into one
// resource per observed service.
//
// The agent runs one MeterProvider and one TracerProvider whose resource is
// the agent's own (service.name=otelbee plus host attributes). Collectors
// cannot create a provider per observed program (programs come and go, and a
// provider per program would leak readers and goroutines), so they record the
// identity of the observed program as attributes on each data point or span.
// The exporters call SplitMetrics / SplitSpans right before encoding to move
// those identity attributes back where OpenTelemetry expects them: on the
// resource.
package perservice

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
)

// Identity attribute keys. Collectors put these on data points and spans;
// in the exported telemetry they are resource attributes.
const (
	ServiceName           attribute.Key = "service.name"
	ServiceNamespace      attribute.Key = "service.namespace"
	ServiceInstanceID     attribute.Key = "service.instance.id"
	ServiceVersion        attribute.Key = "service.version"
	ProcessPID            attribute.Key = "process.pid"
	ProcessParentPID      attribute.Key = "process.parent_pid"
	ProcessExecutableName attribute.Key = "process.executable.name"
	ProcessExecutablePath attribute.Key = "process.executable.path"
	ProcessCommand        attribute.Key = "process.command"
	ProcessCommandLine    attribute.Key = "process.command_line"
	ProcessOwner          attribute.Key = "process.owner"
	ContainerID           attribute.Key = "container.id"
	ContainerName         attribute.Key = "container.name"
	ContainerImageName    attribute.Key = "container.image.name"
	K8sNamespaceName      attribute.Key = "k8s.namespace.name"
	K8sPodName            attribute.Key = "k8s.pod.name"
	K8sPodUID             attribute.Key = "k8s.pod.uid"
	K8sContainerName      attribute.Key = "k8s.container.name"
	K8sDeploymentName     attribute.Key = "k8s.deployment.name"
	K8sStatefulSetName    attribute.Key = "k8s.statefulset.name"
	K8sDaemonSetName      attribute.Key = "k8s.daemonset.name"
	K8sReplicaSetName     attribute.Key = "k8s.replicaset.name"
	K8sJobName            attribute.Key = "k8s.job.name"
	K8sCronJobName        attribute.Key = "k8s.cronjob.name"

	// ProgramResource carries the observed program's other resource
	// attributes as "key=value" strings (its own OTEL_RESOURCE_ATTRIBUTES
	// over the host-wide ones; see process/identity.KeyResource). The
	// splitters expand it into the resource.
	ProgramResource attribute.Key = "otelbee.internal.resource"
)

// ResourceKeys lists the attribute keys that describe an observed program
// rather than a measurement. Any other key with the "k8s." prefix is treated
// the same way (see IsResourceKey). A data point or span is attributed to an
// observed service only when it carries ServiceName.
var ResourceKeys = []attribute.Key{
	ServiceName,
	ServiceNamespace,
	ServiceInstanceID,
	ServiceVersion,
	ProcessPID,
	ProcessParentPID,
	ProcessExecutableName,
	ProcessExecutablePath,
	ProcessCommand,
	ProcessCommandLine,
	ProcessOwner,
	ContainerID,
	ContainerName,
	ContainerImageName,
	K8sNamespaceName,
	K8sPodName,
	K8sPodUID,
	K8sContainerName,
	K8sDeploymentName,
	K8sStatefulSetName,
	K8sDaemonSetName,
	K8sReplicaSetName,
	K8sJobName,
	K8sCronJobName,
	ProgramResource,
}

// resourceKeySet is ResourceKeys as a set; IsResourceKey runs once per
// attribute per data point on every export, so it must be a map lookup.
var resourceKeySet = func() map[attribute.Key]struct{} {
	m := make(map[attribute.Key]struct{}, len(ResourceKeys))
	for _, k := range ResourceKeys {
		m[k] = struct{}{}
	}
	return m
}()

// IsResourceKey reports whether k is an identity (resource) attribute key:
// one of ResourceKeys or any key starting with "k8s.".
func IsResourceKey(k attribute.Key) bool {
	// Every resource key starts with service., process., container.,
	// k8s. or otelbee.internal.: most measurement keys (http., url., network., dns., ...) are
	// turned away by their first byte, without hashing.
	if k == "" {
		return false
	}
	switch k[0] {
	case 's', 'p', 'c', 'k', 'o':
	default:
		return false
	}
	if _, ok := resourceKeySet[k]; ok {
		return true
	}
	return strings.HasPrefix(string(k), "k8s.")
}

// notResourceKey is the attribute.Filter keeping measurement attributes.
func notResourceKey(kv attribute.KeyValue) bool { return !IsResourceKey(kv.Key) }

// keepFromAgent reports whether an attribute of the agent's own resource
// also describes an observed program on the same host: what describes the
// machine (host.*, os.*, cloud.*, the Kubernetes node and cluster). The
// rest describes the agent as a program — its service.*, process.*,
// telemetry.sdk.* (the agent's SDK is not the observed program's), and
// whatever its own OTEL_RESOURCE_ATTRIBUTES say (deployment.*, custom keys):
// attributes meant for every observed service are configured for them
// (ProgramResource), not taken from the agent's environment.
func keepFromAgent(k attribute.Key) bool {
	s := string(k)
	for _, p := range []string{"host.", "os.", "cloud.", "k8s.node.", "k8s.cluster."} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

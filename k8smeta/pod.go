package k8smeta

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/otelbee/otelbee/process/identity"
)

// Resource attribute keys (OpenTelemetry semantic conventions, k8s.*).
const (
	KeyNamespace   = attribute.Key("k8s.namespace.name")
	KeyPodName     = attribute.Key("k8s.pod.name")
	KeyPodUID      = attribute.Key("k8s.pod.uid")
	KeyContainer   = attribute.Key("k8s.container.name")
	KeyNode        = attribute.Key("k8s.node.name")
	KeyDeployment  = attribute.Key("k8s.deployment.name")
	KeyReplicaSet  = attribute.Key("k8s.replicaset.name")
	KeyStatefulSet = attribute.Key("k8s.statefulset.name")
	KeyDaemonSet   = attribute.Key("k8s.daemonset.name")
	KeyJob         = attribute.Key("k8s.job.name")
	KeyCronJob     = attribute.Key("k8s.cronjob.name")
)

// annotationPrefix marks pod annotations that are resource attributes
// (resource.opentelemetry.io/service.name -> service.name).
const annotationPrefix = "resource.opentelemetry.io/"

// Well-known labels, used only with Config.AppLabels (the conventions ask
// for an opt-in: users may not know their labels are read this way).
const (
	labelInstance = "app.kubernetes.io/instance"
	labelName     = "app.kubernetes.io/name"
	labelVersion  = "app.kubernetes.io/version"
)

// workload is the chain of controllers a pod belongs to, as far as known.
type workload struct {
	replicaSet, deployment, statefulSet, daemonSet, job, cronJob string
}

// directOwner reads the pod's controller reference: the level that needs no
// API call. A ReplicaSet's Deployment and a Job's CronJob are looked up.
func directOwner(refs []metav1.OwnerReference) (w workload) {
	for _, ref := range refs {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		switch ref.Kind {
		case "ReplicaSet":
			w.replicaSet = ref.Name
		case "StatefulSet":
			w.statefulSet = ref.Name
		case "DaemonSet":
			w.daemonSet = ref.Name
		case "Job":
			w.job = ref.Name
		}
	}
	return w
}

// controllerOf returns the name of refs' controller of the given kind.
func controllerOf(refs []metav1.OwnerReference, kind string) string {
	for _, ref := range refs {
		if ref.Controller != nil && *ref.Controller && ref.Kind == kind {
			return ref.Name
		}
	}
	return ""
}

// containerIDs maps each container id in the pod's statuses
// ("containerd://<id>", "cri-o://<id>", "docker://<id>") to its container's name.
func containerIDs(pod *corev1.Pod) map[string]string {
	out := map[string]string{}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, st := range list {
			if id := trimRuntime(st.ContainerID); id != "" {
				out[id] = st.Name
			}
		}
	}
	return out
}

func trimRuntime(id string) string {
	if _, rest, ok := strings.Cut(id, "://"); ok {
		return rest
	}
	return id
}

// containerInfo is the metadata of one container of pod, with service.*
// chosen as the semantic conventions' Kubernetes guidance orders them:
// the pod's resource.opentelemetry.io/* annotations, then (opt-in) the
// well-known app.kubernetes.io/* labels, then the workload, pod and
// container names.
func containerInfo(pod *corev1.Pod, container string, w workload, node string, appLabels bool) identity.ContainerInfo {
	attrs := []attribute.KeyValue{
		KeyNamespace.String(pod.Namespace),
		KeyPodName.String(pod.Name),
		KeyPodUID.String(string(pod.UID)),
		KeyContainer.String(container),
	}
	if node != "" {
		attrs = append(attrs, KeyNode.String(node))
	}
	for _, kv := range []struct {
		k attribute.Key
		v string
	}{
		{KeyDeployment, w.deployment}, {KeyReplicaSet, w.replicaSet}, {KeyStatefulSet, w.statefulSet},
		{KeyDaemonSet, w.daemonSet}, {KeyCronJob, w.cronJob}, {KeyJob, w.job},
	} {
		if kv.v != "" {
			attrs = append(attrs, kv.k.String(kv.v))
		}
	}
	info := identity.ContainerInfo{}
	ann := func(key string) string { return pod.Annotations[annotationPrefix+key] }
	label := func(key string) string {
		if !appLabels {
			return ""
		}
		return pod.Labels[key]
	}
	info.ServiceName = first(ann("service.name"), label(labelInstance), label(labelName),
		w.deployment, w.replicaSet, w.statefulSet, w.daemonSet, w.cronJob, w.job, pod.Name, container)
	info.ServiceNamespace = first(ann("service.namespace"), pod.Namespace)
	info.ServiceVersion = first(ann("service.version"), label(labelVersion))
	info.ServiceInstanceID = first(ann("service.instance.id"), pod.Namespace+"."+pod.Name+"."+container)
	info.Attributes = attrs
	return info
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// slim keeps only what the metadata needs of a pod, so the informer's cache
// costs little per pod (no spec, no managed fields, no other labels).
func slim(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone on delete
	}
	out := &corev1.Pod{}
	out.Name, out.Namespace, out.UID, out.ResourceVersion = pod.Name, pod.Namespace, pod.UID, pod.ResourceVersion
	out.OwnerReferences = pod.OwnerReferences
	out.Spec.NodeName = pod.Spec.NodeName
	for k, v := range pod.Annotations {
		if strings.HasPrefix(k, annotationPrefix) {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	for k, v := range pod.Labels {
		if strings.HasPrefix(k, "app.kubernetes.io/") {
			if out.Labels == nil {
				out.Labels = map[string]string{}
			}
			out.Labels[k] = v
		}
	}
	slimStatuses := func(in []corev1.ContainerStatus) []corev1.ContainerStatus {
		var s []corev1.ContainerStatus
		for _, st := range in {
			s = append(s, corev1.ContainerStatus{Name: st.Name, ContainerID: st.ContainerID})
		}
		return s
	}
	out.Status.ContainerStatuses = slimStatuses(pod.Status.ContainerStatuses)
	out.Status.InitContainerStatuses = slimStatuses(pod.Status.InitContainerStatuses)
	out.Status.EphemeralContainerStatuses = slimStatuses(pod.Status.EphemeralContainerStatuses)
	return out, nil
}

package k8smeta

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestContainerInfoServiceOrder(t *testing.T) {
	base := func(ann, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "shop", UID: "u1", Annotations: ann, Labels: labels}}
	}
	appLabels := map[string]string{labelInstance: "web-prod", labelName: "web", labelVersion: "3.1"}
	tests := []struct {
		name      string
		pod       *corev1.Pod
		w         workload
		appLabels bool
		wantName  string
		wantNS    string
		wantVer   string
		wantInst  string
	}{
		{"annotations first", base(map[string]string{
			annotationPrefix + "service.name": "checkout", annotationPrefix + "service.namespace": "payments",
			annotationPrefix + "service.version": "2.0", annotationPrefix + "service.instance.id": "i-1"}, appLabels),
			workload{deployment: "web"}, true, "checkout", "payments", "2.0", "i-1"},
		{"labels only when opted in", base(nil, appLabels), workload{deployment: "web"}, false, "web", "shop", "", "shop.web-abc.app"},
		{"app.kubernetes.io/instance before name", base(nil, appLabels), workload{deployment: "web"}, true, "web-prod", "shop", "3.1", "shop.web-abc.app"},
		{"app.kubernetes.io/name", base(nil, map[string]string{labelName: "web"}), workload{}, true, "web", "shop", "", "shop.web-abc.app"},
		{"deployment before its replicaset", base(nil, nil), workload{deployment: "web", replicaSet: "web-5d8"}, false, "web", "shop", "", "shop.web-abc.app"},
		{"bare replicaset", base(nil, nil), workload{replicaSet: "web-5d8"}, false, "web-5d8", "shop", "", "shop.web-abc.app"},
		{"statefulset", base(nil, nil), workload{statefulSet: "db"}, false, "db", "shop", "", "shop.web-abc.app"},
		{"daemonset", base(nil, nil), workload{daemonSet: "agent"}, false, "agent", "shop", "", "shop.web-abc.app"},
		{"cronjob before its job", base(nil, nil), workload{cronJob: "report", job: "report-1"}, false, "report", "shop", "", "shop.web-abc.app"},
		{"bare job", base(nil, nil), workload{job: "once"}, false, "once", "shop", "", "shop.web-abc.app"},
		{"pod name", base(nil, nil), workload{}, false, "web-abc", "shop", "", "shop.web-abc.app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := containerInfo(tt.pod, "app", tt.w, "node1", tt.appLabels)
			if info.ServiceName != tt.wantName || info.ServiceNamespace != tt.wantNS || info.ServiceVersion != tt.wantVer || info.ServiceInstanceID != tt.wantInst {
				t.Fatalf("got name %q ns %q version %q instance %q, want %q %q %q %q", info.ServiceName, info.ServiceNamespace,
					info.ServiceVersion, info.ServiceInstanceID, tt.wantName, tt.wantNS, tt.wantVer, tt.wantInst)
			}
			attrs := map[string]string{}
			for _, kv := range info.Attributes {
				attrs[string(kv.Key)] = kv.Value.AsString()
			}
			for k, v := range map[string]string{"k8s.namespace.name": "shop", "k8s.pod.name": "web-abc", "k8s.pod.uid": "u1",
				"k8s.container.name": "app", "k8s.node.name": "node1"} {
				if attrs[k] != v {
					t.Errorf("%s = %q, want %q", k, attrs[k], v)
				}
			}
			if tt.w.deployment != "" && attrs["k8s.deployment.name"] != tt.w.deployment {
				t.Errorf("k8s.deployment.name = %q", attrs["k8s.deployment.name"])
			}
		})
	}
}

func TestContainerIDs(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{
		InitContainerStatuses:      []corev1.ContainerStatus{{Name: "init", ContainerID: "cri-o://aa"}},
		ContainerStatuses:          []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://bb"}, {Name: "waiting"}},
		EphemeralContainerStatuses: []corev1.ContainerStatus{{Name: "debug", ContainerID: "docker://cc"}},
	}}
	got := containerIDs(pod)
	want := map[string]string{"aa": "init", "bb": "app", "cc": "debug"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestDirectOwner(t *testing.T) {
	yes, no := true, false
	w := directOwner([]metav1.OwnerReference{
		{Kind: "ReplicaSet", Name: "not-controller", Controller: &no},
		{Kind: "StatefulSet", Name: "db", Controller: &yes},
	})
	if w.statefulSet != "db" || w.replicaSet != "" {
		t.Fatalf("got %+v", w)
	}
}

// slim keeps what the metadata needs and drops the rest.
func TestSlim(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", UID: "u",
			Labels:        map[string]string{"app.kubernetes.io/name": "x", "team": "y"},
			Annotations:   map[string]string{annotationPrefix + "service.name": "s", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec:   corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: "app", Image: "img", Env: []corev1.EnvVar{{Name: "SECRET", Value: "v"}}}}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://bb", Image: "img"}}},
	}
	out, _ := slim(pod)
	s := out.(*corev1.Pod)
	if len(s.ManagedFields) != 0 || len(s.Spec.Containers) != 0 || s.Labels["team"] != "" || len(s.Annotations) != 1 || s.Labels["app.kubernetes.io/name"] != "x" {
		t.Fatalf("slim kept too much: %+v", s)
	}
	if s.Spec.NodeName != "node1" || s.Status.ContainerStatuses[0].ContainerID != "containerd://bb" || s.Status.ContainerStatuses[0].Image != "" {
		t.Fatalf("slim: %+v", s.Status)
	}
}

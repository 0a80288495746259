package k8smeta

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
)

func ref(kind, name string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &yes}}
}

func runningPod(ns, name, node string, owners []metav1.OwnerReference, id string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), OwnerReferences: owners},
		Spec:   corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + id}}}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The Source's wiring with client-go's fake clientset (the real API server
// is in e2e/k8s_test.go): owners resolved through the ReplicaSet and the
// Job, updates and deletions followed.
func TestSourceWorkloads(t *testing.T) {
	client := fake.NewClientset(
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-5d8", OwnerReferences: ref("Deployment", "web")}},
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "report-1", OwnerReferences: ref("CronJob", "report")}},
		runningPod("shop", "web-5d8-x", "node1", ref("ReplicaSet", "web-5d8"), "aa"),
		runningPod("shop", "report-1-y", "node1", ref("Job", "report-1"), "bb"),
		runningPod("shop", "ds-z", "node1", ref("DaemonSet", "agent"), "cc"),
	)
	api := fakeAPI{client}
	s, err := StartWithClient(context.Background(), Config{Enabled: true, NodeName: "node1", SyncTimeout: 5 * time.Second}, api,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	get := func(id string) map[string]string {
		info, ok := s.Container(id)
		if !ok {
			return nil
		}
		m := map[string]string{"service.name": info.ServiceName}
		for _, kv := range info.Attributes {
			m[string(kv.Key)] = kv.Value.AsString()
		}
		return m
	}
	for id, want := range map[string]map[string]string{
		"aa": {"service.name": "web", "k8s.deployment.name": "web", "k8s.replicaset.name": "web-5d8"},
		"bb": {"service.name": "report", "k8s.cronjob.name": "report", "k8s.job.name": "report-1"},
		"cc": {"service.name": "agent", "k8s.daemonset.name": "agent"},
	} {
		got := get(id)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("container %s: %s = %q, want %q (%v)", id, k, got[k], v, got)
			}
		}
	}
	if s.Pods() != 3 {
		t.Errorf("pods %d, want 3", s.Pods())
	}

	// A restarted container: the old id goes, the new one comes.
	p := runningPod("shop", "ds-z", "node1", ref("DaemonSet", "agent"), "dd")
	if _, err := client.CoreV1().Pods("shop").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new container id", func() bool { return get("dd") != nil })
	if get("cc") != nil {
		t.Error("the old container id kept its metadata")
	}
	if err := client.CoreV1().Pods("shop").Delete(context.Background(), "ds-z", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted pod's metadata to expire", func() bool { return get("dd") == nil })
	if s.Pods() != 2 || s.Containers() != 2 {
		t.Errorf("pods %d containers %d, want 2 2", s.Pods(), s.Containers())
	}
}

func TestStartNeedsNodeName(t *testing.T) {
	if _, err := Start(context.Background(), Config{Enabled: true}, slog.Default()); err == nil {
		t.Fatal("no error without a node name")
	}
}

// fakeAPI is API over client-go's fake clientset.
type fakeAPI struct{ c *fake.Clientset }

func (f fakeAPI) ListPods(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
	return f.c.CoreV1().Pods("").List(ctx, o)
}

func (f fakeAPI) WatchPods(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return f.c.CoreV1().Pods("").Watch(ctx, o)
}

func (f fakeAPI) GetReplicaSet(ctx context.Context, ns, name string) (*appsv1.ReplicaSet, error) {
	return f.c.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
}

func (f fakeAPI) GetJob(ctx context.Context, ns, name string) (*batchv1.Job, error) {
	return f.c.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
}

// The fake cannot stream a list as watch events.
func (f fakeAPI) IsWatchListSemanticsUnSupported() bool { return true }

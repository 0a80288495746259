package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/otelbee/otelbee/e2e/harness"
)

// createPods creates n running pods named prefix-<i> on the nodes node(i),
// with 16 clients at a time.
func (f *kubeFixture) createPods(n int, prefix string, node func(int) string) {
	t := f.t
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), Namespace: f.ns,
					Labels:      map[string]string{"app": prefix, "team": "e2e"},
					Annotations: map[string]string{"resource.opentelemetry.io/service.name": prefix}},
					Spec: corev1.PodSpec{NodeName: node(i), Containers: []corev1.Container{{Name: "app", Image: "e2e/none",
						Env: []corev1.EnvVar{{Name: "A", Value: strings.Repeat("x", 200)}}}}}}
				created, err := f.kube.Client.CoreV1().Pods(f.ns).Create(harness.Ctx(t), p, metav1.CreateOptions{})
				if err == nil {
					created.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + harness.NewContainerID(),
						Image: "e2e/none", ImageID: "e2e/none@sha256:" + strings.Repeat("0", 64), Ready: true,
						State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}
					_, err = f.kube.Client.CoreV1().Pods(f.ns).UpdateStatus(harness.Ctx(t), created, metav1.UpdateOptions{})
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("creating pods: %v", err)
	default:
	}
}

// agentGauge reads a gauge with one series from the agent's /metrics.
func agentGauge(t *testing.T, agent *harness.Agent, name string) float64 {
	t.Helper()
	resp, err := http.Get(agent.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		l := s.Text()
		if rest, ok := strings.CutPrefix(l, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			f, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			return f
		}
	}
	t.Fatalf("%s not in the agent's metrics", name)
	return 0
}

func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestKubernetesNodeScopedMemory: 50 pods on the agent's node and 5,000 on
// other nodes. The agent caches the 50 only (its spec.nodeName field
// selector is applied by the API server), and its RSS does not grow with
// the 5,000.
func TestKubernetesNodeScopedMemory(t *testing.T) {
	harness.RequireRoot(t)
	f := newKubeFixture(t)
	start := time.Now()
	f.createPods(50, "here", func(int) string { return kubeNode })
	t.Logf("50 pods on this node created in %v", time.Since(start).Round(time.Millisecond))
	agent := harness.StartAgent(t, nil, "--collectors=tcp", "--kubernetes", "--kubernetes.node-name="+kubeNode,
		"--kubernetes.kubeconfig="+f.kube.Kubeconfig)
	// Listed at start, or soon after when a loaded API server answers past
	// the agent's sync timeout (the agent goes on and the list follows).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got := agentGauge(t, agent, "otelbee_kubernetes_pods")
		if got == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods cached at start: %v, want 50", got)
		}
	}
	time.Sleep(3 * time.Second) // let start-up allocations settle
	before := rssKiB(t, agent.Pid())

	start = time.Now()
	f.createPods(5000, "elsewhere", func(i int) string { return fmt.Sprintf("node-%d", i%100) })
	t.Logf("5,000 pods on 100 other nodes created in %v", time.Since(start).Round(time.Millisecond))
	all, err := f.kube.Client.CoreV1().Pods(f.ns).List(harness.Ctx(t), metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Items) != 5050 {
		t.Fatalf("the API server has %d pods, want 5050", len(all.Items))
	}
	time.Sleep(3 * time.Second)
	after := rssKiB(t, agent.Pid())
	t.Logf("agent RSS with 50 pods on its node: %d KiB; after 5,000 more on other nodes: %d KiB (%+d KiB)", before, after, after-before)
	if got := agentGauge(t, agent, "otelbee_kubernetes_pods"); got != 50 {
		t.Fatalf("pods cached with 5,000 on other nodes: %v, want 50", got)
	}
	// Caching all 5,050 pods costs about 34 MiB here; the node's 50 plus
	// the noise of a shared machine (other tests' traffic the agent
	// records) stay within 10 MiB.
	if after-before > 10<<10 {
		t.Errorf("agent RSS grew by %d KiB with pods on other nodes", after-before)
	}
}

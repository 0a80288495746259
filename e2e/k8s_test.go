package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/otelbee/otelbee/e2e/harness"
)

// kubeNode is the node name the agent watches; pods "on other nodes" get
// other names.
const kubeNode = "otelbee-e2e-node"

// kubeFixture is a namespace of a real API server whose pods' containers
// are cgroups on this host.
type kubeFixture struct {
	t    *testing.T
	kube *harness.Kube
	ns   string
}

func newKubeFixture(t *testing.T) *kubeFixture {
	kube := harness.StartKube(t)
	ns := fmt.Sprintf("e2e-%d", rand.IntN(1<<30))
	if _, err := kube.Client.CoreV1().Namespaces().Create(harness.Ctx(t),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return &kubeFixture{t: t, kube: kube, ns: ns}
}

func controllerRef(kind, name string, uid string) []metav1.OwnerReference {
	yes := true
	api := "apps/v1"
	if kind == "Job" || kind == "CronJob" {
		api = "batch/v1"
	}
	return []metav1.OwnerReference{{APIVersion: api, Kind: kind, Name: name, UID: types.UID(uid), Controller: &yes}}
}

// deployment creates a Deployment and its ReplicaSet (as the controller
// manager would) and returns the ReplicaSet's owner reference for its pods.
func (f *kubeFixture) deployment(name string) []metav1.OwnerReference {
	t := f.t
	labels := map[string]string{"app": name}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "e2e/none"}}}}
	d, err := f.kube.Client.AppsV1().Deployments(f.ns).Create(harness.Ctx(t), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating deployment: %v", err)
	}
	rsName := name + "-5d8f7c6b9"
	rs, err := f.kube.Client.AppsV1().ReplicaSets(f.ns).Create(harness.Ctx(t), &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: rsName, OwnerReferences: controllerRef("Deployment", name, string(d.UID))},
		Spec:       appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating replicaset: %v", err)
	}
	return controllerRef("ReplicaSet", rsName, string(rs.UID))
}

// pod creates a pod on node with one container per name and reports them
// running with the given container ids, as a kubelet would.
func (f *kubeFixture) pod(name, node string, owners []metav1.OwnerReference, annotations map[string]string, containers map[string]string) *corev1.Pod {
	t := f.t
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns, OwnerReferences: owners, Annotations: annotations},
		Spec: corev1.PodSpec{NodeName: node}}
	for c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: "e2e/none"})
	}
	created, err := f.kube.Client.CoreV1().Pods(f.ns).Create(harness.Ctx(t), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s: %v", name, err)
	}
	if len(containers) == 0 {
		return created
	}
	created.Status.Phase = corev1.PodRunning
	for c, id := range containers {
		created.Status.ContainerStatuses = append(created.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c, ContainerID: "containerd://" + id, Image: "e2e/none", ImageID: "e2e/none@sha256:" + strings.Repeat("0", 64),
			Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		})
	}
	updated, err := f.kube.Client.CoreV1().Pods(f.ns).UpdateStatus(harness.Ctx(t), created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("reporting pod %s running: %v", name, err)
	}
	return updated
}

// inContainer starts argv inside a container's cgroup, with no
// OTEL_SERVICE_NAME: the service name must come from Kubernetes.
func inContainer(t *testing.T, cg *harness.ContainerCgroup, name string, stdout *strings.Builder, argv ...string) *harness.Process {
	t.Helper()
	cmd := cg.Command(argv...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	if stdout != nil {
		cmd.Stdout = stdout
		cmd.Stderr = os.Stderr
	}
	return harness.StartProcess(t, name, cmd)
}

// startTCPServer runs a tcpload server in cg and returns its address.
func startTCPServer(t *testing.T, cg *harness.ContainerCgroup) (string, *harness.Process) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	p := inContainer(t, cg, "tcpload-server", &strings.Builder{}, buildTool(t, "./e2e/cmd/tcpload"), "-server", "-addr", "127.0.0.1:0", "-ready-file", ready)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b)), p
		}
		if time.Now().After(deadline) {
			t.Fatal("tcpload server did not become ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runTCPClient runs a tcpload client in cg to completion.
func runTCPClient(t *testing.T, cg *harness.ContainerCgroup, addr string, n int) tcpReport {
	t.Helper()
	var out strings.Builder
	p := inContainer(t, cg, "tcpload-client", &out, buildTool(t, "./e2e/cmd/tcpload"), "-client", "-addr", addr,
		"-n", fmt.Sprint(n), "-send", "1000", "-recv", "3000")
	if err := p.Wait(60 * time.Second); err != nil {
		t.Fatalf("tcpload client: %v", err)
	}
	return parseReport(t, []byte(out.String()))
}

// TestKubernetesMetadata: a real kube-apiserver (with etcd) knows a
// Deployment's pod with an HTTP server and a TCP server, and a StatefulSet's
// pod with their clients; the containers are cgroups on this host in
// containerd's layout, and real processes run in them. The agent's TCP and
// HTTP series, in the real Prometheus and the real OpenTelemetry Collector,
// carry each pod's namespace, name, container and workload, and the service
// name from the resource.opentelemetry.io/service.name annotation (else the
// workload's name). A deleted pod's metadata expires; with the API server
// stopped the agent goes on exporting, with container ids, and counts the
// errors; restarted, metadata returns. The agent authenticates as the Helm
// chart's service account with the chart's ClusterRole, nothing more.
func TestKubernetesMetadata(t *testing.T) {
	harness.RequireRoot(t)
	start := time.Now()
	f := newKubeFixture(t)
	col := harness.StartCollector(t)

	webID, webTCPID, loadID := harness.NewContainerID(), harness.NewContainerID(), harness.NewContainerID()
	web := f.pod("web-5d8f7c6b9-x7k2p", kubeNode, f.deployment("web"),
		map[string]string{"resource.opentelemetry.io/service.name": "checkout", "resource.opentelemetry.io/service.version": "2.4.1"},
		map[string]string{"http": webID, "tcp": webTCPID})
	yes := true
	load := f.pod("loadgen-0", kubeNode, []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "loadgen", UID: "0d9e3c1a-1111-4222-8333-444455556666", Controller: &yes}},
		nil, map[string]string{"client": loadID})
	// Pods elsewhere: never cached, never matched.
	f.pod("elsewhere", "other-node", nil, nil, map[string]string{"x": harness.NewContainerID()})

	// The agent has only the permissions the Helm chart grants it.
	applyChartRBAC(t, f.kube)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000"},
		"--collectors=tcp,http", "--kubernetes", "--kubernetes.node-name="+kubeNode, "--kubernetes.kubeconfig="+f.kube.AgentKubeconfig,
		"--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	waitProm(t, prom, "otelbee_kubernetes_pods", 2)

	// doctor checks the API server the same way.
	bin, _ := harness.AgentBin()
	doc, _ := exec.Command(bin, "doctor", "--kubernetes", "--kubernetes.node-name="+kubeNode, "--kubernetes.kubeconfig="+f.kube.Kubeconfig).CombinedOutput()
	if want := "kubernetes:   node " + kubeNode + ": 2 pods, 3 containers with metadata"; !strings.Contains(string(doc), want) {
		t.Errorf("doctor lacks %q:\n%s", want, doc)
	}

	webCg := harness.NewContainerCgroup(t, string(web.UID), webID)
	webTCPCg := harness.NewContainerCgroup(t, string(web.UID), webTCPID)
	loadCg := harness.NewContainerCgroup(t, string(load.UID), loadID)

	// HTTP: the server in web's "http" container, the client in loadgen's.
	httpload := buildTool(t, "./e2e/cmd/httpload")
	addrFile := filepath.Join(t.TempDir(), "addr")
	var srvOut strings.Builder
	srv := inContainer(t, webCg, "httpload-server", &srvOut, httpload, "-listen", "127.0.0.1:0", "-addr-file", addrFile)
	addr := waitAddrFile(t, addrFile)
	var cliOut strings.Builder
	cli := inContainer(t, loadCg, "httpload-client", &cliOut, httpload, "-url", "http://"+addr, "-plan", "GET /users/1*6,POST /users/2*3,GET /fail*2")
	if err := cli.Wait(60 * time.Second); err != nil {
		t.Fatalf("http client: %v", err)
	}
	client := parseHTTPReport(t, cliOut.String())
	// TCP: a tcpload pair, server in web's "tcp" container, client in loadgen's.
	tcpAddr, tcpSrv := startTCPServer(t, webTCPCg)
	tcpRep := runTCPClient(t, loadCg, tcpAddr, 7)
	srv.Cmd.Process.Signal(os.Interrupt)
	if err := srv.Wait(10 * time.Second); err != nil {
		t.Fatalf("http server: %v", err)
	}
	server := parseHTTPReport(t, srvOut.String())
	total := func(m map[string]int) (n int) {
		for _, v := range m {
			n += v
		}
		return n
	}
	t.Logf("ground truth: server %v, client %v, tcp %d connections %d bytes sent", server.Counts, client.Counts, tcpRep.Connections, tcpRep.BytesSent)

	webSel := fmt.Sprintf(`k8s_namespace_name=%q,k8s_pod_name=%q,k8s_deployment_name="web",k8s_replicaset_name="web-5d8f7c6b9",job=~"(.+/)?checkout",service_version="2.4.1",k8s_node_name=%q`, f.ns, web.Name, kubeNode)
	loadSel := fmt.Sprintf(`k8s_namespace_name=%q,k8s_pod_name="loadgen-0",k8s_statefulset_name="loadgen",k8s_container_name="client",job=~"(.+/)?loadgen",container_id=%q`, f.ns, loadID)
	tcpPort := tcpAddr[strings.LastIndex(tcpAddr, ":")+1:]
	waitProm(t, prom, withTarget(`http_server_request_duration_seconds_count`, fmt.Sprintf(`%s,k8s_container_name="http",container_id=%q,k8s_pod_uid=%q,job=%q`, webSel, webID, web.UID, f.ns+"/checkout")), float64(total(server.Counts)))
	waitProm(t, prom, withTarget(`http_client_request_duration_seconds_count`, loadSel), float64(total(client.Counts)))
	waitProm(t, prom, withTarget(`otelbee_tcp_connection_opened_total`, webSel+`,k8s_container_name="tcp"`), float64(tcpRep.Connections))
	waitProm(t, prom, withTarget(fmt.Sprintf(`otelbee_tcp_connection_io_bytes_total{network_io_direction="transmit",server_port=%q}`, tcpPort), loadSel), float64(tcpRep.BytesSent))
	col.WaitForMetric(t, "http.server.request.duration", harness.Filter{Resource: map[string]string{
		"k8s.namespace.name": f.ns, "k8s.pod.name": web.Name, "k8s.container.name": "http", "k8s.deployment.name": "web",
		"service.name": "checkout", "service.instance.id": f.ns + "." + web.Name + ".http", "container.id": webID,
	}}, func(v float64) bool { return v == float64(total(server.Counts)) }, 30*time.Second)
	col.WaitForMetric(t, "otelbee.tcp.connection.opened", harness.Filter{Resource: map[string]string{
		"k8s.namespace.name": f.ns, "k8s.pod.name": "loadgen-0", "k8s.statefulset.name": "loadgen", "service.name": "loadgen",
	}, Attributes: map[string]string{"server.port": tcpPort}},
		func(v float64) bool { return v == float64(tcpRep.Connections) }, 30*time.Second)
	t.Logf("metadata on every series after %v", time.Since(start).Round(time.Millisecond))

	// Pod deleted: its metadata expires; a new process in the container
	// that is left has its container id only.
	// Grace period 0: no kubelet here confirms a graceful deletion.
	now := int64(0)
	if err := f.kube.Client.CoreV1().Pods(f.ns).Delete(harness.Ctx(t), "loadgen-0", metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
		t.Fatal(err)
	}
	waitProm(t, prom, "otelbee_kubernetes_pods", 1)
	runTCPClient(t, loadCg, tcpAddr, 3)
	waitProm(t, prom, withTarget(`otelbee_tcp_connection_opened_total`, fmt.Sprintf(`container_id=%q,k8s_pod_name=""`, loadID)), 3)

	// API server stopped: the agent goes on exporting (the web pod's
	// metadata is cached), new containers have their ids, errors count.
	errs := `sum(otelbee_kubernetes_errors_total{operation="request"})`
	before, _ := promValue(harness.Ctx(t), prom, errs)
	f.kube.StopAPIServer()
	outageID := harness.NewContainerID()
	outageUID := "7f0c2e4b-aaaa-4bbb-8ccc-ddddeeeeffff"
	outageCg := harness.NewContainerCgroup(t, outageUID, outageID)
	runTCPClient(t, outageCg, tcpAddr, 4)
	waitProm(t, prom, withTarget(`otelbee_tcp_connection_opened_total`, fmt.Sprintf(`container_id=%q,k8s_pod_name=""`, outageID)), 4)
	waitProm(t, prom, withTarget(`otelbee_tcp_connection_opened_total`, webSel+`,k8s_container_name="tcp"`), float64(tcpRep.Connections+3+4))
	prom.WaitFor(t, errs, func(s []harness.Sample) bool { return len(s) == 1 && s[0].Value > before }, 30*time.Second)
	if exited, _ := agent.Exited(); exited {
		t.Fatalf("agent exited while the API server was down:\n%s", agent.LogTail(30))
	}

	// Restarted: metadata returns for pods created from now on.
	f.kube.RestartAPIServer()
	backID := harness.NewContainerID()
	back := f.pod("batch-28761120-q8zv4", kubeNode, f.job("report", "report-28761120"), nil, map[string]string{"worker": backID})
	waitProm(t, prom, "otelbee_kubernetes_pods", 2)
	backCg := harness.NewContainerCgroup(t, string(back.UID), backID)
	runTCPClient(t, backCg, tcpAddr, 2)
	waitProm(t, prom, withTarget(`otelbee_tcp_connection_opened_total`, fmt.Sprintf(`container_id=%q,k8s_pod_name=%q,k8s_job_name="report-28761120",k8s_cronjob_name="report",job=~"(.+/)?report"`, backID, back.Name)), 2)
	// After the restart the errors stop growing.
	settled, _ := promValue(harness.Ctx(t), prom, errs)
	time.Sleep(3 * time.Second)
	if now, _ := promValue(harness.Ctx(t), prom, errs); now != settled {
		t.Errorf("list/watch errors still growing after the restart: %v -> %v", settled, now)
	}
	tcpSrv.Stop()
	t.Logf("TestKubernetesMetadata took %v", time.Since(start).Round(time.Millisecond))
}

// job creates a CronJob's Job and returns the Job's owner reference.
func (f *kubeFixture) job(cronJob, job string) []metav1.OwnerReference {
	t := f.t
	yes := true
	tmpl := corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "e2e/none"}}}}
	j, err := f.kube.Client.BatchV1().Jobs(f.ns).Create(harness.Ctx(t), &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: job, OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "CronJob", Name: cronJob, UID: "1a2b3c4d-0000-4000-8000-000000000002", Controller: &yes}}},
		Spec:       batchv1.JobSpec{Template: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating job: %v", err)
	}
	return controllerRef("Job", job, string(j.UID))
}

// withTarget sums metric over the series whose identity's target_info
// matches sel: the Prometheus exporter puts resource attributes (k8s.*,
// container.id) on target_info, and job (service.namespace/service.name)
// and instance (service.instance.id) on every series to join it by.
func withTarget(metric, sel string) string {
	return fmt.Sprintf(`sum(%s * on (job, instance) group_left target_info{%s})`, metric, sel)
}

func waitAddrFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

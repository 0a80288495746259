// Package otelbee holds the tests of the otelbee Helm chart: it is rendered
// with the Helm Go SDK (no cluster), linted, and every rendered object is
// decoded strictly (unknown or duplicate fields fail) into its k8s.io/api or
// prometheus-operator type.
package otelbee

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const namespace = "observability"

// rendered is a chart rendering decoded into typed objects by kind/name.
type rendered map[string]runtime.Object

func render(t *testing.T, values map[string]any) rendered {
	t.Helper()
	objs, err := tryRender(values)
	if err != nil {
		t.Fatal(err)
	}
	lintChart(t, values)
	return objs
}

func loadChart() (*chart.Chart, error) { return loader.Load(".") }

func tryRender(values map[string]any) (rendered, error) {
	ch, err := loadChart()
	if err != nil {
		return nil, fmt.Errorf("loading chart: %w", err)
	}
	vals, err := chartutil.ToRenderValues(ch, values,
		chartutil.ReleaseOptions{Name: "otelbee", Namespace: namespace, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("building values: %w", err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("rendering: %w", err)
	}
	sch := runtime.NewScheme()
	if err := scheme.AddToScheme(sch); err != nil {
		return nil, err
	}
	if err := monitoringv1.AddToScheme(sch); err != nil {
		return nil, err
	}
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, sch, sch, json.SerializerOptions{Yaml: true, Strict: true})
	out := rendered{}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range strings.Split(files[name], "\n---") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			obj, gvk, err := dec.Decode([]byte(doc), nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: strict decoding: %w\n%s", name, err, doc)
			}
			var meta struct {
				Metadata struct{ Name string } `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				return nil, err
			}
			key := gvk.Kind + "/" + meta.Metadata.Name
			if _, dup := out[key]; dup {
				return nil, fmt.Errorf("%s rendered twice", key)
			}
			out[key] = obj
		}
	}
	return out, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// lintChart runs helm lint (strict) with these values: errors and warnings fail.
func lintChart(t *testing.T, values map[string]any) {
	t.Helper()
	res := lint.All(".", values, namespace, true)
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", m)
		}
	}
}

func (r rendered) kinds() []string {
	var k []string
	for key := range r {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

func (r rendered) daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	ds, ok := r["DaemonSet/otelbee"].(*appsv1.DaemonSet)
	if !ok {
		t.Fatalf("no DaemonSet/otelbee in %v", r.kinds())
	}
	return ds
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func TestDefaultValues(t *testing.T) {
	r := render(t, nil)
	want := []string{"ClusterRole/otelbee", "ClusterRoleBinding/otelbee", "DaemonSet/otelbee", "ServiceAccount/otelbee"}
	if got := r.kinds(); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	ds := r.daemonSet(t)
	spec := ds.Spec.Template.Spec
	if ds.Namespace != namespace {
		t.Errorf("namespace %q", ds.Namespace)
	}
	if !spec.HostPID || spec.HostNetwork {
		t.Errorf("hostPID %v hostNetwork %v, want true false", spec.HostPID, spec.HostNetwork)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Fatalf("security context %+v: want privileged and allowPrivilegeEscalation false", sc)
	}
	caps := sc.Capabilities
	if !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("drop %v, want [ALL]", caps.Drop)
	}
	wantCaps := []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"}
	if !slices.Equal(caps.Add, wantCaps) {
		t.Errorf("add %v, want %v", caps.Add, wantCaps)
	}
	if slices.Contains(caps.Add, "SYS_ADMIN") {
		t.Error("SYS_ADMIN granted by default")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("root file system writable")
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp %+v, want RuntimeDefault", sc.SeccompProfile)
	}
	env := envOf(c)
	for name, want := range map[string]string{
		"OTELBEE_COLLECTORS":            "tcp,dns,http",
		"OTELBEE_PROMETHEUS_LISTEN":     "0.0.0.0:9464",
		"OTELBEE_KUBERNETES":            "true",
		"OTELBEE_KUBERNETES_APP_LABELS": "false",
		"GOMEMLIMIT":                    "483183820", // 90% of 512Mi
	} {
		if got := env[name].Value; got != want {
			t.Errorf("env %s = %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS", "OTELBEE_PROMETHEUS_RESOURCE_LABELS"} {
		if _, ok := env[name]; ok {
			t.Errorf("%s set by default", name)
		}
	}
	node := env["OTELBEE_KUBERNETES_NODE_NAME"]
	if node.ValueFrom == nil || node.ValueFrom.FieldRef == nil || node.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("node name %+v, want the downward API's spec.nodeName", node)
	}
	if got := c.Resources.Limits.Memory().String(); got != "512Mi" {
		t.Errorf("memory limit %s", got)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9464 || c.Ports[0].Name != "metrics" {
		t.Errorf("ports %+v", c.Ports)
	}
	if a := ds.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9464" {
		t.Errorf("pod annotations %v", a)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	if m := mounts["tracefs"]; m.MountPath != "/sys/kernel/tracing" || !m.ReadOnly {
		t.Errorf("tracefs mount %+v", m)
	}
	if m := mounts["cgroup"]; m.MountPath != "/sys/fs/cgroup" || !m.ReadOnly {
		t.Errorf("cgroup mount %+v", m)
	}
	if _, ok := mounts["bpffs"]; ok {
		t.Error("bpffs mounted by default (nothing is pinned)")
	}
	// The state directory is the one writable host path: identities learned
	// at exec survive restarts (OTELBEE_STATE_DIR points at it).
	if m := mounts["state"]; m.MountPath != "/var/lib/otelbee" || m.ReadOnly {
		t.Errorf("state mount %+v, want /var/lib/otelbee read-write", m)
	}
	if v := envOf(c)["OTELBEE_STATE_DIR"].Value; v != "/var/lib/otelbee" {
		t.Errorf("OTELBEE_STATE_DIR %q, want /var/lib/otelbee", v)
	}
	for _, v := range spec.Volumes {
		if v.Name == "state" && (v.HostPath == nil || v.HostPath.Path != "/var/lib/otelbee" || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate) {
			t.Errorf("state volume %+v", v)
		}
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("tolerations %+v, want one Exists", spec.Tolerations)
	}
	if spec.ServiceAccountName != "otelbee" {
		t.Errorf("service account %q", spec.ServiceAccountName)
	}

	role := r["ClusterRole/otelbee"].(*rbacv1.ClusterRole)
	got := map[string][]string{}
	for _, rule := range role.Rules {
		for _, res := range rule.Resources {
			got[strings.Join(rule.APIGroups, ",")+"/"+res] = rule.Verbs
		}
	}
	wantRules := map[string][]string{"/pods": {"get", "list", "watch"}, "apps/replicasets": {"get"}, "batch/jobs": {"get"}}
	if fmt.Sprint(got) != fmt.Sprint(wantRules) {
		t.Errorf("rules %v, want %v", got, wantRules)
	}
	binding := r["ClusterRoleBinding/otelbee"].(*rbacv1.ClusterRoleBinding)
	if binding.RoleRef.Name != "otelbee" || len(binding.Subjects) != 1 || binding.Subjects[0].Namespace != namespace {
		t.Errorf("binding %+v", binding)
	}
}

func TestNonDefaultValues(t *testing.T) {
	r := render(t, map[string]any{
		"collectors":           []any{"tcp", "http"},
		"legacyKernelSysAdmin": true,
		"hostNetwork":          true,
		"otlp": map[string]any{
			"endpoint":      "http://otel-collector.observability:4317",
			"protocol":      "grpc",
			"headersSecret": map[string]any{"name": "otlp-auth", "key": "hdr"},
		},
		"prometheus": map[string]any{
			"port":           9555,
			"resourceLabels": "k8s.namespace.name,k8s.pod.name",
			"podAnnotations": false,
			"podMonitor":     map[string]any{"enabled": true, "labels": map[string]any{"release": "kps"}},
			"serviceMonitor": map[string]any{"enabled": true, "interval": "15s"},
		},
		"kubernetes":        map[string]any{"appLabels": true},
		"resources":         map[string]any{"limits": map[string]any{"memory": "1Gi"}, "requests": map[string]any{"memory": "256Mi"}},
		"goMemLimitPercent": 50,
		"mounts":            map[string]any{"bpffs": true},
		"stateDir":          "",
		"tolerations":       []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "obs", "effect": "NoSchedule"}},
		"image":             map[string]any{"repository": "registry.example/otelbee", "tag": "v9"},
		"extraArgs":         []any{"--http.routes=/users/{id}"},
		"priorityClassName": "system-node-critical",
	})
	want := []string{"ClusterRole/otelbee", "ClusterRoleBinding/otelbee", "DaemonSet/otelbee", "PodMonitor/otelbee",
		"Service/otelbee-metrics", "ServiceAccount/otelbee", "ServiceMonitor/otelbee"}
	if got := r.kinds(); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	ds := r.daemonSet(t)
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	if !slices.Contains(c.SecurityContext.Capabilities.Add, "SYS_ADMIN") || !slices.Contains(c.SecurityContext.Capabilities.Add, "SYS_RESOURCE") {
		t.Errorf("legacy kernel caps %v lack SYS_ADMIN, SYS_RESOURCE", c.SecurityContext.Capabilities.Add)
	}
	if *c.SecurityContext.Privileged {
		t.Error("privileged on legacy kernels")
	}
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v dnsPolicy %q", spec.HostNetwork, spec.DNSPolicy)
	}
	env := envOf(c)
	for name, want := range map[string]string{
		"OTELBEE_COLLECTORS":                 "tcp,http",
		"OTELBEE_PROMETHEUS_LISTEN":          "0.0.0.0:9555",
		"OTELBEE_PROMETHEUS_RESOURCE_LABELS": "k8s.namespace.name,k8s.pod.name",
		"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://otel-collector.observability:4317",
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "grpc",
		"OTELBEE_KUBERNETES_APP_LABELS":      "true",
		"GOMEMLIMIT":                         "536870912",
	} {
		if got := env[name].Value; got != want {
			t.Errorf("env %s = %q, want %q", name, got, want)
		}
	}
	h := env["OTEL_EXPORTER_OTLP_HEADERS"]
	if h.Value != "" || h.ValueFrom == nil || h.ValueFrom.SecretKeyRef == nil ||
		h.ValueFrom.SecretKeyRef.Name != "otlp-auth" || h.ValueFrom.SecretKeyRef.Key != "hdr" {
		t.Errorf("OTLP headers %+v, want from secret otlp-auth/hdr", h)
	}
	if c.Image != "registry.example/otelbee:v9" || !slices.Equal(c.Args, []string{"run", "--http.routes=/users/{id}"}) {
		t.Errorf("image %q args %v", c.Image, c.Args)
	}
	if _, ok := ds.Spec.Template.Annotations["prometheus.io/scrape"]; ok {
		t.Error("scrape annotations with podAnnotations false")
	}
	if spec.PriorityClassName != "system-node-critical" || len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "dedicated" {
		t.Errorf("priority %q tolerations %+v", spec.PriorityClassName, spec.Tolerations)
	}
	hasBPF := false
	for _, v := range spec.Volumes {
		hasBPF = hasBPF || (v.HostPath != nil && v.HostPath.Path == "/sys/fs/bpf")
	}
	if !hasBPF {
		t.Error("bpffs not mounted with mounts.bpffs")
	}
	for _, m := range c.VolumeMounts {
		if m.Name == "state" {
			t.Error("state directory mounted with stateDir empty")
		}
	}
	if v := envOf(c)["OTELBEE_STATE_DIR"].Value; v != "" {
		t.Errorf("OTELBEE_STATE_DIR %q with stateDir empty, want empty (off)", v)
	}
	pm := r["PodMonitor/otelbee"].(*monitoringv1.PodMonitor)
	if pm.Labels["release"] != "kps" || len(pm.Spec.PodMetricsEndpoints) != 1 || *pm.Spec.PodMetricsEndpoints[0].Port != "metrics" {
		t.Errorf("pod monitor %+v", pm)
	}
	sm := r["ServiceMonitor/otelbee"].(*monitoringv1.ServiceMonitor)
	if !pm.Spec.PodMetricsEndpoints[0].HonorLabels {
		t.Error("pod monitor without honorLabels: Prometheus would overwrite every service's job and instance")
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Interval != "15s" || !sm.Spec.Endpoints[0].HonorLabels {
		t.Errorf("service monitor %+v", sm.Spec)
	}
	svc := r["Service/otelbee-metrics"].(*corev1.Service)
	if svc.Spec.ClusterIP != "None" || svc.Spec.Ports[0].Port != 9555 {
		t.Errorf("service %+v", svc.Spec)
	}
}

// Without Kubernetes metadata the agent needs no API access: no RBAC, no token.
func TestKubernetesOff(t *testing.T) {
	r := render(t, map[string]any{"kubernetes": map[string]any{"enabled": false}, "prometheus": map[string]any{"enabled": false}})
	if got := r.kinds(); !slices.Equal(got, []string{"DaemonSet/otelbee", "ServiceAccount/otelbee"}) {
		t.Fatalf("objects %v", got)
	}
	spec := r.daemonSet(t).Spec.Template.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("service account token mounted without Kubernetes metadata")
	}
	env := envOf(spec.Containers[0])
	if _, ok := env["OTELBEE_KUBERNETES_NODE_NAME"]; ok || env["OTELBEE_KUBERNETES"].Value != "false" {
		t.Errorf("kubernetes env %+v", env)
	}
	if v, ok := env["OTELBEE_PROMETHEUS_LISTEN"]; !ok || v.Value != "" || len(spec.Containers[0].Ports) != 0 {
		t.Errorf("prometheus off: listen %+v ports %v", v, spec.Containers[0].Ports)
	}
}

func TestBadValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"fractional memory", map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": "1.5Gi"}}}, "resources.limits.memory"},
		{"percent", map[string]any{"goMemLimitPercent": 0}, "goMemLimitPercent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryRender(tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

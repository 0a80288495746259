package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/otelbee/otelbee/e2e/harness"
)

// applyChartRBAC renders the Helm chart's ClusterRole and ClusterRoleBinding
// (release "otelbee" in harness.AgentNamespace, default values) and creates
// them, so that the agent, authenticated as the chart's service account, has
// exactly the permissions the chart grants.
func applyChartRBAC(t *testing.T, kube *harness.Kube) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ch, err := loader.Load(filepath.Join(root, "charts", "otelbee"))
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, nil,
		chartutil.ReleaseOptions{Name: "otelbee", Namespace: harness.AgentNamespace, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	created := 0
	for _, doc := range strings.Split(files["otelbee/templates/rbac.yaml"], "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decoding the chart's RBAC: %v\n%s", err, doc)
		}
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			_, err = kube.Client.RbacV1().ClusterRoles().Create(harness.Ctx(t), o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			if o.Subjects[0].Name != harness.AgentServiceAccount || o.Subjects[0].Namespace != harness.AgentNamespace {
				t.Fatalf("the chart binds %+v, the harness authenticates as %s/%s", o.Subjects, harness.AgentNamespace, harness.AgentServiceAccount)
			}
			_, err = kube.Client.RbacV1().ClusterRoleBindings().Create(harness.Ctx(t), o, metav1.CreateOptions{})
		default:
			t.Fatalf("unexpected %T in the chart's rbac.yaml", obj)
		}
		if err != nil {
			t.Fatalf("creating the chart's RBAC: %v", err)
		}
		created++
	}
	if created != 2 {
		t.Fatalf("the chart's rbac.yaml has %d objects, want a ClusterRole and its binding", created)
	}
	// As the agent: pods can be listed, ReplicaSets read but not listed,
	// Secrets not at all, nothing written (RBAC is enforced).
	rc, err := clientcmd.BuildConfigFromFlags("", kube.AgentKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	as, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := harness.Ctx(t)
	// The API server's RBAC authorizer reads roles and bindings from an
	// informer cache: a binding just created is enforced a moment later.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := as.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Errorf("the chart's service account cannot list pods: %v", err)
			break
		}
	}
	for what, err := range map[string]error{
		"list secrets":     func() error { _, err := as.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); return err }(),
		"list replicasets": func() error { _, err := as.AppsV1().ReplicaSets("").List(ctx, metav1.ListOptions{}); return err }(),
		"delete a pod":     as.CoreV1().Pods("default").Delete(ctx, "x", metav1.DeleteOptions{}),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the chart's service account may %s (error %v, want forbidden)", what, err)
		}
	}
}

package k8smeta

import "github.com/otelbee/otelbee/agent/settings"

// Settings declares the Kubernetes metadata options, bound to c.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Flag: "kubernetes", Env: []string{"OTELBEE_KUBERNETES"}, Key: "kubernetes.enabled", Value: settings.Bool(&c.Enabled),
			Help: "pod metadata on every series and span: `k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`, the workload, `service.*` from `resource.opentelemetry.io/*` pod annotations ([docs/kubernetes.md](docs/kubernetes.md))"},
		{Flag: "kubernetes.node-name", Env: []string{"OTELBEE_KUBERNETES_NODE_NAME"}, Key: "kubernetes.node_name", Value: settings.String(&c.NodeName),
			Help: "the node whose pods are watched (required with `--kubernetes`; the chart sets it from the downward API)"},
		{Flag: "kubernetes.kubeconfig", Env: []string{"OTELBEE_KUBERNETES_KUBECONFIG"}, Key: "kubernetes.kubeconfig", Value: settings.String(&c.Kubeconfig),
			Default: "in-cluster service account", Help: "kubeconfig file of the API server"},
		{Flag: "kubernetes.app-labels", Env: []string{"OTELBEE_KUBERNETES_APP_LABELS"}, Key: "kubernetes.app_labels", Value: settings.Bool(&c.AppLabels),
			Help: "also take `service.name`/`service.version` from `app.kubernetes.io/*` pod labels"},
		{Key: "kubernetes.sync_timeout", Value: settings.Duration(&c.SyncTimeout), Default: "`10s`",
			Help: "how long the start waits for the first list of pods, so that the first identities already carry metadata"},
	}
}

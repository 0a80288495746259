package agent

import (
	"context"
	"log/slog"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/otelbee/otelbee/collectors/identity"
	"github.com/otelbee/otelbee/k8smeta"
)

// The Kubernetes variables join envVars here, beside the rest of the
// Kubernetes wiring.
func init() {
	envVars["OTELBEE_KUBERNETES"] = "kubernetes"
	envVars["OTELBEE_KUBERNETES_NODE_NAME"] = "kubernetes.node-name"
	envVars["OTELBEE_KUBERNETES_KUBECONFIG"] = "kubernetes.kubeconfig"
	envVars["OTELBEE_KUBERNETES_APP_LABELS"] = "kubernetes.app-labels"
}

// startKubernetes gives every identity the pod metadata of its container,
// when enabled. It runs before the collectors load, so their first series
// already carry it. A failure leaves the agent running with container ids.
func startKubernetes(ctx context.Context, cfg k8smeta.Config, mp *sdkmetric.MeterProvider, processes *identity.Resolver, logger *slog.Logger) (stop func()) {
	if !cfg.Enabled {
		return func() {}
	}
	log := logger.With("component", "kubernetes")
	src, err := k8smeta.Start(ctx, cfg, log)
	if err != nil {
		log.Error("kubernetes metadata disabled; series carry container ids only", "error", err)
		return func() {}
	}
	processes.SetContainerSource(src)
	reg, err := src.RegisterMetrics(mp.Meter("github.com/otelbee/otelbee/k8smeta"))
	if err != nil {
		log.Warn("kubernetes self-metrics unavailable", "error", err)
	}
	return func() {
		if reg != nil {
			reg.Unregister()
		}
		src.Close()
	}
}

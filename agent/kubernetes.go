package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/otelbee/otelbee/k8smeta"
	"github.com/otelbee/otelbee/process/identity"
)

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

// doctorKubernetes says whether the pod metadata would work: the API
// server answers and lists this node's pods.
func doctorKubernetes(ctx context.Context, w io.Writer, cfg k8smeta.Config) {
	if !cfg.Enabled {
		fmt.Fprintf(w, "kubernetes:   off (--kubernetes adds pod metadata)\n")
		return
	}
	cfg.SyncTimeout = 5 * time.Second
	src, err := k8smeta.Start(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Fprintf(w, "kubernetes:   cannot start: %v\n", err)
		return
	}
	defer src.Close()
	if !src.Synced() {
		fmt.Fprintf(w, "kubernetes:   node %s: the API server did not list the pods within %v (%d failed requests); series would carry container ids only\n",
			cfg.NodeName, cfg.SyncTimeout, src.FailedRequests())
		return
	}
	fmt.Fprintf(w, "kubernetes:   node %s: %d pods, %d containers with metadata\n", cfg.NodeName, src.Pods(), src.Containers())
}

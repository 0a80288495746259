// Package collectors defines what a collector is and what the agent hands it.
// Each collector lives in its own sub-package and knows nothing about
// exporters: it records on OpenTelemetry instruments and the agent's
// providers decide where that goes.
package collectors

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/collectors/identity"
)

// Collector observes one kind of activity in the kernel.
//
// The agent calls Load on every enabled collector first (probe, load,
// attach: anything that can fail because of the host fails here), then Run
// on those that loaded, then Close.
type Collector interface {
	// Name is the flag value, log component and self-metric label.
	Name() string
	// Load probes features, loads programs and attaches hooks.
	Load(ctx context.Context) error
	// Run reads maps and ring buffers until ctx is done or Close is called.
	Run(ctx context.Context) error
	// Close detaches everything. Idempotent.
	Close() error
}

// Deps is what the agent gives every collector.
type Deps struct {
	Logger         *slog.Logger
	Meter          metric.Meter
	TracerProvider trace.TracerProvider
	Processes      *identity.Resolver
	Probes         *hook.Probes
	Hooks          *hook.Registry
	Attach         hook.Options
}

// StageStats counts what one stage of a collector's pipeline handled. At
// every stage produced = delivered + dropped, up to what is in flight.
type StageStats struct {
	Stage     string // "ringbuf", "socks_map", ...
	Produced  uint64
	Delivered uint64
	Dropped   uint64
}

// PipelineReporter is implemented by collectors that can lose data; the
// agent exports the numbers as otelbee.events.* self-metrics.
type PipelineReporter interface {
	PipelineStats() []StageStats
}

// Package collectors defines what a collector is and what the agent hands it.
// Each collector lives in its own sub-package and knows nothing about
// exporters: it records on OpenTelemetry instruments and the agent's
// providers decide where that goes.
package collectors

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/collectors/series"
	"github.com/otelbee/otelbee/process/identity"
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
	Logger *slog.Logger // with the collector's component attribute
	// RootLogger is the agent's logger before any component attribute, for
	// a part shared by collectors that names its own component (the L7
	// capture's TLS source): slog cannot take an attribute back, and one
	// record with two components is ambiguous. Nil: use Logger.
	RootLogger     *slog.Logger
	Meter          metric.Meter
	TracerProvider trace.TracerProvider
	// Sampler is TracerProvider's sampler, when the agent knows it: a
	// collector asks it before starting a span (package sampling). Nil:
	// Tracer.Start decides.
	Sampler   sdktrace.Sampler
	Processes *identity.Resolver
	Probes    *hook.Probes
	Hooks     *hook.Registry
	Attach    hook.Options
	// Producers takes metrics aggregated in the kernel (nil: none wanted,
	// as in `otelbee doctor`).
	Producers *ProducerSet
	// SeriesBudget, when set, admits every new metric series of every
	// collector's series table (package series): the agent-wide budget.
	SeriesBudget series.Budget
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

// ProducerSet gathers the metrics collectors aggregate outside the SDK (in
// the kernel or per series) for the agent's readers, which take one
// producer each.
type ProducerSet struct {
	mu        sync.Mutex
	producers []sdkmetric.Producer
}

// Stop forgets every producer: at shutdown, once the exporters were
// flushed and the collectors closed, the readers' last collection must not
// read maps that are gone.
func (s *ProducerSet) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.producers = nil
}

// Add registers a producer; it is asked on every collection from then on.
func (s *ProducerSet) Add(p sdkmetric.Producer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.producers = append(s.producers, p)
}

// Produce implements sdkmetric.Producer.
func (s *ProducerSet) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	s.mu.Lock()
	ps := append([]sdkmetric.Producer(nil), s.producers...)
	s.mu.Unlock()
	var (
		out  []metricdata.ScopeMetrics
		errs []error
	)
	for _, p := range ps {
		sm, err := p.Produce(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		out = append(out, sm...)
	}
	return out, errors.Join(errs...)
}

// Package collectortest runs a collector against the running kernel for the
// privileged tests of every collector package, the way the kernel-matrix
// harness (e2e/vmtest) expects: it honours OTELBEE_ATTACH_MODE strictly,
// skips with the reason when the kernel lacks the forced mode or a hook's
// attach point, and prints one OTELBEE-PROGSTAT line per loaded program.
package collectortest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/process/identity"
)

// Env is what a started collector's test can inspect.
type Env struct {
	// Reader collects the collector's instruments and kernel-aggregated
	// metrics (its producer).
	Reader    *sdkmetric.ManualReader
	Registry  *hook.Registry
	Processes *identity.Resolver
	Force     hook.Mode
}

// Options tune Start.
type Options struct {
	// OptionalHooks may stay detached without failing the test.
	OptionalHooks []string
	// TracerProvider receives the collector's spans (default: none).
	TracerProvider trace.TracerProvider
	// FoldInstances runs the resolver as the agent does by default
	// (identity.InstanceService). Without it every process is its own
	// instance (identity.InstancePID): the tests count their own
	// process's series by process.pid, apart from other tests' traffic
	// on the host.
	FoldInstances bool
}

// Start loads the collector that build makes from the given Deps, runs it
// until the test ends, and checks its attach outcome.
func Start(t *testing.T, name string, build func(collectors.Deps) collectors.Collector, opts Options) (collectors.Collector, *Env) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	if err := hook.EnsureMounts(); err != nil {
		t.Logf("mounts: %v", err)
	}
	force, probes := ForcedMode(t)
	producers := &collectors.ProducerSet{}
	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(producers))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	env := &Env{Reader: reader, Registry: hook.NewRegistry(), Processes: identity.NewResolver("/proc", "testhost"), Force: force}
	if !opts.FoldInstances {
		env.Processes.InstanceMode = identity.InstancePID
	}
	c := build(collectors.Deps{
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", name),
		Meter:          mp.Meter("test"),
		TracerProvider: opts.TracerProvider,
		Processes:      env.Processes,
		Probes:         probes,
		Hooks:          env.Registry,
		Attach:         hook.Options{Force: force, Strict: true},
		Producers:      producers,
	})
	if err := c.Load(context.Background()); err != nil {
		if force != "" && hook.IsUnsupported(err) {
			t.Skipf("skipping: mode %s cannot attach a required %s hook on this kernel: %v", force, name, err)
		}
		t.Fatalf("loading the %s collector: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		c.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	CheckAttach(t, env.Registry, force, opts.OptionalHooks)
	return c, env
}

// ForcedMode reads OTELBEE_ATTACH_MODE, the mode the kernel matrix forces
// (no fallback), and skips the test when this kernel cannot run it.
func ForcedMode(t *testing.T) (hook.Mode, *hook.Probes) {
	t.Helper()
	force, err := hook.ParseMode(os.Getenv("OTELBEE_ATTACH_MODE"))
	if err != nil {
		t.Fatal(err)
	}
	probes := hook.NewProbes()
	if force != "" {
		if err := probes.Supports(force); err != nil {
			t.Skipf("skipping: forced attach mode %s is unavailable here: %v", force, err)
		}
	}
	return force, probes
}

// CheckAttach prints every loaded program for the kernel-matrix harness
// (e2e/vmtest reads the OTELBEE-PROGSTAT lines), then fails the test for a
// hook that did not attach (skips it when the forced mode has no attach
// point here) or attached in another mode than the forced one.
func CheckAttach(t *testing.T, reg *hook.Registry, force hook.Mode, optionalHooks []string) {
	t.Helper()
	for _, st := range reg.Statuses() {
		for _, p := range st.Programs {
			// Read by the kernel-matrix harness (e2e/vmtest).
			fmt.Printf("OTELBEE-PROGSTAT collector=%s program=%s mode=%s insns=%d load_us=%d\n",
				st.Collector, p.Program, p.Mode, p.VerifiedInstructions, p.LoadTime.Microseconds())
		}
		if !st.Attached() {
			errs := make([]error, 0, len(st.Attempts))
			for _, a := range st.Attempts {
				errs = append(errs, a.Err)
			}
			err := errors.Join(errs...)
			if force != "" && hook.IsUnsupported(err) {
				t.Skipf("skipping: hook %s has no %s attach point on this kernel: %v", st.Hook, force, err)
			}
			if slices.Contains(optionalHooks, st.Hook) {
				t.Logf("optional hook %s not attached: %v", st.Hook, err)
				continue
			}
			t.Fatalf("hook %s not attached: %v", st.Hook, err)
		}
		if force != "" && slices.Contains(st.Declared, force) && st.Mode != force {
			t.Errorf("hook %s: forced %s but attached %s", st.Hook, force, st.Mode)
		}
		t.Logf("hook %s: mode %q (declared %v)", st.Hook, st.Mode, st.Declared)
	}
}

// HistogramPoints collects reader once and returns the data points of the
// float64 histogram called name (none if it was not reported).
func HistogramPoints(tb testing.TB, reader *sdkmetric.ManualReader, name string) []metricdata.HistogramDataPoint[float64] {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		tb.Fatal(err)
	}
	var out []metricdata.HistogramDataPoint[float64]
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == name {
				out = append(out, h.DataPoints...)
			}
		}
	}
	return out
}

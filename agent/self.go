package agent

import (
	"context"
	"fmt"
	"github.com/otelbee/otelbee/collectors/budget"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/exporters/otlp"
	"github.com/otelbee/otelbee/process/identity"
)

// selfSources is what the agent's own telemetry reads.
type selfSources struct {
	hooks     *hook.Registry
	reporters func() []reporter
	processes *identity.Resolver
	budget    *budget.Budget // nil: none
	exporters []exportCounter
	bpfStats  bool
}

// reporter is a collector or another pipeline whose drops are self-metrics.
type reporter interface{ Name() string }

// spanQueueReporter puts the OTLP span queue and exporter among the
// pipeline stages (collector="otlp_traces"): stage "queue" (spans refused
// because the queue was full or shut down), stage "export" (spans the
// receiver accepted, or lost in failed requests).
type spanQueueReporter struct {
	q   spanQueueStats
	exp *otlp.TraceExporter
}

// spanQueueStats is what the span queue in front of the OTLP exporter
// counts: spans.TracerProvider's, or otlp.SpanQueue's when the console
// takes the SDK's spans too.
type spanQueueStats interface {
	Queued() uint64
	Dropped() uint64
	DroppedBy(otlp.Reason) uint64
}

func (spanQueueReporter) Name() string { return "otlp_traces" }

func (r spanQueueReporter) PipelineStats() []collectors.StageStats {
	exported, dropped := uint64(r.exp.Exported()), uint64(r.exp.Dropped())
	return []collectors.StageStats{{
		Stage:     "queue",
		Produced:  r.q.Queued() + r.q.Dropped(),
		Delivered: r.q.Queued(),
		Dropped:   r.q.Dropped(),
	}, {
		Stage:     "export",
		Produced:  exported + dropped,
		Delivered: exported,
		Dropped:   dropped,
	}}
}

// exportCounter is an exporter's accounting: failed requests, what the
// receiver accepted and what was lost, by reason.
type exportCounter struct {
	name string
	// unit is "spans" or "metric_points": the self-metric it feeds.
	unit     string
	failures func() int64
	exported func() int64
	dropped  func(otlp.Reason) int64
}

func traceExportCounter(q spanQueueStats, e *otlp.TraceExporter) exportCounter {
	return exportCounter{
		name: "otlp_traces", unit: "spans", failures: e.Failures, exported: e.Exported,
		dropped: func(r otlp.Reason) int64 { return int64(q.DroppedBy(r)) + e.DroppedBy(r) },
	}
}

func metricExportCounter(e *otlp.MetricExporter) exportCounter {
	return exportCounter{name: "otlp_metrics", unit: "metric_points", failures: e.Failures, exported: e.Exported, dropped: e.DroppedBy}
}

// registerSelfMetrics creates the otelbee.* instruments. Their data points
// carry no service.name, so they stay under the agent's own resource.
func registerSelfMetrics(m metric.Meter, src selfSources) (metric.Registration, error) {
	attached, err := m.Int64ObservableGauge("otelbee.bpf.program.attached",
		metric.WithDescription("1 for the attach mode a hook runs in, 0 for the modes declared but not used."))
	if err != nil {
		return nil, err
	}
	runTime, err := m.Float64ObservableCounter("otelbee.bpf.program.run_time", metric.WithUnit("s"),
		metric.WithDescription("Kernel time spent in each BPF program (needs --bpf.stats)."))
	if err != nil {
		return nil, err
	}
	runCount, err := m.Int64ObservableCounter("otelbee.bpf.program.run_count", metric.WithUnit("{run}"),
		metric.WithDescription("Times each BPF program ran (needs --bpf.stats)."))
	if err != nil {
		return nil, err
	}
	produced, err := m.Int64ObservableCounter("otelbee.events.produced", metric.WithUnit("{event}"),
		metric.WithDescription("Events that entered a pipeline stage."))
	if err != nil {
		return nil, err
	}
	delivered, err := m.Int64ObservableCounter("otelbee.events.delivered", metric.WithUnit("{event}"),
		metric.WithDescription("Events a pipeline stage passed on."))
	if err != nil {
		return nil, err
	}
	dropped, err := m.Int64ObservableCounter("otelbee.events.dropped", metric.WithUnit("{event}"),
		metric.WithDescription("Events a pipeline stage lost (ring buffer full, map full, undecodable)."))
	if err != nil {
		return nil, err
	}
	exportFailures, err := m.Int64ObservableCounter("otelbee.exporter.failures", metric.WithUnit("{export}"),
		metric.WithDescription("Exports that failed, by exporter."))
	if err != nil {
		return nil, err
	}
	spansExported, err := m.Int64ObservableCounter("otelbee.exporter.spans.exported", metric.WithUnit("{span}"),
		metric.WithDescription("Spans the OTLP receiver accepted, by exporter."))
	if err != nil {
		return nil, err
	}
	spansDropped, err := m.Int64ObservableCounter("otelbee.exporter.spans.dropped", metric.WithUnit("{span}"),
		metric.WithDescription("Spans that never reached the backend, by exporter and reason: export_failed (after retries), queue_full, shutdown, rejected (by the receiver, a partial success)."))
	if err != nil {
		return nil, err
	}
	pointsExported, err := m.Int64ObservableCounter("otelbee.exporter.metric_points.exported", metric.WithUnit("{data_point}"),
		metric.WithDescription("Metric data points the OTLP receiver accepted, by exporter."))
	if err != nil {
		return nil, err
	}
	pointsDropped, err := m.Int64ObservableCounter("otelbee.exporter.metric_points.dropped", metric.WithUnit("{data_point}"),
		metric.WithDescription("Metric data points that never reached the backend, by exporter and reason: export_failed (after retries), shutdown, rejected (by the receiver, a partial success)."))
	if err != nil {
		return nil, err
	}
	budgetKept, err := m.Int64ObservableGauge("otelbee.series.budget.used", metric.WithUnit("{series}"),
		metric.WithDescription("Metric series kept under the agent-wide series budget, by collector."))
	if err != nil {
		return nil, err
	}
	budgetLimit, err := m.Int64ObservableGauge("otelbee.series.budget.limit", metric.WithUnit("{series}"),
		metric.WithDescription("The agent-wide series budget (series.budget)."))
	if err != nil {
		return nil, err
	}
	budgetRefused, err := m.Int64ObservableCounter("otelbee.series.budget.refused", metric.WithUnit("{series}"),
		metric.WithDescription("New metric series the series budget sent to their collector's otel.metric.overflow series, by collector."))
	if err != nil {
		return nil, err
	}
	processes, err := m.Int64ObservableGauge("otelbee.process.cache.size", metric.WithUnit("{process}"),
		metric.WithDescription("Observed processes whose identity is cached."))
	if err != nil {
		return nil, err
	}
	cpu, err := m.Float64ObservableCounter("process.cpu.time", metric.WithUnit("s"),
		metric.WithDescription("CPU time of the agent process, by cpu.mode (user, system)."))
	if err != nil {
		return nil, err
	}
	rss, err := m.Int64ObservableUpDownCounter("process.memory.usage", metric.WithUnit("By"),
		metric.WithDescription("Resident memory of the agent process."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, st := range src.hooks.Statuses() {
			for _, mode := range st.Declared {
				v := int64(0)
				if mode == st.Mode {
					v = 1
				}
				o.ObserveInt64(attached, v, metric.WithAttributes(
					attribute.String("collector", st.Collector),
					attribute.String("program", st.Hook),
					attribute.String("mode", string(mode))))
			}
		}
		if src.bpfStats {
			for _, p := range src.hooks.Programs() {
				s, err := p.Program.Stats()
				if err != nil {
					continue
				}
				attrs := metric.WithAttributes(attribute.String("collector", p.Collector), attribute.String("program", p.Name))
				o.ObserveFloat64(runTime, s.Runtime.Seconds(), attrs)
				o.ObserveInt64(runCount, int64(s.RunCount), attrs)
			}
		}
		for _, c := range src.reporters() {
			pr, ok := c.(collectors.PipelineReporter)
			if !ok {
				continue
			}
			for _, s := range pr.PipelineStats() {
				attrs := metric.WithAttributes(attribute.String("collector", c.Name()), attribute.String("stage", s.Stage))
				if s.Produced > 0 || s.Delivered > 0 {
					o.ObserveInt64(produced, int64(s.Produced), attrs)
					o.ObserveInt64(delivered, int64(s.Delivered), attrs)
				}
				o.ObserveInt64(dropped, int64(s.Dropped), attrs)
			}
		}
		for _, e := range src.exporters {
			exp := attribute.String("exporter", e.name)
			o.ObserveInt64(exportFailures, e.failures(), metric.WithAttributes(exp))
			exported, dropped := spansExported, spansDropped
			if e.unit == "metric_points" {
				exported, dropped = pointsExported, pointsDropped
			}
			o.ObserveInt64(exported, e.exported(), metric.WithAttributes(exp))
			for _, r := range otlp.Reasons {
				if r == otlp.ReasonQueueFull && e.unit == "metric_points" {
					continue // metrics have no queue
				}
				o.ObserveInt64(dropped, e.dropped(r), metric.WithAttributes(exp, attribute.String("reason", r.String())))
			}
		}
		o.ObserveInt64(processes, int64(src.processes.Len()))
		if src.budget != nil {
			o.ObserveInt64(budgetLimit, int64(src.budget.Max()))
			for _, st := range src.budget.Stats() {
				attrs := metric.WithAttributes(attribute.String("collector", st.Table))
				o.ObserveInt64(budgetKept, st.Kept, attrs)
				o.ObserveInt64(budgetRefused, st.Refused, attrs)
			}
		}
		if u, err := selfUsage(); err == nil {
			o.ObserveFloat64(cpu, u.user, cpuModeUser)
			o.ObserveFloat64(cpu, u.system, cpuModeSystem)
			o.ObserveInt64(rss, u.rssBytes)
		}
		return nil
	}, attached, runTime, runCount, produced, delivered, dropped, exportFailures, budgetKept, budgetLimit, budgetRefused,
		spansExported, spansDropped, pointsExported, pointsDropped, processes, cpu, rss)
}

// The conventions' cpu.mode values of process.cpu.time, built once.
var (
	cpuModeUser   = metric.WithAttributes(attribute.String("cpu.mode", "user"))
	cpuModeSystem = metric.WithAttributes(attribute.String("cpu.mode", "system"))
)

// usage is the agent's CPU seconds by mode and its resident bytes.
type usage struct {
	user, system float64
	rssBytes     int64
}

// selfUsage reads the agent's usage from /proc.
func selfUsage() (usage, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return usage{}, err
	}
	return parseStat(string(b), os.Getpagesize())
}

// parseStat reads utime, stime (fields 14, 15, in clock ticks) and rss
// (field 24, in pages) from a /proc/<pid>/stat line.
func parseStat(s string, pageSize int) (usage, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return usage{}, fmt.Errorf("parsing /proc/self/stat: no command")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return usage{}, fmt.Errorf("parsing /proc/self/stat: %d fields", len(f))
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	pages, err3 := strconv.ParseInt(f[21], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return usage{}, fmt.Errorf("parsing /proc/self/stat: utime %q, stime %q, rss %q", f[11], f[12], f[21])
	}
	const ticksPerSecond = 100 // USER_HZ is 100 on every Linux ABI
	return usage{user: utime / ticksPerSecond, system: stime / ticksPerSecond, rssBytes: pages * int64(pageSize)}, nil
}

// Package agent wires configuration, collectors and exporters together and
// runs them: load everything first, then run, then shut down with a deadline.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/aggregate"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/exporters/otlp"
	promexp "github.com/otelbee/otelbee/exporters/prometheus"
	"github.com/otelbee/otelbee/exporters/spans"
	"github.com/otelbee/otelbee/process/execwatch"
	"github.com/otelbee/otelbee/process/identity"
)

// Version is set at build time (-ldflags "-X ...agent.Version=...").
var Version = "dev"

// cardinalityLimit bounds the series of each instrument in the SDK; beyond
// it, measurements fold into one series marked otel.metric.overflow=true.
const cardinalityLimit = 20000

// Run starts the agent and blocks until ctx is done.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	log := logger.With("component", "agent")
	for _, d := range cfg.Deprecated {
		log.Warn(d)
	}
	if cfg.Export.Disabled {
		// The specification's "disable the SDK for all signals": nothing to
		// produce telemetry for, so nothing is loaded.
		log.Warn("OTEL_SDK_DISABLED=true: no collector is loaded and nothing is exported; waiting for a signal to exit")
		<-ctx.Done()
		return nil
	}
	raiseFileLimit(log)
	log.Debug("exporters chosen", "otlp_metrics", cfg.Export.OTLPMetrics, "otlp_traces", cfg.Export.OTLPTraces,
		"console_metrics", cfg.Export.ConsoleMetrics, "console_traces", cfg.Export.ConsoleTraces, "prometheus", cfg.Prometheus.Listen)
	if err := hook.EnsureMounts(); err != nil {
		log.Warn("some pseudo file systems could not be mounted; dependent attach modes will be unavailable", "error", err)
	}
	if cfg.BPFStats {
		closer, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			log.Warn("BPF run-time statistics unavailable", "error", err)
		} else {
			defer closer.Close()
		}
	}

	res, err := agentResource(ctx)
	if err != nil {
		return err
	}
	// Metrics the collectors aggregate in the kernel reach both readers
	// through one producer.
	producers := &collectors.ProducerSet{}
	scoped := scopeVersion{producers}
	var (
		readers   []sdkmetric.Option
		exporters []exportCounter
		listener  net.Listener
		prom      *promexp.Exporter
	)
	if cfg.Prometheus.Listen != "" {
		listener, err = net.Listen("tcp", cfg.Prometheus.Listen)
		if err != nil {
			return fmt.Errorf("listening for prometheus on %s: %w", cfg.Prometheus.Listen, err)
		}
		defer listener.Close()
		prom = promexp.New(promexp.WithLogger(logger.With("component", "prometheus")), promexp.WithProducer(scoped),
			promexp.WithResourceLabels(cfg.Prometheus.ResourceLabels...))
		readers = append(readers, sdkmetric.WithReader(prom.Reader()))
	}
	otlpCfg := cfg.OTLP.exporterConfig()
	otlpCfg.Logger = logger.With("component", "otlp")
	// The exporters count and log their own failures (once per interval);
	// the SDK's other errors go to the log too, but not once per export.
	otel.SetErrorHandler(newErrorHandler(logger.With("component", "otel")))
	if cfg.Export.OTLPMetrics {
		exp, err := otlp.NewMetricExporter(ctx, otlpCfg)
		if err != nil {
			return fmt.Errorf("creating otlp metric exporter: %w", err)
		}
		// Before the collectors record: their histograms keep exponential
		// buckets too when the exporter wants them.
		if c, ok := exp.ExponentialHistograms(); ok {
			aggregate.EnableExponential(c)
		}
		// The periodic reader honours OTEL_METRIC_EXPORT_INTERVAL/_TIMEOUT;
		// its producer turns the collectors' cumulative histograms into what
		// the exporter's temporality and aggregation ask for.
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp,
			sdkmetric.WithProducer(exp.Producer(scoped, logger.With("component", "otlp"))))))
		exporters = append(exporters, metricExportCounter(exp))
		log.Info("exporting OTLP metrics", "protocol", exp.Protocol())
	}
	if cfg.Export.ConsoleMetrics {
		// For debugging (OTEL_METRICS_EXPORTER=console): one JSON document
		// per interval on stdout, under the agent's resource.
		cexp, err := stdoutmetric.New(stdoutmetric.WithWriter(os.Stdout))
		if err != nil {
			return fmt.Errorf("creating the console metric exporter: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(cexp, sdkmetric.WithProducer(scoped))))
		log.Info("exporting metrics to the console (stdout)")
	}
	if len(readers) == 0 {
		log.Warn("no metric exporter enabled: set --prometheus.listen, an OTLP endpoint or OTEL_METRICS_EXPORTER")
	}
	// Spans leave only through OTLP. Without an exporter the provider is a
	// no-op, so collectors can always ask for a tracer.
	var (
		tp        trace.TracerProvider = tracenoop.NewTracerProvider()
		shutdownT func(context.Context) error
		sampler   sdktrace.Sampler
		spanQueue spanQueueStats
		traceExp  *otlp.TraceExporter
	)
	if cfg.Export.OTLPTraces || cfg.Export.ConsoleTraces {
		// The sampler (OTEL_TRACES_SAMPLER(_ARG), validated with the config)
		// is given to the collectors too, with an ID generator that lets
		// them decide before starting a span (package sampling). The queue
		// honours OTEL_BSP_* (queue size, batch size, delays; bounded by the
		// config) and counts its drops, which the SDK's batcher does not.
		sampler, _ = sampling.Parse(cfg.OTLP.TracesSampler, cfg.OTLP.TracesSamplerArg)
		var texp *otlp.TraceExporter
		if cfg.Export.OTLPTraces {
			texp, err = otlp.NewTraceExporter(ctx, otlpCfg)
			if err != nil {
				return fmt.Errorf("creating otlp trace exporter: %w", err)
			}
			traceExp = texp
			log.Info("exporting OTLP traces", "protocol", texp.Protocol())
		}
		if !cfg.Export.ConsoleTraces {
			// OTLP only: spans are encoded as they end, straight into the
			// export request, one request for every service (package
			// spans), at a tenth of the SDK's cost per span.
			fast := spans.NewTracerProvider(texp, res, sampler, cfg.OTLP.SpanQueue)
			defer fast.Shutdown(expiredContext())
			tp, shutdownT, spanQueue = fast, fast.Shutdown, fast
		} else {
			// The console (a debugging aid) takes the SDK's spans, and so
			// then does OTLP.
			var processors []sdktrace.TracerProviderOption
			cexp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
			if err != nil {
				return fmt.Errorf("creating the console span exporter: %w", err)
			}
			processors = append(processors, sdktrace.WithSpanProcessor(otlp.NewSpanQueue(cexp, cfg.OTLP.SpanQueue)))
			log.Info("exporting spans to the console (stdout)")
			if texp != nil {
				q := otlp.NewSpanQueue(texp, cfg.OTLP.SpanQueue)
				processors = append(processors, sdktrace.WithSpanProcessor(q))
				spanQueue = q
			}
			stp := sdktrace.NewTracerProvider(append(processors, sdktrace.WithResource(res),
				sdktrace.WithSampler(sampler), sdktrace.WithIDGenerator(sampling.IDGenerator{}))...)
			// Shut down with the rest below; this covers the early returns.
			defer stp.Shutdown(expiredContext())
			tp, shutdownT = stp, stp.Shutdown
		}
		if texp != nil {
			exporters = append(exporters, traceExportCounter(spanQueue, texp))
		}
	}
	mp := sdkmetric.NewMeterProvider(append(readers,
		sdkmetric.WithResource(res),
		sdkmetric.WithCardinalityLimit(cardinalityLimit))...)

	force, _ := hook.ParseMode(cfg.AttachMode) // validated with the config
	host, _ := os.Hostname()
	processes := identity.NewResolver("/proc", host)
	processes.SetResourceAttributes(serviceResourceAttributes(&cfg))
	deps := collectors.Deps{
		TracerProvider: tp,
		Sampler:        sampler,
		Producers:      producers,
		Processes:      processes,
		Probes:         hook.NewProbes(),
		Hooks:          hook.NewRegistry(),
		Attach:         hook.Options{Force: force, Strict: cfg.AttachModeStrict},
		SeriesBudget:   seriesBudget(cfg.Series.MaxSeries),
	}
	deps.Processes.Retention = cfg.Process.Retention
	deps.Processes.ReleaseMemory = func() { releaseMemory(log, "a burst of processes forgotten") }
	deps.Processes.InstanceMode, _ = identity.ParseInstanceMode(cfg.Process.Instance) // validated with the config
	// Before anything looks a process up: identities learned at exec by a
	// previous run, which /proc may no longer show.
	if cfg.StateDir != "" {
		if err := deps.Processes.Persist(filepath.Join(cfg.StateDir, "processes.json"), logger.With("component", "identity")); err != nil {
			log.Warn("process identities will not survive a restart: services that rewrite their environment (nginx) may be renamed after one", "state_dir", cfg.StateDir, "error", err)
		}
	}

	stopKube := startKubernetes(ctx, cfg.Kubernetes, mp, deps.Processes, logger)
	defer stopKube()

	// The process watcher reads identities at exec, so that short-lived
	// processes keep theirs; without it identities are read on first use.
	var reporters []reporter
	if traceExp != nil {
		reporters = append(reporters, spanQueueReporter{q: spanQueue, exp: traceExp})
	}
	watcher, err := execwatch.NewWatcher(deps.Processes, deps.Probes, deps.Hooks, deps.Attach, logger.With("component", execwatch.WatcherName))
	if err != nil {
		log.Warn("process watcher unavailable: short-lived processes may be reported as unknown_service", "error", explainLoadError(err))
	} else {
		defer watcher.Close()
		reporters = append(reporters, watcher)
	}

	// Phase one: load every collector. One that cannot load on this host is
	// reported and left out; the others run.
	var loaded []collectors.Collector
	var mu sync.Mutex
	for _, name := range cfg.Collectors {
		d := deps
		d.Logger, d.RootLogger = logger.With("component", name), logger
		d.Meter = mp.Meter("github.com/otelbee/otelbee/collectors/"+name, metric.WithInstrumentationVersion(Version))
		c := factories[name](d, &cfg)
		if err := c.Load(ctx); err != nil {
			log.Error("collector disabled: it could not be loaded on this host", "collector", name, "error", explainLoadError(err))
			continue
		}
		log.Info("collector loaded", "collector", name)
		loaded = append(loaded, c)
	}
	// The collectors are loaded: the decoded kernel BTF they were loaded
	// against (~20 MB of heap) is not needed any more.
	hook.ReleaseKernelBTF()
	selfReg, err := registerSelfMetrics(mp.Meter("github.com/otelbee/otelbee/agent", metric.WithInstrumentationVersion(Version)), selfSources{
		hooks: deps.Hooks,
		reporters: func() []reporter {
			mu.Lock()
			defer mu.Unlock()
			out := append([]reporter{}, reporters...)
			for _, c := range loaded {
				out = append(out, c)
			}
			return out
		},
		processes: deps.Processes,
		budget:    budgetOf(deps.SeriesBudget),
		exporters: exporters,
		bpfStats:  cfg.BPFStats,
	})
	if err != nil {
		for _, c := range loaded {
			c.Close()
		}
		return fmt.Errorf("registering self metrics: %w", err)
	}
	defer selfReg.Unregister()
	if len(loaded) == 0 {
		if !cfg.RunWithoutCollectors {
			return errors.New("no collector could be loaded (see above; `otelbee doctor` says what this host lacks); --run-without-collectors keeps the agent running anyway")
		}
		log.Error("no collector could be loaded; serving self-telemetry only, as --run-without-collectors asks (run `otelbee doctor`)")
	}

	// Phase two: run.
	var wg sync.WaitGroup
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	// Identity sweeps its own cache and publishes exits, whatever
	// collectors run.
	wg.Add(1)
	go func() {
		defer wg.Done()
		deps.Processes.Run(runCtx)
	}()
	if watcher != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := watcher.Run(runCtx); err != nil {
				log.Error("process watcher stopped", "error", err)
			}
		}()
	}
	for _, c := range loaded {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(runCtx); err != nil {
				log.Error("collector stopped", "collector", c.Name(), "error", err)
			}
		}()
	}
	var srv *http.Server
	if prom != nil {
		// Connection cap, timeouts, and scrapes rendered into memory so a
		// slow reader holds no scrape slot (package prometheus).
		srv = prom.Server()
		srv.ErrorLog = slog.NewLogLogger(logger.With("component", "prometheus").Handler(), slog.LevelDebug)
		go func() {
			if err := srv.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("prometheus endpoint stopped", "error", err)
			}
		}()
		log.Info("serving prometheus metrics", "address", "http://"+listener.Addr().String()+"/metrics")
		if everyInterface(cfg.Prometheus.Listen) {
			log.Warn("the prometheus endpoint listens on every interface: anyone who can reach this host can read the metrics; give a host (127.0.0.1:9464) to restrict it", "listen", cfg.Prometheus.Listen)
		}
	}
	log.Info("otelbee running", "version", Version, "collectors", cfg.Collectors)
	go releaseStartupMemory(runCtx, startupSettle, log)

	<-ctx.Done()
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	// One deadline for the whole shutdown. The kernel needs tens of
	// milliseconds to detach each program (closing the collectors, or
	// exiting, pays it), so the exports get the deadline minus that
	// reserve; what they leave unsent is counted (reason="shutdown").
	start := time.Now()
	deadline := start.Add(cfg.ShutdownTimeout)
	reserve := min(time.Duration(len(deps.Hooks.Programs()))*detachCost+200*time.Millisecond, cfg.ShutdownTimeout/2)
	shutdownCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	exportCtx, cancelExport := context.WithDeadlineCause(shutdownCtx, deadline.Add(-reserve), otlp.ErrShutdownDeadline)
	defer cancelExport()
	// Metrics and spans flush at once. The meter provider's Shutdown is its
	// final collect and export, done first, while the collectors' maps can
	// still be read.
	var flushed sync.WaitGroup
	flushed.Add(1)
	go func() {
		defer flushed.Done()
		if err := mp.Shutdown(exportCtx); err != nil {
			log.Warn("flushing metrics at shutdown", "error", err)
		}
	}()
	if shutdownT != nil {
		if err := shutdownT(exportCtx); err != nil {
			log.Warn("flushing spans at shutdown", "error", err)
		}
	}
	flushed.Wait()
	if srv != nil {
		if err := srv.Shutdown(exportCtx); err != nil {
			srv.Close()
		}
	}
	tornDown := make(chan struct{})
	go func() {
		defer close(tornDown)
		stopRun()
		producers.Stop()
		for _, c := range loaded {
			c.Close()
		}
		wg.Wait()
	}()
	select {
	case <-tornDown:
		log.Debug("shut down", "took", time.Since(start))
	case <-shutdownCtx.Done():
		log.Warn("shutdown deadline reached: exiting without closing every collector; the kernel releases their programs and maps", "timeout", cfg.ShutdownTimeout)
	}
	return nil
}

// detachCost is a conservative share per program of detaching them all:
// the loaders close their links at once, so the kernel's grace periods
// overlap (measured: about 60 ms for the 30 programs of tcp, http, dns and
// the process watcher on a 2-core VM; 700 ms for http's 14 one by one).
const detachCost = 15 * time.Millisecond

// everyInterface reports whether a listen address binds every interface
// (":9464", "0.0.0.0:9464", "[::]:9464").
func everyInterface(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard one (Go does
// that too at start; this makes sure and reports it), and, where allowed
// (CAP_SYS_RESOURCE), the hard one to minFiles: the agent keeps a
// descriptor per map, program and link, plus its sockets.
func raiseFileLimit(log *slog.Logger) {
	const minFiles = 65536
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	want := lim
	want.Cur = max(lim.Cur, lim.Max)
	if want.Max < minFiles {
		raised := want
		raised.Max, raised.Cur = minFiles, minFiles
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &raised) == nil {
			log.Debug("raised the open file limit", "soft", raised.Cur, "hard", raised.Max)
			return
		}
	}
	if want.Cur != lim.Cur {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
			log.Warn("could not raise the open file limit", "soft", lim.Cur, "hard", lim.Max, "error", err)
			return
		}
	}
	if want.Cur < 4096 {
		log.Warn("the open file limit is low; the agent may run out of descriptors", "limit", want.Cur)
	}
}

// expiredContext is for shutdowns on error paths, which must not wait.
func expiredContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// scopeVersion gives the collectors' producer scopes the agent's version,
// as their meters have: one scope, one version, whichever way a metric is
// aggregated (otel_scope_version in Prometheus, the scope in OTLP).
type scopeVersion struct{ p sdkmetric.Producer }

func (s scopeVersion) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	sms, err := s.p.Produce(ctx)
	for i := range sms {
		if sms[i].Scope.Version == "" {
			sms[i].Scope.Version = Version
		}
	}
	return sms, err
}

// agentResource is the resource of the agent's own telemetry: the agent as
// a program (service.name=otelbee, its instance, its Go SDK), the host, and
// what the agent's own OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say,
// which win. Observed services take only its host.*, os.* (and cloud,
// Kubernetes node and cluster) attributes; their own come from
// serviceResourceAttributes.
func agentResource(ctx context.Context) (*resource.Resource, error) {
	host, _ := os.Hostname()
	res, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", "otelbee"),
			attribute.String("service.version", Version),
			attribute.String("service.instance.id", host+":"+strconv.Itoa(os.Getpid())),
		),
		resource.WithHost(),
		resource.WithOS(),
		resource.WithProcessPID(),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(distro()...),
		resource.WithFromEnv(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("building the agent resource: %w", err)
	}
	return res, nil
}

// distro describes the producer of the telemetry truthfully: otelbee, not
// the observed program's SDK (telemetry.sdk.language=go would be false for
// nginx or Python, whose runtime the agent does not claim to know).
func distro() []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("telemetry.distro.name", "otelbee"),
		attribute.String("telemetry.distro.version", Version),
	}
}

// serviceResourceAttributes are the resource attributes every observed
// service gets besides its identity and the host's: telemetry.distro.*, and
// --resource.attributes (validated with the config), which win over them. A
// program's own OTEL_RESOURCE_ATTRIBUTES win over both (package identity).
func serviceResourceAttributes(cfg *Config) []attribute.KeyValue {
	hostWide, _ := identity.ParseResourceAttributes(cfg.ResourceAttributes)
	return append(distro(), hostWide...)
}

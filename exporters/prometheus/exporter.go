// Package prometheus exposes the agent's metrics for Prometheus to scrape.
//
// The agent registers Reader() on its single MeterProvider. On each scrape
// the exporter collects from that reader, splits the data per observed
// service (package perservice) and translates it following the OpenTelemetry
// "Prometheus and OpenMetrics compatibility" specification as the
// OpenTelemetry Collector's Prometheus exporter does for many services behind
// one endpoint: job (service.namespace/service.name) and instance
// (service.instance.id) on every series, one target_info series per (job,
// instance) with the other resource attributes as labels, otel_scope_name /
// otel_scope_version on every series. Scrape it with honor_labels: true.
//
// The text formats are written straight from the collection with each
// series' labels rendered once and kept (exposition.go, scrape.go), and
// streamed; the protobuf format goes through client_golang (translate.go).
package prometheus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// maxConcurrentScrapes bounds the collections running at once: each one
// walks every series, and a burst of scrapers should not multiply that.
const maxConcurrentScrapes = 4

// Exporter serves the metrics of one MeterProvider in the Prometheus
// exposition formats.
type Exporter struct {
	reader      *sdkmetric.ManualReader
	registry    *prometheus.Registry
	handler     http.Handler
	logger      *slog.Logger
	scopeLabels bool
	// resourceLabels: resource attributes copied onto every series.
	resourceLabels []attribute.Key

	rms sync.Pool // *metricdata.ResourceMetrics, one per concurrent protobuf scrape

	// The text formats' path (scrape.go): the series' rendered labels,
	// the pooled state of scrapes, and the slots bounding collections.
	cache   *labelCache
	scrapes chan *scrapeState
	slots   chan struct{}
	legacy  http.Handler

	skipped atomic.Int64
	// logged holds the causes already logged at warn level, so a clash
	// present on every scrape is logged once, not every 15 seconds. The
	// causes are keyed by metric name, so the set is bounded by the
	// number of instruments.
	logged sync.Map
}

// Option configures an Exporter.
type Option func(*Exporter)

// WithLogger sets the logger for skipped series and scrape errors. The
// default discards.
func WithLogger(l *slog.Logger) Option {
	return func(e *Exporter) {
		if l != nil {
			e.logger = l
		}
	}
}

// WithoutScopeLabels drops the otel_scope_name / otel_scope_version labels
// the specification adds to every series by default (and provides this
// option to disable).
func WithoutScopeLabels() Option {
	return func(e *Exporter) { e.scopeLabels = false }
}

// WithResourceLabels copies the resource attributes keys (each sanitized
// into a label name, service.name → service_name) onto every series of a
// resource, besides job and instance; "*" copies them all, as the
// Collector's resource_to_telemetry_conversion does. Off by default: the
// specification keeps resource attributes on target_info, where a join
// reaches them, instead of multiplying every series' labels.
func WithResourceLabels(keys ...string) Option {
	return func(e *Exporter) {
		for _, k := range keys {
			e.resourceLabels = append(e.resourceLabels, attribute.Key(k))
		}
	}
}

// WithProducer adds metrics that are aggregated outside the SDK (the
// collectors' kernel-side histograms) to every scrape.
func WithProducer(p sdkmetric.Producer) Option {
	return func(e *Exporter) { e.reader = sdkmetric.NewManualReader(sdkmetric.WithProducer(p)) }
}

// New returns an Exporter. Register Reader() on the MeterProvider and serve
// Handler() (or call Serve).
func New(opts ...Option) *Exporter {
	e := &Exporter{
		// Prometheus wants cumulative data, which is the manual
		// reader's default temporality.
		reader:      sdkmetric.NewManualReader(),
		registry:    prometheus.NewRegistry(),
		logger:      slog.New(slog.DiscardHandler),
		scopeLabels: true,
	}
	for _, o := range opts {
		o(e)
	}
	// The agent's own Go runtime and process metrics come from its self
	// telemetry on the MeterProvider, so the registry holds only this
	// collector (no client_golang Go/process collectors).
	e.registry.MustRegister(collector{e})
	e.cache = newLabelCache(e.scopeLabels, e.resourceLabels)
	e.slots = make(chan struct{}, maxConcurrentScrapes)
	e.scrapes = make(chan *scrapeState, 2)
	promHandler := promhttp.HandlerFor(e.registry, promhttp.HandlerOpts{
		ErrorLog: errorLog{e.logger},
		// One bad series must not turn the whole scrape into a 500.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxConcurrentScrapes,
		// Lets scrapers that ask for OpenMetrics get # UNIT metadata.
		EnableOpenMetrics: true,
	})
	// The protobuf answer is built whole by client_golang: rendered into
	// memory while holding a slot, then written out without it.
	e.legacy = newBufferedHandler(promHandler, renderSlots, slotWait)
	e.handler = http.HandlerFunc(e.serveHTTP)
	return e
}

// serveHTTP answers the text formats from the SDK's data (scrape.go) and
// the protobuf format, asked for by scrapers of native histograms, through
// client_golang.
func (e *Exporter) serveHTTP(w http.ResponseWriter, r *http.Request) {
	format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultOpenMetricsAcceptedFormats()...)
	switch format.FormatType() {
	case expfmt.TypeTextPlain, expfmt.TypeOpenMetrics:
		e.serveText(w, r, format)
	default:
		e.legacy.ServeHTTP(w, r)
	}
}

// Reader returns the reader to register on the agent's MeterProvider with
// sdkmetric.WithReader.
func (e *Exporter) Reader() sdkmetric.Reader { return e.reader }

// Handler returns the /metrics handler.
func (e *Exporter) Handler() http.Handler { return e.handler }

// Skipped returns how many data points (or series) were left out of
// scrapes so far: name or type clashes, duplicate gauge series, delta
// temporality, unconvertible histograms. Each cause is also logged once.
func (e *Exporter) Skipped() int64 { return e.skipped.Load() }

// problem counts n skipped points and logs the cause the first time.
func (e *Exporter) problem(key, msg string, n int) {
	e.skipped.Add(int64(n))
	if _, seen := e.logged.LoadOrStore(key, struct{}{}); seen {
		e.logger.Debug("prometheus: skipped data points", "reason", msg, "points", n)
		return
	}
	e.logger.Warn("prometheus: skipped data points (logged once per cause)", "reason", msg, "points", n)
}

// collect runs one collection and translation.
func (e *Exporter) collect(ctx context.Context) []prometheus.Metric {
	// The SDK fills a ResourceMetrics it is handed again in place (data
	// point and bucket slices reused): one per concurrent scrape, pooled.
	// The translation copies what it keeps before the pool gets it back.
	rm, _ := e.rms.Get().(*metricdata.ResourceMetrics)
	if rm == nil {
		rm = new(metricdata.ResourceMetrics)
	}
	defer e.rms.Put(rm)
	if err := e.reader.Collect(ctx, rm); err != nil {
		if errors.Is(err, sdkmetric.ErrReaderNotRegistered) || errors.Is(err, sdkmetric.ErrReaderShutdown) {
			// Start-up or shutdown: nothing to expose yet / any more
			// (not even a previous scrape's data left in rm).
			*rm = metricdata.ResourceMetrics{}
			e.logger.Debug("prometheus: no metrics to scrape", "error", err)
		} else {
			e.logger.Warn("prometheus: collecting metrics", "error", err)
		}
		// Observable callbacks may have failed while others succeeded;
		// expose what was collected, if anything.
	}
	return newTranslator(e.scopeLabels, e.resourceLabels, e.problem).translate(rm)
}

// collector is the registry's only collector. It is "unchecked" (Describe
// sends nothing) because the series depend on which programs are observed
// right now and cannot be described up front.
type collector struct{ e *Exporter }

func (collector) Describe(chan<- *prometheus.Desc) {}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	// The Collector interface carries no request context.
	for _, m := range c.e.collect(context.Background()) {
		ch <- m
	}
}

// errorLog adapts slog to promhttp's logger.
type errorLog struct{ l *slog.Logger }

func (e errorLog) Println(v ...any) {
	e.l.Error("prometheus: serving metrics", "error", fmt.Sprint(v...))
}

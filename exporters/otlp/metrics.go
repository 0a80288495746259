package otlp

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/exporters/perservice"
)

// MetricExporter is an sdkmetric.Exporter sending one OTLP ResourceMetrics
// per observed service. Register it with sdkmetric.NewPeriodicReader.
type MetricExporter struct {
	inner    sdkmetric.Exporter
	protocol string

	failures atomic.Int64 // failed requests
	exported atomic.Int64 // data points accepted by the receiver
	dropped  drops        // data points in failed requests, by reason
	log      *failureLog
}

var _ sdkmetric.Exporter = (*MetricExporter)(nil)

// NewMetricExporter builds an OTLP metric exporter for cfg. It does not
// connect: the first Export does (a receiver that is down at start-up is not
// an error, only a failed export).
func NewMetricExporter(ctx context.Context, cfg Config) (*MetricExporter, error) {
	proto, err := cfg.protocol(metricsSignal)
	if err != nil {
		return nil, err
	}
	var endpoint string
	if cfg.Endpoint != "" {
		if endpoint, err = cfg.endpointURL(metricsSignal, proto); err != nil {
			return nil, err
		}
	}

	var inner sdkmetric.Exporter
	switch proto {
	case ProtocolGRPC:
		var opts []otlpmetricgrpc.Option
		if endpoint != "" {
			opts = append(opts, otlpmetricgrpc.WithEndpointURL(endpoint))
		}
		if inner, err = otlpmetricgrpc.New(ctx, opts...); err != nil {
			return nil, fmt.Errorf("creating otlp grpc metric exporter: %w", err)
		}
	default:
		var opts []otlpmetrichttp.Option
		if endpoint != "" {
			opts = append(opts, otlpmetrichttp.WithEndpointURL(endpoint))
		}
		if inner, err = otlpmetrichttp.New(ctx, opts...); err != nil {
			return nil, fmt.Errorf("creating otlp http metric exporter: %w", err)
		}
	}
	return &MetricExporter{inner: inner, protocol: proto, log: newFailureLog(cfg.Logger, "metric points")}, nil
}

// Protocol returns the protocol in use ("grpc" or "http/protobuf"), for the
// agent's start-up log.
func (e *MetricExporter) Protocol() string { return e.protocol }

// Temporality delegates to the OTLP exporter, which honours
// OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE.
func (e *MetricExporter) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return e.inner.Temporality(k)
}

// Aggregation delegates to the OTLP exporter, which honours
// OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION.
func (e *MetricExporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return e.inner.Aggregation(k)
}

// Export sends rm as one request per service. The Go OTLP exporter takes a
// single ResourceMetrics per call, so each service is its own request; they
// go out one after the other (the exporter serialises uploads anyway). A
// failed request does not stop the others. Failures are counted and logged
// here, once per interval for the whole export (not per service); the error
// returned names the first and wraps ErrReported.
func (e *MetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	var (
		first        error
		failed, lost int64
		reason       = ReasonExportFailed
		anyDelivered bool
	)
	for _, part := range perservice.SplitMetrics(rm) {
		n := int64(perservice.CountDataPoints(part))
		if n == 0 {
			continue // nothing to send; an empty request only costs
		}
		if err := e.inner.Export(ctx, part); err != nil {
			reason = reasonFor(ctx)
			e.failures.Add(1)
			e.dropped.add(reason, n)
			failed++
			lost += n
			if first == nil {
				first = err
			}
			continue
		}
		anyDelivered = true
		e.exported.Add(n)
	}
	if first == nil {
		if anyDelivered {
			e.log.success()
		}
		return nil
	}
	err := fmt.Errorf("exporting metrics over otlp %s: %d of the requests failed, %d points lost: %w", e.protocol, failed, lost, first)
	e.log.failure(err, failed, lost)
	return fmt.Errorf("%w: %w", ErrReported, err)
}

// ForceFlush delegates to the OTLP exporter.
func (e *MetricExporter) ForceFlush(ctx context.Context) error { return e.inner.ForceFlush(ctx) }

// Shutdown delegates to the OTLP exporter.
func (e *MetricExporter) Shutdown(ctx context.Context) error { return e.inner.Shutdown(ctx) }

// Failures returns the number of failed export requests so far.
func (e *MetricExporter) Failures() int64 { return e.failures.Load() }

// Exported returns the number of data points the receiver accepted so far.
func (e *MetricExporter) Exported() int64 { return e.exported.Load() }

// Dropped returns the number of data points lost in failed requests so far
// (produced = exported + dropped for this stage).
func (e *MetricExporter) Dropped() int64 { return e.dropped.total() }

// DroppedBy returns the data points lost for reason r (ReasonShutdown when
// the shutdown deadline cut the export short, ReasonExportFailed
// otherwise).
func (e *MetricExporter) DroppedBy(r Reason) int64 { return e.dropped[r].Load() }

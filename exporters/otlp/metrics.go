package otlp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/encoding/protowire"
)

// MetricExporter is an sdkmetric.Exporter sending one OTLP ResourceMetrics
// per observed service. Register it with sdkmetric.NewPeriodicReader.
type MetricExporter struct {
	inner    sdkmetric.Exporter // temporality and aggregation, from the environment
	sender   *sender            // sends every service's metrics in one request (sender.go)
	protocol string

	failures atomic.Int64 // failed requests
	exported atomic.Int64 // data points accepted by the receiver
	dropped  drops        // data points in failed requests, by reason
	log      *failureLog

	mu         sync.Mutex // one Export at a time (the SDK makes it so, too)
	enc        *metricEncoder
	maxRequest int // bytes: an export larger than this is split (maxRequestBytes)
}

// maxRequestBytes bounds one request: an export of more is split into
// several, between services. A Collector's OTLP/gRPC receiver refuses
// messages over 4 MiB by default (max_recv_msg_size_mib), its OTLP/HTTP
// receiver bodies over 20 MiB (max_request_body_size); ~8,000 series of
// a counter and a histogram each are 4 MiB.
const maxRequestBytes = 4 << 20

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
	snd, err := newSender(cfg, metricsSignal, proto)
	if err != nil {
		return nil, fmt.Errorf("creating otlp %s metric sender: %w", proto, err)
	}
	return &MetricExporter{inner: inner, sender: snd, protocol: proto, log: newFailureLog(cfg.Logger, "metric points"),
		enc: newMetricEncoder(), maxRequest: maxRequestBytes}, nil
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

// Export sends rm in one request, one ResourceMetrics per observed
// service (package perservice): an export is one request whatever the
// number of services, unless it is over maxRequestBytes (then several,
// split between services; a service is never split). The request is encoded from rm by metricEncoder, into
// buffers reused from one export to the next. A failure is counted and
// logged here, once per interval; the error returned wraps ErrReported.
func (e *MetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := int64(e.enc.encode(rm))
	services := len(e.enc.spans) - 1
	if n == 0 || services <= 0 {
		return nil // an empty request only costs
	}
	// One request for every service, unless that is larger than a
	// receiver takes: then several, split between services.
	var failed error
	for i := 0; i < services; {
		req := e.sender.request()
		var points int64
		j := i
		for ; j < services; j++ {
			body := e.enc.out[e.enc.spans[j]:e.enc.spans[j+1]]
			if j > i && len(req)+len(body)+protowire.SizeVarint(uint64(len(body)))+1 > e.maxRequest {
				break
			}
			req = appendRequestField(req, body)
			points += int64(len(e.enc.active[j].refs))
		}
		i = j
		if err := e.send(ctx, req, points); err != nil && failed == nil {
			failed = err
		}
	}
	return failed
}

// send sends one request of points data points and counts what became of
// them.
func (e *MetricExporter) send(ctx context.Context, req []byte, points int64) error {
	res, err := e.sender.send(ctx, req)
	if err != nil {
		e.failures.Add(1)
		e.dropped.add(reasonFor(ctx), points)
		err = fmt.Errorf("exporting metrics over otlp %s: %d points lost: %w", e.protocol, points, err)
		e.log.failure(err, 1, points)
		return fmt.Errorf("%w: %w", ErrReported, err)
	}
	rejected := min(res.rejected, points)
	if rejected > 0 || res.message != "" {
		e.dropped.add(ReasonRejected, rejected)
		e.log.partial(rejected, res.message)
	}
	e.exported.Add(points - rejected)
	e.log.success()
	return nil
}

// ForceFlush delegates to the OTLP exporter.
func (e *MetricExporter) ForceFlush(ctx context.Context) error { return e.inner.ForceFlush(ctx) }

// Shutdown closes the sender's connections and the OTLP exporter.
func (e *MetricExporter) Shutdown(ctx context.Context) error {
	return errors.Join(e.sender.close(), e.inner.Shutdown(ctx))
}

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

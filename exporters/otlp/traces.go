package otlp

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otelbee/otelbee/exporters/perservice"
)

// TraceExporter is an sdktrace.SpanExporter sending each observed service's
// spans under that service's resource. Register it with
// sdktrace.NewBatchSpanProcessor.
type TraceExporter struct {
	inner    *otlptrace.Exporter // the SDK's spans (ExportSpans: the console's path)
	sender   *sender             // encoded spans (ExportResourceSpans)
	protocol string

	failures atomic.Int64 // failed requests
	exported atomic.Int64 // spans accepted by the receiver
	dropped  drops        // spans in failed requests, by reason
	log      *failureLog
}

var _ sdktrace.SpanExporter = (*TraceExporter)(nil)

// NewTraceExporter builds an OTLP trace exporter for cfg. Like
// NewMetricExporter it does not connect until the first export.
func NewTraceExporter(ctx context.Context, cfg Config) (*TraceExporter, error) {
	proto, err := cfg.protocol(tracesSignal)
	if err != nil {
		return nil, err
	}
	var endpoint string
	if cfg.Endpoint != "" {
		if endpoint, err = cfg.endpointURL(tracesSignal, proto); err != nil {
			return nil, err
		}
	}

	var client otlptrace.Client
	switch proto {
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
		}
		client = otlptracegrpc.NewClient(opts...)
	default:
		var opts []otlptracehttp.Option
		if endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
		}
		client = otlptracehttp.NewClient(opts...)
	}
	inner, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("creating otlp %s trace exporter: %w", proto, err)
	}
	snd, err := newSender(cfg, tracesSignal, proto)
	if err != nil {
		return nil, fmt.Errorf("creating otlp %s trace sender: %w", proto, err)
	}
	return &TraceExporter{inner: inner, sender: snd, protocol: proto, log: newFailureLog(cfg.Logger, "spans")}, nil
}

// Protocol returns the protocol in use ("grpc" or "http/protobuf").
func (e *TraceExporter) Protocol() string { return e.protocol }

// ExportSpans re-attributes spans to their observed services and sends them
// in one request: the OTLP exporter groups spans into one ResourceSpans per
// distinct resource, so no per-service requests are needed here.
func (e *TraceExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	if err := e.inner.ExportSpans(ctx, perservice.SplitSpans(spans)); err != nil {
		// The OTLP exporter has retried already (OTEL_EXPORTER_OTLP_TIMEOUT
		// bounds it): these spans are lost.
		e.failures.Add(1)
		e.dropped.add(reasonFor(ctx), int64(len(spans)))
		err = fmt.Errorf("exporting spans over otlp %s: %w", e.protocol, err)
		e.log.failure(err, 1, int64(len(spans)))
		return fmt.Errorf("%w: %w", ErrReported, err)
	}
	e.exported.Add(int64(len(spans)))
	e.log.success()
	return nil
}

// ExportResourceSpans sends already encoded ResourceSpans messages (their
// bodies: package spans writes them) in one request holding spans spans,
// through the sender (sender.go): the traces variables' endpoint, headers,
// timeout, compression and TLS, retries, partial success.
func (e *TraceExporter) ExportResourceSpans(ctx context.Context, resourceSpans [][]byte, spans int) error {
	if len(resourceSpans) == 0 {
		return nil
	}
	req := e.sender.request()
	for _, b := range resourceSpans {
		req = appendRequestField(req, b)
	}
	n := int64(spans)
	res, err := e.sender.send(ctx, req)
	if err != nil {
		e.failures.Add(1)
		e.dropped.add(reasonFor(ctx), n)
		err = fmt.Errorf("exporting spans over otlp %s: %w", e.protocol, err)
		e.log.failure(err, 1, n)
		return fmt.Errorf("%w: %w", ErrReported, err)
	}
	rejected := min(res.rejected, n)
	if rejected > 0 || res.message != "" {
		e.dropped.add(ReasonRejected, rejected)
		e.log.partial(rejected, res.message)
	}
	e.exported.Add(n - rejected)
	e.log.success()
	return nil
}

// Shutdown closes the sender's connections and the OTLP exporter.
func (e *TraceExporter) Shutdown(ctx context.Context) error {
	return errors.Join(e.sender.close(), e.inner.Shutdown(ctx))
}

// Failures returns the number of failed export requests so far.
func (e *TraceExporter) Failures() int64 { return e.failures.Load() }

// Exported returns the number of spans the receiver accepted so far.
func (e *TraceExporter) Exported() int64 { return e.exported.Load() }

// Dropped returns the number of spans lost in failed requests so far.
func (e *TraceExporter) Dropped() int64 { return e.dropped.total() }

// DroppedBy returns the spans lost in failed requests for reason r:
// ReasonShutdown when the shutdown deadline cut the request short,
// ReasonExportFailed otherwise.
func (e *TraceExporter) DroppedBy(r Reason) int64 { return e.dropped[r].Load() }

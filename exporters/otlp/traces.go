package otlp

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/otelbee/otelbee/exporters/perservice"
)

// TraceExporter is an sdktrace.SpanExporter sending each observed service's
// spans under that service's resource. Register it with
// sdktrace.NewBatchSpanProcessor.
type TraceExporter struct {
	inner    *otlptrace.Exporter
	client   otlptrace.Client
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
	return &TraceExporter{inner: inner, client: client, protocol: proto, log: newFailureLog(cfg.Logger, "spans")}, nil
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
// through the OTLP exporter's own client, so that its retries, timeout,
// compression, headers and TLS apply. Each body travels as the unknown
// fields of an empty ResourceSpans, which protobuf writes out as they are:
// the request on the wire is the one its fields would make.
func (e *TraceExporter) ExportResourceSpans(ctx context.Context, resourceSpans [][]byte, spans int) error {
	if len(resourceSpans) == 0 {
		return nil
	}
	msgs := make([]tracepb.ResourceSpans, len(resourceSpans))
	ptrs := make([]*tracepb.ResourceSpans, len(resourceSpans))
	for i, b := range resourceSpans {
		msgs[i].ProtoReflect().SetUnknown(protoreflect.RawFields(b))
		ptrs[i] = &msgs[i]
	}
	if err := e.client.UploadTraces(ctx, ptrs); err != nil {
		e.failures.Add(1)
		e.dropped.add(reasonFor(ctx), int64(spans))
		err = fmt.Errorf("exporting spans over otlp %s: %w", e.protocol, err)
		e.log.failure(err, 1, int64(spans))
		return fmt.Errorf("%w: %w", ErrReported, err)
	}
	e.exported.Add(int64(spans))
	e.log.success()
	return nil
}

// Shutdown delegates to the OTLP exporter.
func (e *TraceExporter) Shutdown(ctx context.Context) error { return e.inner.Shutdown(ctx) }

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

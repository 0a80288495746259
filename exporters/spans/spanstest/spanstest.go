// Package spanstest lets a collector's tests compare the spans it makes
// through spans.Emitter's two ways: this package's Emit, and the trace API
// (what spans.EmitterOf does with a tracer that has no Emit, the SDK's).
// Both go into a spans.TracerProvider whose export requests a Recorder
// decodes, so the comparison is of the OTLP a receiver gets.
package spanstest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/otelbee/otelbee/exporters/otlp"
	"github.com/otelbee/otelbee/exporters/spans"
)

// Recorder is a spans.Exporter keeping every request, decoded.
type Recorder struct {
	mu       sync.Mutex
	requests []*coltracepb.ExportTraceServiceRequest
}

// ExportResourceSpans implements spans.Exporter.
func (r *Recorder) ExportResourceSpans(_ context.Context, parts [][]byte, _ int) error {
	var raw []byte
	for _, p := range parts {
		raw = protowire.AppendTag(raw, 1, protowire.BytesType) // resource_spans
		raw = protowire.AppendBytes(raw, p)
	}
	req := &coltracepb.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		return fmt.Errorf("decoding the request: %w", err)
	}
	r.mu.Lock()
	r.requests = append(r.requests, req)
	r.mu.Unlock()
	return nil
}

// Shutdown implements spans.Exporter.
func (r *Recorder) Shutdown(context.Context) error { return nil }

// Requests returns the requests exported so far.
func (r *Recorder) Requests() []*coltracepb.ExportTraceServiceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*coltracepb.ExportTraceServiceRequest(nil), r.requests...)
}

// Provider is a spans.TracerProvider (sampler: sampler, nil: the default)
// recording into its Recorder; it is shut down with the test.
type Provider struct {
	*spans.TracerProvider
	Recorder *Recorder
}

// New returns a Provider with a large queue, exporting only when flushed.
func New(tb testing.TB, sampler sdktrace.Sampler) *Provider {
	r := &Recorder{}
	p := spans.NewTracerProvider(r, resource.Empty(), sampler, otlp.QueueSettings{MaxQueueSize: 1 << 20, MaxExportBatchSize: 1 << 20, ScheduleDelay: time.Hour})
	tb.Cleanup(func() { p.Shutdown(context.Background()) })
	return &Provider{TracerProvider: p, Recorder: r}
}

// ResourceSpans flushes p and returns every ResourceSpans exported so far.
func (p *Provider) ResourceSpans(tb testing.TB) []*tracepb.ResourceSpans {
	tb.Helper()
	if err := p.ForceFlush(context.Background()); err != nil {
		tb.Fatal(err)
	}
	var out []*tracepb.ResourceSpans
	for _, req := range p.Recorder.Requests() {
		out = append(out, req.ResourceSpans...)
	}
	return out
}

// APIOnly is p with its tracers' Emit hidden: a collector given it makes
// its spans through the trace API (Start, SetAttributes, SetStatus, End),
// as it does with the SDK's provider.
func APIOnly(p *Provider) trace.TracerProvider { return apiProvider{p: p.TracerProvider} }

type apiProvider struct {
	embedded.TracerProvider
	p *spans.TracerProvider
}

func (a apiProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return apiTracer{Tracer: a.p.Tracer(name, opts...)}
}

type apiTracer struct{ trace.Tracer }

// Diff compares the spans of two runs of the same exchanges, one through
// Emit, one through the trace API: the same resources, scopes and spans in
// the same order, field by field; span ids (drawn per span) and a root's
// trace id (drawn per trace) are not compared. It returns "" when equal.
func Diff(want, got []*tracepb.ResourceSpans) string {
	norm := func(rss []*tracepb.ResourceSpans) []*tracepb.ResourceSpans {
		out := make([]*tracepb.ResourceSpans, len(rss))
		for i, rs := range rss {
			rs = proto.Clone(rs).(*tracepb.ResourceSpans)
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					s.SpanId = nil
					if len(s.ParentSpanId) == 0 {
						s.TraceId = nil
					}
				}
			}
			out[i] = rs
		}
		return out
	}
	w, g := norm(want), norm(got)
	if len(w) != len(g) {
		return fmt.Sprintf("%d resources, want %d:\n%v\nwant\n%v", len(g), len(w), g, w)
	}
	n := 0
	for i := range w {
		if !proto.Equal(w[i], g[i]) {
			return fmt.Sprintf("resource %d:\n%v\nwant (the trace API's)\n%v", i, g[i], w[i])
		}
		for _, ss := range w[i].ScopeSpans {
			n += len(ss.Spans)
		}
	}
	if n == 0 {
		return "no spans at all"
	}
	return ""
}

// Count returns the spans in rss.
func Count(rss []*tracepb.ResourceSpans) int {
	n := 0
	for _, rs := range rss {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	return n
}

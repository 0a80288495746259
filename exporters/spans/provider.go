// Package spans is the agent's span path: an implementation of the
// OpenTelemetry trace API (TracerProvider, Tracer, Span) that encodes every
// ended span straight into the OTLP wire format, into buffers reused from
// one export to the next, under the resource of the observed service the
// span belongs to.
//
// The collectors hand finished spans over whole (Emitter, emit.go: no
// allocation, a series' attributes encoded once), with the identity of the
// observed program among the span's attributes (package perservice); the
// trace API (Start, End) is there for any other caller, and EmitterOf
// drives another provider's (the SDK's, behind the console exporter)
// through it. The SDK's provider costs ~30 µs of
// CPU per exported span here: a span object, attribute sets, a copy for the
// batcher, the per-service re-attribution, protobuf structs, then
// reflection-driven marshalling. This package keeps a pooled record per live
// span, moves the identity attributes to the service's resource (encoded
// once per service) and appends the span's encoding to that service's
// buffer when it ends; an export sends the pending spans of every service
// in one request (of at most OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans), through
// the OTLP exporter's sender (package otlp: retries, timeout, compression, headers and
// TLS from the OTEL_EXPORTER_OTLP_* variables).
//
// Every sampled span that ends is, exactly once: exported, counted dropped
// by the exporter (a failed request), dropped because the queue was full
// (OTEL_BSP_MAX_QUEUE_SIZE spans pending) or dropped at shutdown.
package spans

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/exporters/otlp"
	"github.com/otelbee/otelbee/exporters/perservice"
)

// Exporter sends encoded spans. otlp.TraceExporter is one.
type Exporter interface {
	// ExportResourceSpans sends the ResourceSpans messages (their encoded
	// bodies) in one request holding spans spans, and counts them
	// exported or lost. The buffers are reused once it returns.
	ExportResourceSpans(ctx context.Context, resourceSpans [][]byte, spans int) error
	Shutdown(ctx context.Context) error
}

// Limits from the OpenTelemetry specification's defaults
// (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, _EVENT_COUNT_LIMIT, _LINK_COUNT_LIMIT):
// what a span holds beyond them is counted in its dropped_*_count fields.
const (
	maxAttributes = 128
	maxEvents     = 128
	maxLinks      = 128
)

// idleExports is after how many exports without a span a service's buffers
// and encoded resource are let go: services come and go with processes.
const idleExports = 30

// TracerProvider is a trace.TracerProvider whose spans are encoded to OTLP
// as they end and exported in batches. Create it with NewTracerProvider.
type TracerProvider struct {
	embedded.TracerProvider

	sampler   sdktrace.Sampler
	exp       Exporter
	batchSize int
	maxQueue  int
	delay     time.Duration
	timeout   time.Duration

	// Records of ended spans, kept for the next ones with their buffers'
	// capacity (a sync.Pool would drop them at every other collection, and
	// with them their grown buffers).
	freeMu sync.Mutex
	free   []*record

	tracersMu sync.Mutex
	tracers   map[scopeKey]*tracer

	mu        sync.Mutex
	closed    bool // the final export has taken what was pending
	resources *perservice.Resources
	agent     *service // spans with no service.name
	services  map[uint64][]*service
	all       []*service
	last      *service  // the service of the last span: usually the next one's
	scopes    []*tracer // by index
	pending   int

	queued       atomic.Uint64
	droppedFull  atomic.Uint64
	droppedClose atomic.Uint64
	stopped      atomic.Bool

	// base is the parent of every export's context; the shutdown deadline
	// cancels it (cause otlp.ErrShutdownDeadline).
	base       context.Context
	cancelBase context.CancelCauseFunc
	kick       chan struct{}
	flushReq   chan chan struct{}
	stop       chan struct{}
	done       chan struct{}
	stopOnce   sync.Once

	// Owned by the export loop.
	req   []byte
	parts [][]byte
}

var _ trace.TracerProvider = (*TracerProvider)(nil)

// service is one observed service's resource and pending spans.
type service struct {
	hash     uint64
	ident    []attribute.KeyValue
	resource []byte // the ResourceSpans.resource field, encoded
	schema   string
	scopes   [][]byte // by tracer index: encoded ScopeSpans.spans fields
	counts   []int    // spans in each of scopes
	pending  int
	idle     int
	evicted  bool // let go: an Attributes holding it looks it up again
}

// NewTracerProvider starts a provider exporting through exp. res is the
// agent's resource (the base of every service's, and the resource of spans
// that name no service); sampler decides which spans are recorded (nil:
// parentbased_always_on). Zero fields of s take the specification's
// defaults; spans are exported when s.MaxExportBatchSize are pending or
// every s.ScheduleDelay, at most s.MaxQueueSize held at once.
func NewTracerProvider(exp Exporter, res *resource.Resource, sampler sdktrace.Sampler, s otlp.QueueSettings) *TracerProvider {
	d := otlp.DefaultQueueSettings()
	if s.MaxQueueSize <= 0 {
		s.MaxQueueSize = d.MaxQueueSize
	}
	if s.MaxExportBatchSize <= 0 {
		s.MaxExportBatchSize = d.MaxExportBatchSize
	}
	s.MaxExportBatchSize = min(s.MaxExportBatchSize, s.MaxQueueSize)
	if s.ScheduleDelay <= 0 {
		s.ScheduleDelay = d.ScheduleDelay
	}
	if s.ExportTimeout <= 0 {
		s.ExportTimeout = d.ExportTimeout
	}
	if sampler == nil {
		sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	if res == nil {
		res = resource.Empty()
	}
	base, cancel := context.WithCancelCause(context.Background())
	p := &TracerProvider{
		sampler:    sampler,
		exp:        exp,
		batchSize:  s.MaxExportBatchSize,
		maxQueue:   s.MaxQueueSize,
		delay:      s.ScheduleDelay,
		timeout:    s.ExportTimeout,
		tracers:    make(map[scopeKey]*tracer),
		resources:  perservice.NewResources(res),
		services:   make(map[uint64][]*service),
		base:       base,
		cancelBase: cancel,
		kick:       make(chan struct{}, 1),
		flushReq:   make(chan chan struct{}),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	p.agent = &service{resource: resourceField(res), schema: res.SchemaURL()}
	go p.run()
	return p
}

func resourceField(res *resource.Resource) []byte {
	return appendMessage(nil, fResourceSpansResource, encodeResource(res.Attributes()))
}

type scopeKey struct {
	name, version, schemaURL string
	attrs                    attribute.Distinct
}

// Tracer implements trace.TracerProvider.
func (p *TracerProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	cfg := trace.NewTracerConfig(opts...)
	attrs := cfg.InstrumentationAttributes()
	k := scopeKey{name: name, version: cfg.InstrumentationVersion(), schemaURL: cfg.SchemaURL(), attrs: attrs.Equivalent()}
	p.tracersMu.Lock()
	defer p.tracersMu.Unlock()
	if t := p.tracers[k]; t != nil {
		return t
	}
	t := &tracer{
		p:      p,
		scope:  appendMessage(nil, fScopeSpansScope, encodeScope(name, k.version, attrs.ToSlice())),
		schema: k.schemaURL,
	}
	p.mu.Lock()
	t.idx = len(p.scopes)
	p.scopes = append(p.scopes, t)
	p.mu.Unlock()
	p.tracers[k] = t
	return t
}

// Queued counts the spans that entered the queue; Dropped those refused
// (queue full, shut down) or left in it when the shutdown deadline ran out.
func (p *TracerProvider) Queued() uint64 { return p.queued.Load() }

// Dropped returns the spans the queue lost, for every reason.
func (p *TracerProvider) Dropped() uint64 { return p.droppedFull.Load() + p.droppedClose.Load() }

// DroppedBy returns the spans the queue lost for reason r
// (otlp.ReasonQueueFull or otlp.ReasonShutdown; export failures are the
// exporter's).
func (p *TracerProvider) DroppedBy(r otlp.Reason) uint64 {
	switch r {
	case otlp.ReasonQueueFull:
		return p.droppedFull.Load()
	case otlp.ReasonShutdown:
		return p.droppedClose.Load()
	}
	return 0
}

// enqueue appends an ended span, encoded in rec.buf (a ScopeSpans.spans
// field) with the identity attributes rec.ident, or series' (both empty:
// the agent's own), to its service's buffer.
func (p *TracerProvider) enqueue(t *tracer, rec *record, series *Attributes) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.droppedClose.Add(1)
		return
	}
	if p.pending >= p.maxQueue {
		p.mu.Unlock()
		p.droppedFull.Add(1)
		return
	}
	svc := p.agent
	switch {
	case series != nil && len(series.ident) > 0:
		if series.svc == nil || series.svc.evicted {
			series.svc = p.serviceOf(series.ident)
		}
		svc = series.svc
	case len(rec.ident) > 0:
		svc = p.serviceOf(rec.ident)
	}
	for len(svc.scopes) <= t.idx {
		svc.scopes = append(svc.scopes, nil)
		svc.counts = append(svc.counts, 0)
	}
	svc.scopes[t.idx] = append(svc.scopes[t.idx], rec.buf...)
	svc.counts[t.idx]++
	svc.pending++
	p.pending++
	full := p.pending >= p.batchSize
	p.mu.Unlock()
	p.queued.Add(1)
	if full {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// serviceOf finds (or creates) the service with identity ident. Called
// with p.mu held.
func (p *TracerProvider) serviceOf(ident []attribute.KeyValue) *service {
	if p.last != nil && sameOrder(p.last.ident, ident) {
		return p.last
	}
	h := identityHash(ident)
	for _, s := range p.services[h] {
		if sameSet(s.ident, ident) {
			p.last = s
			return s
		}
	}
	kvs := append([]attribute.KeyValue(nil), ident...)
	res := p.resources.For(append([]attribute.KeyValue(nil), ident...))
	s := &service{hash: h, ident: kvs, resource: resourceField(res), schema: res.SchemaURL()}
	p.services[h] = append(p.services[h], s)
	p.all = append(p.all, s)
	p.last = s
	return s
}

// take moves up to max pending spans into p.req as one encoded
// ResourceSpans per service (p.parts) and returns how many it took. final
// marks the provider closed: a span ending after it is counted dropped.
func (p *TracerProvider) take(final bool, max int) int {
	p.req = p.req[:0]
	p.parts = p.parts[:0]
	var bounds []int
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = p.closed || final
	if p.pending == 0 {
		p.evictIdle()
		return 0
	}
	n := 0
	if p.agent.pending > 0 {
		bounds, n = p.appendService(bounds, p.agent, n, max)
	}
	for _, s := range p.all {
		if n == max {
			break
		}
		if s.pending > 0 {
			bounds, n = p.appendService(bounds, s, n, max)
		}
	}
	p.pending -= n
	p.evictIdle()
	for i := 0; i < len(bounds); i += 2 {
		p.parts = append(p.parts, p.req[bounds[i]:bounds[i+1]])
	}
	return n
}

// appendService appends s's ResourceSpans body to p.req with as many of
// its spans as keep the request's total n at most max, leaving the rest for
// the next request. It returns bounds with the body's start and end
// appended, and the new total.
func (p *TracerProvider) appendService(bounds []int, s *service, n, max int) ([]int, int) {
	start := len(p.req)
	p.req = append(p.req, s.resource...)
	for idx, spans := range s.scopes {
		if len(spans) == 0 || n == max {
			continue
		}
		k, cut := s.counts[idx], len(spans)
		if n+k > max {
			k = max - n
			cut = spanBytes(spans, k)
		}
		t := p.scopes[idx]
		size := len(t.scope) + cut
		if t.schema != "" {
			size += 1 + stringSize(t.schema)
		}
		p.req = appendTagLen(p.req, fResourceSpansScopeSpans, size)
		p.req = append(p.req, t.scope...)
		p.req = append(p.req, spans[:cut]...)
		if t.schema != "" {
			p.req = appendString(p.req, fScopeSpansSchemaURL, t.schema)
		}
		s.scopes[idx] = spans[:copy(spans, spans[cut:])]
		s.counts[idx] -= k
		s.pending -= k
		n += k
	}
	if s.schema != "" {
		p.req = appendString(p.req, fResourceSpansSchemaURL, s.schema)
	}
	s.idle = 0
	return append(bounds, start, len(p.req)), n
}

// spanBytes returns the length of the first k encoded spans of b (each a
// tagged, length-delimited field).
func spanBytes(b []byte, k int) int {
	off := 0
	for range k {
		_, _, tl := protowire.ConsumeTag(b[off:])
		_, vl := protowire.ConsumeBytes(b[off+tl:])
		off += tl + vl
	}
	return off
}

// evictIdle lets go of the services that had no span for idleExports
// exports. Called with p.mu held.
func (p *TracerProvider) evictIdle() {
	kept := p.all[:0]
	evicted := false
	for _, s := range p.all {
		if s.pending == 0 {
			s.idle++
		}
		if s.idle > idleExports {
			evicted = true
			s.evicted = true
			continue
		}
		kept = append(kept, s)
	}
	clear(p.all[len(kept):])
	p.all = kept
	if !evicted {
		return
	}
	clear(p.services)
	for _, s := range p.all {
		p.services[s.hash] = append(p.services[s.hash], s)
	}
	p.last = nil
	// Resources built for the evicted services are not needed any more;
	// the live ones keep their encoded resource.
	p.resources.Forget()
}

func (p *TracerProvider) run() {
	defer close(p.done)
	timer := time.NewTimer(p.delay)
	defer timer.Stop()
	for {
		select {
		case <-p.kick:
			p.export(false)
		case <-timer.C:
			p.export(false)
			timer.Reset(p.delay)
		case ack := <-p.flushReq:
			p.export(false)
			close(ack)
		case <-p.stop:
			p.export(true)
			return
		}
	}
}

// export sends what is pending, in requests of at most
// OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans, each carrying every service it has
// spans of; final closes the provider.
func (p *TracerProvider) export(final bool) {
	for {
		n := p.take(final, p.batchSize)
		if n == 0 {
			return
		}
		if p.base.Err() != nil {
			p.droppedClose.Add(uint64(n))
			continue
		}
		ctx, cancel := context.WithTimeout(p.base, p.timeout)
		// Failures are counted and logged by the exporter, which knows why.
		_ = p.exp.ExportResourceSpans(ctx, p.parts, n)
		cancel()
		clear(p.parts)
	}
}

// ForceFlush exports everything pending so far.
func (p *TracerProvider) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case p.flushReq <- ack:
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is pending and shuts the exporter down, within ctx:
// when its deadline comes, the export in flight is cancelled and what it
// held is counted lost (reason shutdown). Spans ending afterwards are
// counted dropped (reason shutdown).
func (p *TracerProvider) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() {
		p.stopped.Store(true)
		close(p.stop)
	})
	stopCancel := context.AfterFunc(ctx, func() { p.cancelBase(otlp.ErrShutdownDeadline) })
	defer stopCancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		select {
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
	return p.exp.Shutdown(ctx)
}

// tracer is one instrumentation scope.
type tracer struct {
	embedded.Tracer
	p      *TracerProvider
	idx    int
	scope  []byte // the ScopeSpans.scope field, encoded
	schema string
}

var _ trace.Tracer = (*tracer)(nil)

var idGen sampling.IDGenerator

// Start implements trace.Tracer. The sampler is asked as the SDK asks it,
// with the trace id sampling.WithTraceID put in ctx, so a collector that
// decided beforehand (sampling.Decide) gets the same answer.
func (t *tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	var parent trace.SpanContext
	if !cfg.NewRoot() {
		parent = trace.SpanContextFromContext(ctx)
	}
	kind := cfg.SpanKind()
	if kind == trace.SpanKindUnspecified {
		kind = trace.SpanKindInternal
	}
	psCtx := ctx
	if cfg.NewRoot() {
		psCtx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	}
	var tid trace.TraceID
	var sid trace.SpanID
	if parent.IsValid() {
		tid, sid = parent.TraceID(), idGen.NewSpanID(ctx, parent.TraceID())
	} else {
		tid, sid = idGen.NewIDs(ctx)
	}
	sc, keep := t.sample(psCtx, parent, tid, sid, name, kind, cfg.Attributes(), cfg.Links())
	if !keep {
		return trace.ContextWithSpanContext(ctx, sc), trace.SpanFromContext(trace.ContextWithSpanContext(ctx, sc))
	}
	start := cfg.Timestamp()
	if start.IsZero() {
		start = time.Now()
	}
	rec := t.p.record()
	rec.head = head{parent: parent, kind: kind, name: name, start: start.UnixNano()}
	rec.attrs = append(rec.attrs[:0], cfg.Attributes()...)
	for _, l := range cfg.Links() {
		rec.addLink(l)
	}
	s := &span{parentCtx: ctx, t: t, sc: sc, rec: rec}
	return s.context(), s
}

// sample asks the sampler, as the SDK does, about the span tid/sid child
// of parent (invalid: a root), psCtx being the sampler's parent context. It
// reports whether the span is to be recorded, counting it dropped when the
// provider has shut down.
func (t *tracer) sample(psCtx context.Context, parent trace.SpanContext, tid trace.TraceID, sid trace.SpanID, name string, kind trace.SpanKind, attrs []attribute.KeyValue, links []trace.Link) (trace.SpanContext, bool) {
	res := t.p.sampler.ShouldSample(sdktrace.SamplingParameters{
		ParentContext: psCtx, TraceID: tid, Name: name, Kind: kind,
		Attributes: attrs, Links: links,
	})
	flags := parent.TraceFlags() &^ trace.FlagsSampled
	if res.Decision == sdktrace.RecordAndSample {
		flags |= trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, TraceState: res.Tracestate})
	if res.Decision != sdktrace.RecordAndSample {
		// Not exported: no record. (RecordOnly is not offered by the
		// agent's samplers; such a span is not recorded here.)
		return sc, false
	}
	if t.p.stopped.Load() {
		t.p.droppedClose.Add(1)
		return sc, false
	}
	return sc, true
}

package spans

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/exporters/otlp"
)

// capture is an Exporter that decodes what it is given as the receiver
// would: the bodies are concatenated into an ExportTraceServiceRequest.
type capture struct {
	mu       sync.Mutex
	requests []*coltracepb.ExportTraceServiceRequest
	counts   []int
	fail     error
}

func (c *capture) ExportResourceSpans(_ context.Context, parts [][]byte, n int) error {
	var raw []byte
	for _, p := range parts {
		raw = appendMessage(raw, 1, p) // ExportTraceServiceRequest.resource_spans
	}
	req := &coltracepb.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		return fmt.Errorf("decoding the request: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, req)
	c.counts = append(c.counts, n)
	return c.fail
}

func (c *capture) Shutdown(context.Context) error { return nil }

func (c *capture) all() []*tracepb.ResourceSpans {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.ResourceSpans
	for _, r := range c.requests {
		out = append(out, r.ResourceSpans...)
	}
	return out
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = fmt.Sprint(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			m[kv.Key] = fmt.Sprint(x.DoubleValue)
		case *commonpb.AnyValue_ArrayValue:
			var parts []string
			for _, e := range x.ArrayValue.Values {
				parts = append(parts, fmt.Sprint(e.GetStringValue(), e.GetIntValue()))
			}
			m[kv.Key] = fmt.Sprint(parts)
		default:
			m[kv.Key] = "<invalid>"
		}
	}
	return m
}

func agentResource() *resource.Resource {
	return resource.NewSchemaless(
		attribute.String("service.name", "otelbee"),
		attribute.String("host.name", "h1"),
		attribute.Int("process.pid", 1),
	)
}

func identity(name string, pid int) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("service.name", name),
		attribute.String("service.instance.id", fmt.Sprintf("h1:%d", pid)),
		attribute.Int("process.pid", pid),
		attribute.StringSlice("otelbee.internal.resource", []string{"deployment.environment.name=prod"}),
	}
}

func TestSpanEncoding(t *testing.T) {
	c := &capture{}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
	tr := p.Tracer("github.com/otelbee/otelbee/collectors/http", trace.WithInstrumentationVersion("v1"))
	start := time.Unix(1700000000, 5)
	end := start.Add(1500 * time.Microsecond)
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	_, sp := tr.Start(ctx, "GET /items", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start),
		trace.WithAttributes(attribute.String("http.request.method", "GET")))
	attrs := append(identity("shop", 42),
		attribute.Int("http.response.status_code", 500),
		attribute.String("url.path", "/items"),
		attribute.String("http.request.method", "POST"), // a later value wins
		attribute.Bool("flag", true),
		attribute.Float64("ratio", 0.5),
		attribute.Int64Slice("ints", []int64{1, -2}),
	)
	sp.SetAttributes(attrs...)
	sp.SetStatus(codes.Error, "boom")
	sp.AddEvent("retry", trace.WithTimestamp(start.Add(time.Millisecond)), trace.WithAttributes(attribute.Int("n", 2)))
	sp.End(trace.WithTimestamp(end))
	sc := sp.SpanContext()
	sp.End() // a second End changes nothing
	sp.SetAttributes(attribute.String("late", "x"))

	// The agent's own span: no service.name.
	_, own := tr.Start(context.Background(), "own")
	own.End()

	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(c.requests) != 1 || c.counts[0] != 2 {
		t.Fatalf("requests %d (span counts %v), want one request of 2 spans", len(c.requests), c.counts)
	}
	rss := c.all()
	if len(rss) != 2 {
		t.Fatalf("%d ResourceSpans, want 2 (agent, shop)", len(rss))
	}
	agentRS, shopRS := rss[0], rss[1]
	if got := attrMap(agentRS.Resource.Attributes); got["service.name"] != "otelbee" || len(agentRS.ScopeSpans[0].Spans) != 1 {
		t.Errorf("agent resource %v with %d spans", got, len(agentRS.ScopeSpans[0].Spans))
	}
	res := attrMap(shopRS.Resource.Attributes)
	want := map[string]string{
		"service.name": "shop", "service.instance.id": "h1:42", "process.pid": "42", "host.name": "h1",
		"deployment.environment.name": "prod",
	}
	if !mapsEqual(res, want) {
		t.Errorf("service resource %v, want %v", res, want)
	}
	ss := shopRS.ScopeSpans
	if len(ss) != 1 || ss[0].Scope.Name != "github.com/otelbee/otelbee/collectors/http" || ss[0].Scope.Version != "v1" || len(ss[0].Spans) != 1 {
		t.Fatalf("scope spans %v", ss)
	}
	s := ss[0].Spans[0]
	tid, sid := sc.TraceID(), sc.SpanID()
	if !slices.Equal(s.TraceId, tid[:]) || !slices.Equal(s.SpanId, sid[:]) || tid != parent.TraceID() {
		t.Errorf("ids %x/%x, want %x/%x in the parent's trace", s.TraceId, s.SpanId, tid, sid)
	}
	if psid := parent.SpanID(); !slices.Equal(s.ParentSpanId, psid[:]) {
		t.Errorf("parent span id %x", s.ParentSpanId)
	}
	if s.Name != "GET /items" || s.Kind != tracepb.Span_SPAN_KIND_SERVER ||
		s.StartTimeUnixNano != uint64(start.UnixNano()) || s.EndTimeUnixNano != uint64(end.UnixNano()) {
		t.Errorf("span %q kind %v %d..%d", s.Name, s.Kind, s.StartTimeUnixNano, s.EndTimeUnixNano)
	}
	if s.Flags != 0x301 {
		t.Errorf("flags %#x, want sampled, parent remote (0x301)", s.Flags)
	}
	gotAttrs := attrMap(s.Attributes)
	wantAttrs := map[string]string{
		"http.request.method": "POST", "http.response.status_code": "500", "url.path": "/items",
		"flag": "true", "ratio": "0.5", "ints": "[1 -2]",
	}
	if !mapsEqual(gotAttrs, wantAttrs) || len(s.Attributes) != len(wantAttrs) {
		t.Errorf("span attributes %v, want %v", gotAttrs, wantAttrs)
	}
	if s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || s.Status.GetMessage() != "boom" {
		t.Errorf("status %v", s.Status)
	}
	if len(s.Events) != 1 || s.Events[0].Name != "retry" || attrMap(s.Events[0].Attributes)["n"] != "2" ||
		s.Events[0].TimeUnixNano != uint64(start.Add(time.Millisecond).UnixNano()) {
		t.Errorf("events %v", s.Events)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.Queued() != 2 || p.Dropped() != 0 {
		t.Errorf("queued %d dropped %d", p.Queued(), p.Dropped())
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestOneRequestForManyServices: spans of 80 services in one interval
// leave in one request, one ResourceSpans per service.
func TestOneRequestForManyServices(t *testing.T) {
	c := &capture{}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
	tr := p.Tracer("t")
	const services, perService = 80, 3
	for i := range services * perService {
		_, sp := tr.Start(context.Background(), "op")
		sp.SetAttributes(identity(fmt.Sprintf("svc-%d", i%services), 1000+i%services)...)
		sp.End()
	}
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(c.requests) != 1 {
		t.Fatalf("%d requests, want 1", len(c.requests))
	}
	got := map[string]int{}
	for _, rs := range c.all() {
		name := attrMap(rs.Resource.Attributes)["service.name"]
		for _, ss := range rs.ScopeSpans {
			got[name] += len(ss.Spans)
		}
	}
	if len(got) != services {
		t.Fatalf("%d services, want %d", len(got), services)
	}
	for name, n := range got {
		if n != perService {
			t.Errorf("%s: %d spans, want %d", name, n, perService)
		}
	}
	p.Shutdown(context.Background())
}

// TestIdentityOrderDoesNotSplitAService: the same identity attributes in
// another order are the same service.
func TestIdentityOrderDoesNotSplitAService(t *testing.T) {
	c := &capture{}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
	tr := p.Tracer("t")
	id := identity("a", 7)
	rev := slices.Clone(id)
	slices.Reverse(rev)
	for _, kvs := range [][]attribute.KeyValue{id, rev, identity("b", 8), id} {
		_, sp := tr.Start(context.Background(), "op", trace.WithAttributes(kvs...))
		sp.End()
	}
	p.ForceFlush(context.Background())
	if rs := c.all(); len(rs) != 2 || len(rs[0].ScopeSpans[0].Spans)+len(rs[1].ScopeSpans[0].Spans) != 4 {
		t.Fatalf("%d resources, want 2 holding 4 spans", len(rs))
	}
	p.Shutdown(context.Background())
}

func TestQueueFullAndShutdownAreCounted(t *testing.T) {
	block := make(chan struct{})
	c := &blocking{capture: &capture{}, block: block}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{MaxQueueSize: 10, MaxExportBatchSize: 10, ScheduleDelay: time.Hour})
	tr := p.Tracer("t")
	end := func(n int) {
		for range n {
			_, sp := tr.Start(context.Background(), "op")
			sp.End()
		}
	}
	end(10) // a full batch: the export starts and blocks
	deadline := time.Now().Add(5 * time.Second)
	for c.started() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	end(15) // 10 fit in the queue, 5 do not
	if got := p.DroppedBy(otlp.ReasonQueueFull); got != 5 {
		t.Errorf("queue_full %d, want 5", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	close(block)
	p.Shutdown(ctx)
	end(3) // after shutdown
	if got := p.DroppedBy(otlp.ReasonShutdown); got != 3 {
		t.Errorf("shutdown drops %d, want 3", got)
	}
	exported := 0
	for _, n := range c.counts {
		exported += n
	}
	if q := p.Queued(); q != 20 || exported != 20 {
		t.Errorf("queued %d exported %d, want 20 and 20", q, exported)
	}
}

type blocking struct {
	*capture
	block chan struct{}
	mu    sync.Mutex
	n     int
}

func (b *blocking) ExportResourceSpans(ctx context.Context, parts [][]byte, n int) error {
	b.mu.Lock()
	b.n++
	b.mu.Unlock()
	<-b.block
	return b.capture.ExportResourceSpans(ctx, parts, n)
}

func (b *blocking) started() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// TestSamplerDecidesAsSampling: spans the sampler drops are not recorded,
// and a collector's prior decision (sampling.Decide) is the provider's.
func TestSamplerDecidesAsSampling(t *testing.T) {
	c := &capture{}
	s := sdktrace.TraceIDRatioBased(0.3)
	p := NewTracerProvider(c, agentResource(), s, otlp.QueueSettings{ScheduleDelay: time.Hour})
	tr := p.Tracer("t")
	decided, recorded := 0, 0
	for range 2000 {
		tid, ok := sampling.Decide(s, trace.SpanContext{}, "op", trace.SpanKindServer)
		if !ok {
			continue
		}
		decided++
		_, sp := tr.Start(sampling.WithTraceID(context.Background(), tid), "op")
		if sp.IsRecording() && sp.SpanContext().IsSampled() {
			recorded++
		}
		sp.End()
	}
	p.ForceFlush(context.Background())
	if decided == 0 || decided == 2000 || recorded != decided || int(p.Queued()) != decided {
		t.Errorf("decided %d recorded %d queued %d", decided, recorded, p.Queued())
	}
	_, sp := p.Tracer("t").Start(context.Background(), "never", trace.WithNewRoot())
	sp.End()
	p.Shutdown(context.Background())
}

func TestFailedExportIsTheExportersToCount(t *testing.T) {
	c := &capture{fail: errors.New("down")}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
	_, sp := p.Tracer("t").Start(context.Background(), "op")
	sp.End()
	p.ForceFlush(context.Background())
	if p.Queued() != 1 || p.Dropped() != 0 || len(c.requests) != 1 {
		t.Errorf("queued %d dropped %d requests %d", p.Queued(), p.Dropped(), len(c.requests))
	}
	p.Shutdown(context.Background())
}

func TestDedupe(t *testing.T) {
	kv := func(k string, v int) attribute.KeyValue { return attribute.Int(k, v) }
	for _, tc := range []struct {
		in, want []attribute.KeyValue
	}{
		{nil, nil},
		{[]attribute.KeyValue{kv("a", 1), kv("b", 2)}, []attribute.KeyValue{kv("a", 1), kv("b", 2)}},
		{[]attribute.KeyValue{kv("a", 1), kv("b", 2), kv("a", 3)}, []attribute.KeyValue{kv("a", 3), kv("b", 2)}},
		{[]attribute.KeyValue{kv("x", 1), kv("x", 2), kv("x", 3)}, []attribute.KeyValue{kv("x", 3)}},
	} {
		if got := dedupe(slices.Clone(tc.in)); !slices.Equal(got, tc.want) {
			t.Errorf("dedupe(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	// Many keys: every one kept once, whatever the filter's collisions.
	var many []attribute.KeyValue
	for i := range 300 {
		many = append(many, kv(fmt.Sprintf("key.%d", i%150), i))
	}
	got := dedupe(many)
	if len(got) != 150 {
		t.Fatalf("%d keys, want 150", len(got))
	}
	for i, g := range got {
		if string(g.Key) != fmt.Sprintf("key.%d", i) || g.Value.AsInt64() != int64(150+i) {
			t.Fatalf("got[%d] = %v", i, g)
		}
	}
}

func TestAttributeLimit(t *testing.T) {
	c := &capture{}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{ScheduleDelay: time.Hour})
	_, sp := p.Tracer("t").Start(context.Background(), "op")
	for i := range maxAttributes + 7 {
		sp.SetAttributes(attribute.Int(fmt.Sprint("k", i), i))
	}
	sp.End()
	p.ForceFlush(context.Background())
	s := c.all()[0].ScopeSpans[0].Spans[0]
	if len(s.Attributes) != maxAttributes || s.DroppedAttributesCount != 7 {
		t.Errorf("%d attributes, %d dropped", len(s.Attributes), s.DroppedAttributesCount)
	}
	p.Shutdown(context.Background())
}

// TestFixLength: the reserved two length bytes become a one-, two- or
// three-byte varint and the message still decodes.
func TestFixLength(t *testing.T) {
	for _, size := range []int{0, 1, 127, 128, 300, 16383, 16384, 70000} {
		b := []byte{0x12, 0, 0}
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i)
		}
		b = fixLength(append(b, body...), 1)
		want := appendBytes(nil, 2, body)
		if !slices.Equal(b, want) {
			t.Errorf("size %d: got %d bytes, want %d", size, len(b), len(want))
		}
	}
}

// TestBatchSizeBoundsARequest: 12 spans of 3 services with a batch size of
// 5 leave in requests of 5, 5 and 2 spans, every span once, a service's
// spans split over requests where the batch ends.
func TestBatchSizeBoundsARequest(t *testing.T) {
	c := &capture{}
	p := NewTracerProvider(c, agentResource(), nil, otlp.QueueSettings{MaxExportBatchSize: 5, MaxQueueSize: 100, ScheduleDelay: time.Hour})
	tr := p.Tracer("t")
	names := map[string]bool{}
	for i := range 12 {
		_, sp := tr.Start(context.Background(), fmt.Sprint("op-", i))
		sp.SetAttributes(identity(fmt.Sprint("svc-", i%3), 100+i%3)...)
		sp.End()
		names[fmt.Sprint("op-", i)] = true
	}
	p.ForceFlush(context.Background())
	p.Shutdown(context.Background())
	var sizes []int
	for _, req := range c.requests {
		n := 0
		for _, rs := range req.ResourceSpans {
			svc := attrMap(rs.Resource.Attributes)["service.name"]
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					var i int
					fmt.Sscanf(s.Name, "op-%d", &i)
					if want := fmt.Sprint("svc-", i%3); svc != want || !names[s.Name] {
						t.Errorf("span %s under %s (want %s), or twice", s.Name, svc, want)
					}
					delete(names, s.Name)
					n++
				}
			}
		}
		sizes = append(sizes, n)
	}
	total := 0
	for _, n := range sizes {
		if n > 5 {
			t.Errorf("a request of %d spans, batch size 5", n)
		}
		total += n
	}
	// The first batch export may start as the fifth span ends, before the
	// rest are queued; whatever the timing, 12 spans in at least 3 requests.
	if total != 12 || len(names) != 0 || len(sizes) < 3 {
		t.Errorf("requests of %v spans, missing %v", sizes, names)
	}
}

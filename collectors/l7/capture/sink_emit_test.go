package capture

import (
	"context"
	"net/netip"
	"os"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/exporters/spans/spanstest"
	"github.com/otelbee/otelbee/process/identity"
)

// sinkExchanges feeds s a protocol's exchanges of both roles: a client's
// with a span-only attribute, a failed one, a server's under a sampled
// remote parent with an error status, one under an unsampled parent (no
// span), a Unix socket's.
func sinkExchanges(exchange sinkFunc) {
	pid := uint32(os.Getpid())
	client := &l7.Conn{ID: 1, PID: pid, Role: l7.RoleClient, Source: l7.SourceSyscall, Peer: netip.MustParseAddrPort("10.0.0.1:5432")}
	server := &l7.Conn{ID: 2, PID: pid, Role: l7.RoleServer, Source: l7.SourceSyscall, Peer: netip.MustParseAddrPort("10.0.0.2:40000")}
	unix := &l7.Conn{ID: 3, PID: pid, Role: l7.RoleClient, Source: l7.SourceSyscall}
	var x l7.Exchange
	for i := range 3 {
		x.Reset()
		x.Start, x.End, x.SpanName = uint64(1000+i), uint64(5000+i), "SELECT shop.items"
		x.Add(attribute.String("db.operation.name", "SELECT"))
		x.AddSpan(attribute.String("db.query.text", "SELECT * FROM items WHERE id = ?"))
		exchange(client, &x)
	}
	x.Reset()
	x.Start, x.End, x.Error, x.StatusError = 10, 20, "08006", true
	x.Add(attribute.String("db.operation.name", "INSERT"))
	exchange(client, &x)
	for _, flags := range []byte{1, 0} {
		x.Reset()
		x.Start, x.End, x.SpanName, x.StatusError = 30, 90, "POST /rpc", true
		x.HasParent, x.TraceID, x.ParentSpanID, x.TraceFlags = true, [16]byte{1, 2, 3}, [8]byte{4, 5}, flags
		x.Add(attribute.String("rpc.method", "Get"))
		exchange(server, &x)
	}
	x.Reset()
	x.Start, x.End = 100, 200
	x.Add(attribute.String("db.operation.name", "GET"))
	exchange(unix, &x)
}

// traceAPISpan is the sink's span as it was made before Emit, through the
// trace API, kept here to compare the two.
func traceAPISpan(s *Sink, tr trace.Tracer, c *l7.Conn, x *l7.Exchange) {
	ser := s.seriesOf(c, x)
	kind := trace.SpanKindClient
	ctx := context.Background()
	if c.Role == l7.RoleServer {
		kind = trace.SpanKindServer
	}
	if x.HasParent {
		psc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: x.TraceID, SpanID: x.ParentSpanID, TraceFlags: trace.TraceFlags(x.TraceFlags), Remote: true,
		})
		ctx = trace.ContextWithRemoteSpanContext(ctx, psc)
	}
	name := x.SpanName
	if name == "" {
		name = s.proto.Name()
	}
	_, sp := tr.Start(ctx, name, trace.WithSpanKind(kind), trace.WithTimestamp(s.eng.Wall(x.Start)))
	sp.SetAttributes(ser.Span...)
	if x.NSpanAttr > 0 {
		sp.SetAttributes(x.SpanAttrs[:x.NSpanAttr]...)
	}
	if x.StatusError {
		sp.SetStatus(codes.Error, "")
	}
	sp.End(trace.WithTimestamp(s.eng.Wall(x.End)))
}

type sinkFunc func(c *l7.Conn, x *l7.Exchange)

// TestSinkEmitAsTheTraceAPI: every span the sink emits leaves exactly as
// the same exchange's span made through the trace API as before Emit:
// names, kinds, times, attributes, parents, status, resources, in the same
// order; and so through EmitterOf's trace API path (the SDK's).
func TestSinkEmitAsTheTraceAPI(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Spans = true
	res := identity.NewResolver("/proc", "testhost")
	before, viaAPI, viaEmit := spanstest.New(t, nil), spanstest.New(t, nil), spanstest.New(t, nil)
	e := NewEngine(collectors.Deps{TracerProvider: spanstest.APIOnly(viaAPI), Processes: res}, cfg)
	api := NewSink(e, oneMetric{})
	e.deps.TracerProvider = viaEmit
	emit := NewSink(e, oneMetric{})
	e.deps.TracerProvider = nil
	old := NewSink(e, oneMetric{})
	oldTracer := before.Tracer("github.com/otelbee/otelbee/collectors/l7/" + oneMetric{}.Name())
	if _, direct := emit.emitter.(trace.Tracer); !direct {
		t.Fatal("the sink does not emit into the span path's tracer itself")
	}
	if _, direct := api.emitter.(trace.Tracer); direct {
		t.Fatal("the trace API's sink emits directly")
	}
	sinkExchanges(func(c *l7.Conn, x *l7.Exchange) {
		if !x.HasParent || x.TraceFlags == 1 { // the default sampler's decision
			traceAPISpan(old, oldTracer, c, x)
		}
	})
	sinkExchanges(api.Exchange)
	sinkExchanges(emit.Exchange)
	want := before.ResourceSpans(t)
	if n := spanstest.Count(want); n != 6 {
		t.Fatalf("%d spans before, want 6 (one per sampled exchange)", n)
	}
	if d := spanstest.Diff(want, viaEmit.ResourceSpans(t)); d != "" {
		t.Errorf("Emit: %s", d)
	}
	if d := spanstest.Diff(want, viaAPI.ResourceSpans(t)); d != "" {
		t.Errorf("EmitterOf's trace API: %s", d)
	}
}

// TestSinkSpanAllocs: a sampled exchange of a warm series becomes its span
// and its exemplar without an allocation.
func TestSinkSpanAllocs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Spans = true
	p := spanstest.New(t, nil)
	e := NewEngine(collectors.Deps{TracerProvider: p, Processes: identity.NewResolver("/proc", "testhost")}, cfg)
	s := NewSink(e, oneMetric{})
	client := &l7.Conn{ID: 1, PID: uint32(os.Getpid()), Role: l7.RoleClient, Source: l7.SourceSyscall, Peer: netip.MustParseAddrPort("10.0.0.1:5432")}
	var x l7.Exchange
	exchange := func(parent bool) func() {
		return func() {
			x.Reset()
			x.Start, x.End, x.SpanName = 1000, 5000, "SELECT shop.items"
			x.HasParent, x.TraceID, x.ParentSpanID, x.TraceFlags = parent, [16]byte{1}, [8]byte{2}, 1
			x.Add(attribute.String("db.operation.name", "SELECT"))
			x.AddSpan(attribute.String("db.query.text", "SELECT 1"))
			s.Exchange(client, &x)
		}
	}
	for _, parent := range []bool{false, true} {
		for range 20000 { // the service's buffer grows to its size
			exchange(parent)()
		}
		if n := testing.AllocsPerRun(1000, exchange(parent)); n != 0 {
			t.Errorf("parent %v: %v allocations per sampled exchange, want 0", parent, n)
		}
	}
	if p.Queued() < 42000 {
		t.Errorf("%d spans queued, want every exchange's", p.Queued())
	}
}

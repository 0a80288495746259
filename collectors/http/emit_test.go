package httpc

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/attrs"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/exporters/otlp"
	"github.com/otelbee/otelbee/exporters/spans"
	"github.com/otelbee/otelbee/exporters/spans/spanstest"
	"github.com/otelbee/otelbee/process/identity"
)

// traceAPISpan is a request's span as the collector made it before Emit,
// through the trace API (started on the event loop, its attributes set and
// ended by the span worker), kept here to compare the two. It runs after
// onExchange (with the collector's own spans discarded), on the series and
// route onExchange chose.
func traceAPISpan(c *Collector, tr trace.Tracer, st *connState, ex *Exchange) {
	s, route := st.lastSeries, st.lastRoute
	name := s.Name
	if !s.Key.server {
		if s.NameFor != route || s.Name == "" {
			s.Name, s.NameFor = c.routes.SpanName(s.Key.method, route), route
		}
		name = s.Name
	}
	ctx := context.Background()
	kind := trace.SpanKindClient
	if s.Key.server {
		kind = trace.SpanKindServer
		if ex.HasParent {
			ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
				TraceID: ex.TraceID, SpanID: ex.ParentSpanID, TraceFlags: trace.TraceFlags(ex.TraceFlags), Remote: true,
			}))
		}
	}
	_, span := tr.Start(ctx, name, trace.WithSpanKind(kind), trace.WithTimestamp(c.wall(ex.Start)))
	if !span.IsRecording() {
		return
	}
	var host, userAgent, query, template, method string
	if len(ex.Host) > 0 {
		host = attrs.String(ex.Host)
	}
	if st.server && len(ex.UserAgent) > 0 {
		userAgent = attrs.String(ex.UserAgent)
	}
	if c.cfg.URLQuery && len(ex.Query) > 0 {
		query = string(appendRedactedQuery(nil, ex.Query))
	}
	if !s.Key.server && route != OverflowRoute {
		template = route
	}
	if ex.Method == MethodOther {
		method = string(ex.MethodRaw[:min(len(ex.MethodRaw), maxMethod)])
	}
	reqBody, respBody := int64(-1), int64(-1)
	if c.cfg.BodySizes {
		reqBody, respBody = ex.ReqBody, ex.RespBody
	}
	path := ex.Path[:min(len(ex.Path), maxPath)]
	// the span worker's part
	span.SetAttributes(s.Span...)
	var kvs []attribute.KeyValue
	kvs = append(kvs, keyPath.String(string(CleanPath(nil, path))))
	if template != "" {
		kvs = append(kvs, keyURLTemplate.String(template))
	}
	h, port, hostOK := splitHost([]byte(host))
	if s.Key.server {
		if hostOK {
			kvs = append(kvs, keyServerAddress.String(string(h)), keyServerPort.Int(int(port)))
		}
		if userAgent != "" {
			kvs = append(kvs, keyUserAgent.String(userAgent))
		}
		if query != "" {
			kvs = append(kvs, keyURLQuery.String(query))
		}
	} else {
		authority := []byte(host)
		if !hostOK {
			authority = nil
		}
		u := appendURLFull(nil, authority, st.peer, st.peerPort, path, nil)
		if query != "" {
			u = append(append(u, '?'), query...)
		}
		kvs = append(kvs, keyURLFull.String(string(u)))
		switch {
		case hostOK:
			kvs = append(kvs, keyServerAddress.String(string(h)), keyServerPort.Int(int(port)))
		case st.peer.IsValid():
			kvs = append(kvs, keyServerAddress.String(st.peer.String()), keyServerPort.Int(int(st.peerPort)))
		}
	}
	if reqBody >= 0 {
		kvs = append(kvs, keyReqBodySize.Int64(reqBody))
	}
	if respBody >= 0 {
		kvs = append(kvs, keyRespBodySize.Int64(respBody))
	}
	if st.peer.IsValid() {
		peer := st.peer.String()
		kvs = append(kvs, keyPeerAddress.String(peer), keyPeerPort.Int(int(st.peerPort)))
		if s.Key.server {
			kvs = append(kvs, keyClientAddress.String(peer))
		}
	} else if s.Key.server {
		kvs = append(kvs, keyTransportUnix)
	}
	if method != "" {
		kvs = append(kvs, attribute.String("http.request.method_original", method))
	}
	span.SetAttributes(kvs...)
	if s.Err {
		span.SetStatus(codes.Error, "")
	}
	span.End(trace.WithTimestamp(c.wall(ex.End)))
}

// emitCollector is a unit collector on tp whose sampled spans the caller
// ends (drainSpans).
func emitCollector(tb testing.TB, cfg Config, tp trace.TracerProvider) *Collector {
	producers := &collectors.ProducerSet{}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader(sdkmetric.WithProducer(producers))))
	sampler, _ := sampling.Parse("parentbased_always_on", "")
	c := New(collectors.Deps{Meter: mp.Meter("unit"), TracerProvider: tp, Sampler: sampler,
		Processes: identity.NewResolver("/proc", "unit"), Producers: producers}, cfg)
	var err error
	if c.routes, err = NewRoutes([]string{"/users/{id}"}, 100); err != nil {
		tb.Fatal(err)
	}
	c.setupTracing()
	return c
}

// exchanges are requests of every kind a span tells apart, on a server
// connection, a client one and a client's Unix socket: Host and
// User-Agent or none, a query, a 5xx and a 4xx, remote parents sampled and
// not, an unknown method, bodies.
func exchanges(c *Collector, exchange func(st *connState, ex *Exchange)) {
	conn := func(fd uint32, server bool, peer string) *connState {
		st := c.newConn(connKey{tgid: 1, fd: fd, start: 1})
		st.server, st.svc, st.stats, st.lastLen = server, "/unit", c.statsFor(1), -1
		if peer != "" {
			ap := netip.MustParseAddrPort(peer)
			st.peer, st.peerPort = ap.Addr(), ap.Port()
		}
		return st
	}
	server, client, unix := conn(3, true, "10.0.0.7:40000"), conn(4, false, "10.0.0.8:8080"), conn(5, false, "")
	t := uint64(1000)
	ex := func(m Method, status int, path, host, ua string) *Exchange {
		t += 100000
		e := &Exchange{Method: m, Status: status, Minor: 1, Path: []byte(path), Start: t, End: t + 42000, ReqBody: 3, RespBody: 120}
		if host != "" {
			e.Host = []byte(host)
		}
		if ua != "" {
			e.UserAgent = []byte(ua)
		}
		if i := len(path); i > 0 {
			for j := range path {
				if path[j] == '?' {
					e.Path, e.Query = []byte(path[:j]), []byte(path[j+1:])
					break
				}
			}
		}
		return e
	}
	exchange(server, ex(MethodGet, 200, "/users/12", "shop.example:8080", "wrk/4.2"))
	exchange(server, ex(MethodGet, 200, "/users/13?token=s3cret&x", "shop.example:8080", "wrk/4.2"))
	exchange(server, ex(MethodPost, 503, "/orders", "", ""))
	for _, flags := range []byte{1, 0} {
		p := ex(MethodGet, 200, "/users/14", "[::1]:8443", "curl/8")
		p.HasParent, p.TraceID, p.ParentSpanID, p.TraceFlags = true, [16]byte{1, 2}, [8]byte{3, 4}, flags
		exchange(server, p)
	}
	odd := ex(MethodOther, 200, "/purge/x", "shop.example", "")
	odd.MethodRaw = []byte("PURGE")
	exchange(server, odd)
	exchange(client, ex(MethodGet, 200, "/api/v1/items", "api.example", ""))
	exchange(client, ex(MethodGet, 404, "/api/v1/items/9", "", ""))
	exchange(client, ex(MethodPut, 200, "/api/v1/items/9?q=1", "user:pw@api.example:9000", ""))
	exchange(unix, ex(MethodGet, 200, "/containers/json", "docker", ""))
	exchange(unix, ex(MethodGet, 500, "/info", "", ""))
}

// TestEmitAsTheTraceAPI: every request's span through Emit leaves exactly
// as it did through the trace API before Emit (names, kinds, times,
// attributes, parents, status, resources, in order), with the opt-in
// attributes off and on; and so through EmitterOf's trace API path (the
// SDK's, behind the console exporter).
func TestEmitAsTheTraceAPI(t *testing.T) {
	optIn := DefaultConfig()
	optIn.BodySizes, optIn.URLQuery, optIn.ClientURLScheme = true, true, true
	for name, cfg := range map[string]Config{"default": DefaultConfig(), "opt-in": optIn} {
		t.Run(name, func(t *testing.T) {
			before, viaAPI, viaEmit := spanstest.New(t, nil), spanstest.New(t, nil), spanstest.New(t, nil)
			old := emitCollector(t, cfg, before)
			oldTracer := before.Tracer("github.com/otelbee/otelbee/collectors/http")
			exchanges(old, func(st *connState, ex *Exchange) {
				old.cur = st
				old.onExchange(ex)
				for len(old.spans) > 0 {
					<-old.spans // the new path's, discarded
				}
				traceAPISpan(old, oldTracer, st, ex)
			})
			n := 0
			for _, tp := range []trace.TracerProvider{spanstest.APIOnly(viaAPI), viaEmit} {
				c := emitCollector(t, cfg, tp)
				exchanges(c, func(st *connState, ex *Exchange) {
					c.cur = st
					c.onExchange(ex)
					n++
					c.drainSpans()
				})
			}
			want := before.ResourceSpans(t)
			if got := spanstest.Count(want); got != n/2-1 {
				t.Fatalf("%d spans before, want %d (every request but the unsampled parent's)", got, n/2-1)
			}
			if d := spanstest.Diff(want, viaEmit.ResourceSpans(t)); d != "" {
				t.Errorf("Emit: %s", d)
			}
			if d := spanstest.Diff(want, viaAPI.ResourceSpans(t)); d != "" {
				t.Errorf("EmitterOf's trace API: %s", d)
			}
		})
	}
}

// TestSampledRequestAllocs: a sampled request of a warm series and
// connection, from the exchange to its span emitted and its exemplar,
// allocates nothing, with a remote parent or without.
func TestSampledRequestAllocs(t *testing.T) {
	p := spanstest.New(t, nil)
	c := emitCollector(t, DefaultConfig(), p)
	st := c.newConn(connKey{tgid: 1, fd: 3, start: 1})
	st.server, st.svc, st.stats, st.lastLen = true, "/unit", c.statsFor(1), -1
	st.peer, st.peerPort = netip.MustParseAddr("10.0.0.7"), 40000
	c.cur = st
	ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/users/12"), Host: []byte("shop.example:8080"),
		UserAgent: []byte("wrk/4.2"), Start: 1000, End: 43000}
	request := func() {
		c.onExchange(ex)
		c.drainSpans()
	}
	for _, parent := range []bool{false, true} {
		ex.HasParent, ex.TraceID, ex.ParentSpanID, ex.TraceFlags = parent, [16]byte{1}, [8]byte{2}, 1
		for range 20000 { // the service's buffer grows to its size
			request()
		}
		if n := testing.AllocsPerRun(1000, request); n != 0 {
			t.Errorf("parent %v: %v allocations per sampled request, want 0", parent, n)
		}
	}
	if q := p.Queued(); q != c.spansQueued.Load() || q < 42000 {
		t.Errorf("%d spans queued by the provider, %d by the collector", q, c.spansQueued.Load())
	}
}

// discard is a span exporter that accepts everything.
type discard struct{}

func (discard) ExportResourceSpans(context.Context, [][]byte, int) error { return nil }
func (discard) Shutdown(context.Context) error                           { return nil }

// BenchmarkSampledRequest is the collector's work for a request that
// becomes a span (the default sampler: every request), from the exchange
// to its span encoded and queued for export (onExchange and the span
// worker's endSpan, run in turn): wrk's request to bench/httpoverhead's Go
// server, the server side.
func BenchmarkSampledRequest(b *testing.B) {
	sampler, _ := sampling.Parse("parentbased_always_on", "")
	p := spans.NewTracerProvider(discard{}, resource.Empty(), sampler, otlp.QueueSettings{MaxQueueSize: 1 << 16, MaxExportBatchSize: 512, ScheduleDelay: time.Second})
	defer p.Shutdown(context.Background())
	c := emitCollector(b, DefaultConfig(), p)
	st := c.newConn(connKey{tgid: 1, fd: 3, start: 1})
	st.server, st.svc, st.stats, st.lastLen = true, "/unit", c.statsFor(1), -1
	st.peer, st.peerPort = netip.MustParseAddr("127.0.0.1"), 40000
	c.cur = st
	ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/"), Host: []byte("127.0.0.1:18080"), RespBody: 13, Start: 1000, End: 43000}
	b.ReportAllocs()
	for b.Loop() {
		c.onExchange(ex)
		c.drainSpans()
	}
	b.StopTimer()
	if p.Queued()+p.Dropped() != c.spansQueued.Load() {
		b.Fatalf("%d spans queued, %d dropped, %d made", p.Queued(), p.Dropped(), c.spansQueued.Load())
	}
}

// TestSpanWorkerBatches: the span worker emits every span queued, in
// bursts and after idle gaps (where it blocks on the queue), the last ones
// when the queue is closed (shutdown) included.
func TestSpanWorkerBatches(t *testing.T) {
	p := spanstest.New(t, nil)
	c := emitCollector(t, DefaultConfig(), p)
	st := c.newConn(connKey{tgid: 1, fd: 3, start: 1})
	st.server, st.svc, st.stats, st.lastLen = true, "/unit", c.statsFor(1), -1
	c.cur = st
	c.wg.Add(1)
	go c.spanWorker(context.Background())
	ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/users/12"), Start: 1000, End: 43000}
	const n = 3000
	for i := range n {
		c.onExchange(ex)
		if i%1000 == 0 {
			time.Sleep(3 * spanDrainEvery) // between batches
		}
	}
	close(c.spans)
	c.wg.Wait()
	if got := spanstest.Count(p.ResourceSpans(t)); got != n || c.spansQueued.Load() != n || c.spanDrops.Load() != 0 {
		t.Errorf("%d spans exported, %d queued, %d dropped, want %d", got, c.spansQueued.Load(), c.spanDrops.Load(), n)
	}
}

package httpc

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"
	"unsafe"

	"github.com/otelbee/otelbee/collectors/aggregate"
	"github.com/otelbee/otelbee/collectors/attrs"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/collectors/series"
	"github.com/otelbee/otelbee/exporters/spans"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

// Bucket boundaries: durations as the HTTP semantic conventions advise (no
// 0 bound: a request takes time); body sizes by powers of four from 64 B to
// 64 MiB (empty bodies are in the first bucket).
var (
	durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
	sizeBuckets     = []float64{64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
)

// Attribute keys (semantic conventions).
const (
	keyMethod        = attribute.Key("http.request.method")
	keyStatus        = attribute.Key("http.response.status_code")
	keyRoute         = attribute.Key("http.route")
	keyURLTemplate   = attribute.Key("url.template")
	keyServerAddress = attribute.Key("server.address")
	keyServerPort    = attribute.Key("server.port")
	keyProtoVersion  = attribute.Key("network.protocol.version")
	keyScheme        = attribute.Key("url.scheme")
	keyPath          = attribute.Key("url.path")
	keyClientAddress = attribute.Key("client.address")
	keyPeerAddress   = attribute.Key("network.peer.address")
	keyPeerPort      = attribute.Key("network.peer.port")
	keyErrorType     = attribute.Key("error.type")
	keyReqBodySize   = attribute.Key("http.request.body.size")
	keyRespBodySize  = attribute.Key("http.response.body.size")
	keyURLFull       = attribute.Key("url.full")
	keyURLQuery      = attribute.Key("url.query")
	keyUserAgent     = attribute.Key("user_agent.original")
)

// seriesKey names one metric series: exactly the attributes its points
// carry, so two series never export points with the same attributes. Route
// and address strings are interned (route table, netip), so the key
// compares cheaply and a lookup allocates nothing.
type seriesKey struct {
	tgid    uint32 // the process's instance (process/identity Owner)
	server  bool
	method  Method
	minor   uint8      // 0 or 1: network.protocol.version 1.0 or 1.1
	status  uint16     // 0: no response (errKind says why)
	errKind uint8      // transport error (transport.go)
	route   string     // server only: http.route is no client attribute
	peer    netip.Addr // client without a Host header
	host    string     // client: server.address from the Host header (interned)
	port    uint16     // client: server port
	tls     bool       // the plaintext came from a TLS source: url.scheme https
	unix    bool       // a Unix domain socket: network.transport unix
}

// versionMinor is the minor version a series is keyed by: the one
// network.protocol.version shows.
func versionMinor(m uint8) uint8 {
	if m == 0 {
		return 0
	}
	return 1
}

// histograms are one series' three histograms, aggregated here and handed
// to the exporters by Produce (see package aggregate for why not the SDK's
// instruments), guarded by the series table's lock.
type histograms struct {
	duration aggregate.Histogram[float64]
	reqBody  aggregate.Histogram[int64]
	respBody aggregate.Histogram[int64]
}

// httpSeries is one series of the table (package series): its point
// attributes, its spans' attributes (identity included), its histograms
// (its own, or its side's overflow ones), and the span name cache (Name;
// a client series' name is of its last route, NameFor) and status (Err).
type httpSeries = series.Series[seriesKey, histograms]

// Overflow groups of the series table.
const (
	groupClient = 0
	groupServer = 1
)

// selfInstruments are the collector's own counters, read in one callback.
func (c *Collector) selfInstruments() error {
	m := c.deps.Meter
	dropped, err := m.Int64ObservableCounter("otelbee.http.requests.dropped", metric.WithUnit("{request}"),
		metric.WithDescription("HTTP requests the agent saw begin but could not report, by reason: ringbuf_full (the record of the request's first bytes found the ring buffer full), records_lost (later records of the connection were lost), pipeline_overflow."))
	if err != nil {
		return err
	}
	incomplete, err := m.Int64ObservableCounter("otelbee.http.requests.incomplete", metric.WithUnit("{request}"),
		metric.WithDescription("HTTP requests whose connection closed (or whose process exited) before a response."))
	if err != nil {
		return err
	}
	malformed, err := m.Int64ObservableCounter("otelbee.http.malformed", metric.WithUnit("{message}"),
		metric.WithDescription("Data on HTTP connections that was not HTTP/1.x where a message had to start, and responses with no request."))
	if err != nil {
		return err
	}
	ignored, err := m.Int64ObservableCounter("otelbee.http.connections.ignored", metric.WithUnit("{connection}"),
		metric.WithDescription("TCP connections not parsed, by reason: not_http (classified in the kernel from their first bytes), filtered (include/exclude), self (an otelbee agent's own connections, and the server side of their client connections)."))
	if err != nil {
		return err
	}
	observed, err := m.Int64ObservableCounter("otelbee.http.connections.observed", metric.WithUnit("{connection}"),
		metric.WithDescription("TCP connections classified as HTTP/1.x."))
	if err != nil {
		return err
	}
	overflow, err := m.Int64ObservableCounter("otelbee.http.route.overflow", metric.WithUnit("{request}"),
		metric.WithDescription("Server requests whose http.route became _OTHER because their service reached http.max_routes, per service."))
	if err != nil {
		return err
	}
	seriesOverflow, err := m.Int64ObservableCounter("otelbee.http.series.overflow", metric.WithUnit("{request}"),
		metric.WithDescription("HTTP requests recorded in the series marked otel.metric.overflow=true, because their own series would have passed http.max_series."))
	if err != nil {
		return err
	}
	spansDropped, err := m.Int64ObservableCounter("otelbee.http.spans.dropped", metric.WithUnit("{span}"),
		metric.WithDescription("Spans not created because the span queue was full (their metrics are recorded), per service."))
	if err != nil {
		return err
	}
	addressOverflow, err := m.Int64ObservableCounter("otelbee.http.server_address.overflow", metric.WithUnit("{request}"),
		metric.WithDescription("Client requests whose server.address on the duration metrics became _OTHER because their service had called http.max_routes other Host names, per service (their spans keep the name)."))
	if err != nil {
		return err
	}
	reason := func(r string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))
	}
	rNotHTTP, rFiltered, rSelf := reason("not_http"), reason("filtered"), reason("self")
	c.reg, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		k := hook.SumCounters(c.counters, int(httpHttpCounterHC_MAX))
		// per service, in the order of the c* constants (procstats.go)
		c.observeProcs(o, dropped, dropped, dropped, incomplete, malformed, overflow, spansDropped, addressOverflow)
		o.ObserveInt64(ignored, int64(k[httpHttpCounterHC_CONNS_NOT_HTTP]), rNotHTTP)
		o.ObserveInt64(ignored, int64(k[httpHttpCounterHC_CONNS_FILTERED]), rFiltered)
		self := k[httpHttpCounterHC_CONNS_SELF]
		if c.eng != nil {
			self += c.eng.SelfPickedUp() // the agents' connections open at the start
		}
		o.ObserveInt64(ignored, int64(self), rSelf)
		o.ObserveInt64(observed, int64(k[httpHttpCounterHC_CONNS_HTTP]))
		o.ObserveInt64(seriesOverflow, int64(c.seriesOverflow.Load()))
		return nil
	}, dropped, incomplete, malformed, ignored, observed, overflow, spansDropped, seriesOverflow, addressOverflow)
	if err != nil {
		return fmt.Errorf("registering http callback: %w", err)
	}
	return nil
}

// seriesFor returns the series of an exchange on st: the table's, or a
// new one whose attributes are rendered here, once.
func (c *Collector) seriesFor(st *connState, ex *Exchange, route string) *httpSeries {
	status, kind := statusKind(ex.Status)
	k := seriesKey{
		tgid:    c.deps.Processes.Owner(st.proc), // one series per instance, not per process
		server:  st.server,
		method:  ex.Method,
		minor:   versionMinor(ex.Minor),
		status:  status,
		errKind: kind,
		tls:     st.tls,
		unix:    !st.peer.IsValid(),
	}
	if st.server {
		k.route = route
	} else if st.hostName != "" {
		// Names, not addresses: a service map shows what the client asked for.
		k.host, k.port = st.hostName, st.hostPort
	} else {
		k.peer = st.peer
		k.port = st.peerPort
	}
	if s := c.series.Get(k); s != nil {
		return s
	}
	version := "1.1"
	if k.minor == 0 {
		version = "1.0"
	}
	kv := make([]attribute.KeyValue, 0, 10)
	kv = append(kv, keyMethod.String(k.method.String()))
	if k.status != 0 {
		kv = append(kv, keyStatus.Int(int(k.status)))
	}
	kv = append(kv, keyProtoVersion.String(version))
	if k.server || c.cfg.ClientURLScheme {
		// Required on the server side, opt-in on the client side.
		scheme := "http"
		if k.tls {
			scheme = "https"
		}
		kv = append(kv, keyScheme.String(scheme))
	}
	span := append(make([]attribute.KeyValue, 0, len(kv)+3), kv...)
	var name string
	var errSet bool
	group := groupClient
	if k.server {
		group = groupServer
		// http.route only for a route really known (a configured pattern, or
		// any template with the heuristic switch); else the heuristic's
		// template is url.template, and the span is named by the method.
		key, target := keyRoute, route
		if !c.routes.Known(route) && !c.cfg.RouteHeuristic {
			key, target = keyURLTemplate, ""
		}
		kv = append(kv, key.String(route))
		span = append(span, key.String(route))
		name = c.routes.SpanName(k.method, target)
		errSet = k.status >= 500 || k.errKind != errNone
	} else {
		// server.address/.port of a span: its own request's (endSpan), the
		// series' may be the overflow name.
		switch {
		case k.host != "":
			kv = append(kv, keyServerAddress.String(k.host), keyServerPort.Int(int(k.port)))
		case k.peer.IsValid():
			kv = append(kv, keyServerAddress.String(k.peer.String()), keyServerPort.Int(int(k.port)))
		}
		if k.unix {
			kv = append(kv, keyTransportUnix)
			span = append(span, keyTransportUnix)
		}
		errSet = k.status >= 400 || k.errKind != errNone
	}
	if errSet {
		// Conditionally required on the duration metrics as on spans.
		et := keyErrorType.String(strconv.Itoa(int(k.status)))
		if k.errKind != errNone {
			et = keyErrorType.String(errorTypes[k.errKind])
		}
		kv = append(kv, et)
		span = append(span, et)
	}
	// Past the cap the series is not kept: its requests go to the side's
	// overflow histograms, its spans keep their attributes, and the
	// connection caches it meanwhile.
	s := c.series.Add(k, k.tgid, group, series.Attrs{Point: kv, Span: span})
	s.Name, s.Err = name, errSet
	return s
}

// onExchange is the parser's sink: one request with its response. The
// span is started here (an unsampled one costs only the sampling decision);
// a sampled one goes to the span worker for its attributes and its end. The
// metrics are recorded here, a sampled span becoming the exemplar of its
// buckets.
func (c *Collector) onExchange(ex *Exchange) {
	st := c.cur
	if st == nil {
		return
	}
	if ex.Status == 101 && ex.Upgrade == UpgradeH2C && c.curConn != nil &&
		c.curConn.SetUpgrade(l7.Upgrade{Method: ex.MethodRaw, Target: ex.Path, Host: ex.Host, Start: ex.Start, End: ex.End}) {
		return // the http2 collector takes the connection over: this request is its stream 1
	}
	var route string
	if st.lastLen == len(ex.Path) && string(st.lastPath[:st.lastLen]) == string(ex.Path) {
		route = st.lastRoute
	} else {
		route = c.routes.RouteSide(st.svc, !st.server, ex.Path)
		st.lastLen = copy(st.lastPath[:], ex.Path)
		st.lastRoute = route
	}
	if route == OverflowRoute && st.server && st.stats != nil {
		// Counted once, where http.route is an attribute: a client's
		// routes only name its spans.
		st.stats.routeOverflow.Add(1)
	}
	if !st.server {
		c.serverAddress(st, ex.Host)
	}
	s := st.lastSeries
	if s == nil || s.Key.method != ex.Method || s.Key.minor != versionMinor(ex.Minor) || int(s.Key.status) != ex.Status || (st.server && s.Key.route != route) || (!st.server && (s.Key.host != st.hostName || (st.hostName != "" && s.Key.port != st.hostPort))) {
		s = c.seriesFor(st, ex, route)
		st.lastSeries = s
	}
	c.recorded.Add(1)
	var sc trace.SpanContext
	if c.spans != nil {
		name := s.Name
		if !s.Key.server {
			// A client series holds calls to every path of its server.
			if s.NameFor != route || s.Name == "" {
				s.Name, s.NameFor = c.routes.SpanName(s.Key.method, route), route
			}
			name = s.Name
		}
		kind := trace.SpanKindClient
		var parent trace.SpanContext
		if st.server {
			kind = trace.SpanKindServer
			if ex.HasParent {
				parent = trace.NewSpanContext(trace.SpanContextConfig{
					TraceID:    ex.TraceID,
					SpanID:     ex.ParentSpanID,
					TraceFlags: trace.TraceFlags(ex.TraceFlags),
					Remote:     true,
				})
			}
		}
		// An unsampled request costs only the decision (package sampling).
		// A sampled one's ids are drawn here, for its exemplar; the span
		// worker emits it.
		if tid, sampled := sampling.Decide(c.deps.Sampler, parent, name, kind); sampled {
			sid := sampling.NewSpanID()
			sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: parent.TraceFlags() | trace.FlagsSampled})
			rec := spanRecord{s: s, name: name, start: ex.Start, end: ex.End, traceID: tid, spanID: sid,
				reqBody: -1, respBody: -1, peer: st.peer, peerPort: st.peerPort}
			if parent.IsValid() {
				rec.parentID, rec.parentFlags, rec.hasParent = ex.ParentSpanID, ex.TraceFlags, true
			}
			if !s.Key.server && route != OverflowRoute {
				rec.template = route // the client span's url.template
			}
			if c.cfg.BodySizes { // opt-in on spans too
				rec.reqBody, rec.respBody = ex.ReqBody, ex.RespBody
			}
			rec.pathLen = uint16(copy(rec.path[:], ex.Path))
			// Sampled spans only, off the unsampled path: the strings are
			// the connection's last ones unless they changed, and the
			// queue keeps no per-request buffers.
			if len(ex.Host) > 0 {
				rec.host = lastString(&st.spanHost, ex.Host)
			}
			if st.server && len(ex.UserAgent) > 0 {
				rec.userAgent = lastString(&st.spanUserAgent, ex.UserAgent)
			}
			if c.cfg.URLQuery && len(ex.Query) > 0 {
				rec.query = string(appendRedactedQuery(make([]byte, 0, 2*len(ex.Query)), ex.Query))
			}
			if ex.Method == MethodOther {
				rec.methodLen = uint8(copy(rec.method[:], ex.MethodRaw))
			}
			select {
			case c.spans <- rec:
				c.spansQueued.Add(1)
			default:
				// Never emitted, so never exported: no exemplar either.
				sc = trace.SpanContext{}
				c.spanDrops.Add(1)
				if st.stats != nil {
					st.stats.spanDrops.Add(1)
				}
			}
		}
	}
	c.record(s, sc, ex.End, ex.End-ex.Start, ex.ReqBody, ex.RespBody)
}

// lastString returns b as a valid UTF-8 string: *last when it is the same,
// else a new one, kept in *last.
func lastString(last *string, b []byte) string {
	if *last != string(b) {
		*last = attrs.String(b)
	}
	return *last
}

// record adds one exchange to its series. durNs is from kernel timestamps;
// end dates a sampled span's exemplar.
func (c *Collector) record(s *httpSeries, sc trace.SpanContext, end, durNs uint64, reqBody, respBody int64) {
	if durNs > 1<<62 { // end before start: clocks of two CPUs
		durNs = 0
	}
	d := float64(durNs) / 1e9
	h := s.M
	if s.Overflowed {
		c.seriesOverflow.Add(1)
	}
	if !c.cfg.BodySizes {
		reqBody, respBody = -1, -1
	}
	c.series.Lock()
	if sc.IsSampled() {
		at := c.wall(end)
		h.duration.RecordSampled(durationBuckets, d, at, sc)
		if reqBody >= 0 { // -1: not known (framing not captured), counted
			h.reqBody.RecordSampled(sizeBuckets, reqBody, at, sc)
		}
		if respBody >= 0 {
			h.respBody.RecordSampled(sizeBuckets, respBody, at, sc)
		}
	} else {
		h.duration.Record(durationBuckets, d)
		if reqBody >= 0 {
			h.reqBody.Record(sizeBuckets, reqBody)
		}
		if respBody >= 0 {
			h.respBody.Record(sizeBuckets, respBody)
		}
	}
	c.series.Unlock()
}

// Produce implements sdkmetric.Producer: the duration and body size
// histograms of both sides, cumulative, one data point per series.
func (c *Collector) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	var (
		dur  [2]*aggregate.Collection[float64]  // [client, server]
		body [2][2]*aggregate.Collection[int64] // [side][request, response]
	)
	for side := range dur {
		dur[side] = aggregate.Collect[float64](ctx, durationBuckets, c.start, now)
		body[side][0] = aggregate.Collect[int64](ctx, sizeBuckets, c.start, now)
		body[side][1] = aggregate.Collect[int64](ctx, sizeBuckets, c.start, now)
	}
	c.series.Each(func(s *httpSeries) {
		h := s.M
		if h.duration.Count() == 0 {
			return
		}
		side := s.Group // groupClient, groupServer
		dur[side].Add(&h.duration, s.Set)
		body[side][0].Add(&h.reqBody, s.Set)
		body[side][1].Add(&h.respBody, s.Set)
	})
	var ms []metricdata.Metrics
	if dur[1].Len() > 0 {
		ms = append(ms, dur[1].Metric("http.server.request.duration", "s", "Duration of HTTP server requests: first byte of the request read to last byte of the response written."))
		if c.cfg.BodySizes {
			ms = append(ms,
				body[1][0].Metric("http.server.request.body.size", "By", "Size of HTTP server request bodies (decoded from chunked encoding)."),
				body[1][1].Metric("http.server.response.body.size", "By", "Size of HTTP server response bodies."))
		}
	}
	if dur[0].Len() > 0 {
		ms = append(ms, dur[0].Metric("http.client.request.duration", "s", "Duration of HTTP client requests: first byte of the request written to last byte of the response read."))
		if c.cfg.BodySizes {
			ms = append(ms,
				body[0][0].Metric("http.client.request.body.size", "By", "Size of HTTP client request bodies."),
				body[0][1].Metric("http.client.response.body.size", "By", "Size of HTTP client response bodies."))
		}
	}
	if len(ms) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{{
		Scope:   instrumentation.Scope{Name: "github.com/otelbee/otelbee/collectors/http"},
		Metrics: ms,
	}}, nil
}

// spanRecord is a sampled span waiting for its attributes and its end.
type spanRecord struct {
	s          *httpSeries
	name       string
	start, end uint64
	// the span's ids, drawn with the sampling decision (its exemplar's),
	// and its remote parent's (hasParent)
	traceID     trace.TraceID
	spanID      trace.SpanID
	parentID    trace.SpanID
	parentFlags uint8
	hasParent   bool
	reqBody     int64
	respBody    int64
	peer        netip.Addr
	peerPort    uint16
	template    string // client: url.template ("" past the route cap)
	host        string // the Host header, valid UTF-8 ("": none)
	// server: user_agent.original; the redacted query with http.url_query
	userAgent string
	query     string
	pathLen   uint16
	path      [maxPath]byte
	// an unknown method as sent (http.request.method_original)
	methodLen uint8
	method    [maxMethod]byte
}

// spanDrainEvery is how long the span worker waits between two drains of
// a busy span queue. A worker blocked on the queue is woken by nearly every
// span queued at moderate rates: a futex wake and a thread handoff, ~10 µs
// of agent CPU per span in a profile at 1 % sampling (~0.1 µs per
// request). The queue (http.span_queue, 8192) holds 10 ms of ~800,000
// spans/s.
const spanDrainEvery = 10 * time.Millisecond

// spanWorker completes sampled spans off the event loop, in batches. It
// blocks on the queue only when a drain found it empty (an idle host never
// wakes it, where a ticker woke it 100 times a second); after a span it
// empties the queue every spanDrainEvery until a drain finds nothing, so a
// busy queue costs one timer wake per period, not one wake per span. It
// returns when the queue is closed, after completing what was in it.
func (c *Collector) spanWorker(ctx context.Context) {
	defer c.wg.Done()
	wait := time.NewTimer(spanDrainEvery)
	defer wait.Stop()
	for {
		rec, ok := <-c.spans
		if !ok {
			return
		}
		c.endSpan(&rec)
		for {
			wait.Reset(spanDrainEvery)
			<-wait.C
			n, open := c.drainSpans()
			if !open {
				return
			}
			if n == 0 {
				break
			}
		}
	}
}

// drainSpans completes every span queued now; open is false once the queue
// is closed and empty.
func (c *Collector) drainSpans() (n int, open bool) {
	for {
		select {
		case rec, ok := <-c.spans:
			if !ok {
				return n, false
			}
			c.endSpan(&rec)
			n++
		default:
			return n, true
		}
	}
}

// endSpan emits a sampled span: its series' attributes (identity
// included, prepared once) and its own, built in a buffer the span worker
// reuses, their strings views of the worker's byte buffer (Emit encodes
// them before it returns): no allocation.
func (c *Collector) endSpan(rec *spanRecord) {
	s := rec.s
	kvs := c.spanKVs[:0]
	if c.spanBuf == nil {
		c.spanBuf = make([]byte, 0, spanBufSize)
	}
	buf := c.spanBuf[:0]
	at := len(buf)
	buf = CleanPath(buf, rec.path[:rec.pathLen])
	kvs = append(kvs, keyPath.String(view(buf[at:])))
	if rec.template != "" {
		kvs = append(kvs, keyURLTemplate.String(rec.template))
	}
	kvs, buf = c.spanURLAttrs(kvs, buf, rec, s.Key.server)
	kvs, buf = spanTransportAttrs(kvs, buf, rec, s.Key.server)
	kind := trace.SpanKindClient
	if s.Key.server {
		kind = trace.SpanKindServer
	}
	f := spans.Finished{Name: rec.name, Kind: kind, Start: c.wall(rec.start), End: c.wall(rec.end),
		TraceID: rec.traceID, SpanID: rec.spanID, Series: s.SpanAttributes(c.emitter), Attrs: kvs}
	if rec.hasParent {
		f.Parent = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: rec.traceID, SpanID: rec.parentID, TraceFlags: trace.TraceFlags(rec.parentFlags), Remote: true,
		})
	}
	if s.Err {
		f.Status = codes.Error
	}
	c.emitter.Emit(f)
	clear(kvs) // the buffer keeps no strings alive
	c.spanKVs = kvs[:0]
	if cap(buf) <= spanBufSize {
		c.spanBuf = buf[:0]
	}
}

// spanBufSize holds a span's own strings: url.path, url.full (authority,
// path, query), the peer's address, the original method.
const spanBufSize = 4 * (maxPath + 2*maxValue)

// view is b as a string without a copy: for attribute values Emit reads
// before b is reused.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// spanURLAttrs adds what a span says about the request's URL and its
// server, from its own headers: a client span's url.full and
// server.address/.port (the Host header, the socket peer without one); a
// server span's server.address/.port (Host) and user_agent.original; the
// redacted url.query when it is enabled. New strings are views of buf.
func (c *Collector) spanURLAttrs(kvs []attribute.KeyValue, buf []byte, rec *spanRecord, server bool) ([]attribute.KeyValue, []byte) {
	rawHost := unsafe.Slice(unsafe.StringData(rec.host), len(rec.host)) // read only
	host, port, hostOK := splitHost(rawHost)
	if server {
		if hostOK {
			kvs = append(kvs, keyServerAddress.String(view(host)), keyServerPort.Int(int(port)))
		}
		if rec.userAgent != "" {
			kvs = append(kvs, keyUserAgent.String(rec.userAgent))
		}
		if rec.query != "" {
			kvs = append(kvs, keyURLQuery.String(rec.query))
		}
		return kvs, buf
	}
	authority := rawHost
	if !hostOK {
		authority = nil
	}
	at := len(buf)
	buf = appendURLFull(buf, authority, rec.peer, rec.peerPort, rec.path[:rec.pathLen], nil)
	if rec.query != "" {
		buf = append(append(buf, '?'), rec.query...)
	}
	kvs = append(kvs, keyURLFull.String(view(buf[at:])))
	switch {
	case hostOK:
		kvs = append(kvs, keyServerAddress.String(view(host)), keyServerPort.Int(int(port)))
	case rec.peer.IsValid():
		at = len(buf)
		buf = rec.peer.AppendTo(buf)
		kvs = append(kvs, keyServerAddress.String(view(buf[at:])), keyServerPort.Int(int(rec.peerPort)))
	}
	return kvs, buf
}

// serverAddress sets the connection's server.address and server.port for
// the client metrics of a request with Host header host: the name and port
// it names (interned per service, capped by http.max_routes, past which the
// name is _OTHER and counted), or none, and the peer is used. A connection
// mostly sends one Host, so the last one is remembered.
func (c *Collector) serverAddress(st *connState, host []byte) {
	if st.hostLen != len(host) || string(st.lastHost[:st.hostLen]) != string(host) {
		st.hostLen = copy(st.lastHost[:], host)
		st.hostName, st.hostPort, st.hostOverflow = "", 0, false
		if name, port, ok := splitHost(host); ok {
			var kept bool
			st.hostName, kept = c.routes.Host(st.svc, name)
			st.hostOverflow = !kept
			st.hostPort = port
		}
	}
	if st.hostOverflow && st.stats != nil {
		st.stats.addressOverflow.Add(1)
	}
}

package http2

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/otelbee/otelbee/collectors/l7"
	"go.opentelemetry.io/otel/attribute"
)

// Router names request paths with bounded cardinality per service: the
// HTTP/1 collector's route table (httpc.Routes) satisfies it, so both
// versions name routes alike. The protocol serialises its calls, so give it
// a table of its own (the same patterns), not one another goroutine uses.
type Router interface {
	// RouteSide returns the template of path: a configured pattern's, or
	// the heuristic's folding; "_OTHER" past the service's cap.
	RouteSide(service string, client bool, path []byte) string
	// Known reports whether route is a configured pattern's template.
	Known(route string) bool
}

// Options configure the protocol.
type Options struct {
	Limits Limits
	// Routes gives http.route (configured patterns) and url.template; nil:
	// neither attribute, spans named by the method.
	Routes Router
	// MaxMethods caps the distinct rpc.method values per process; later
	// ones are _OTHER (Protocol.Overflow counts them).
	MaxMethods int
	// MaxHosts caps the distinct server.address values (from :authority)
	// per client process; later ones are _OTHER (counted likewise).
	MaxHosts int
	// ClientURLScheme puts url.scheme on client metrics (opt-in there as
	// for HTTP/1; always on server metrics).
	ClientURLScheme bool
	// RouteHeuristic puts the route table's folded templates into
	// http.route too (server side), as HTTP/1's switch does.
	RouteHeuristic bool
}

const (
	defaultMaxMethods = 200
	defaultMaxHosts   = 100
)

// Metric indices of Exchange.Metric: a gRPC call is recorded on the RPC
// metric only, any other stream on the HTTP one.
const (
	metricHTTP = iota
	metricRPC
)

// Protocol is HTTP/2 (h2c, h2 over TLS, gRPC) for the L7 layer.
type Protocol struct {
	opts Options

	mu      sync.Mutex // Routes and the tables below, shared by every connection
	methods interned
	hosts   interned
	names   map[nameKey]string
	// conns counts new connections, to sweep the tables of processes
	// gone now and then (alive says whether a process still runs).
	conns uint64
	alive func(pid uint32) bool
	// overflow counts exchanges whose rpc.method or server.address became
	// _OTHER because their process reached its cap.
	overflow atomic.Uint64
}

// interned holds bounded sets of names per process: past max a name is
// _OTHER. Interned strings make attribute values that compare cheaply
// and cost no allocation after the first time.
type interned struct {
	byPID map[uint32]map[string]string
	max   int
}

// get returns b's interned string for pid; the caller holds the lock.
func (t *interned) get(pid uint32, b []byte) string {
	set := t.byPID[pid]
	if set == nil {
		set = map[string]string{}
		t.byPID[pid] = set
	}
	if s, ok := set[string(b)]; ok {
		return s
	}
	if len(set) >= t.max {
		return otherValue
	}
	s := string(b)
	set[s] = s
	return s
}

type nameKey struct {
	method, target string
}

// New returns the protocol.
func New(opts Options) *Protocol {
	if opts.MaxMethods <= 0 {
		opts.MaxMethods = defaultMaxMethods
	}
	if opts.MaxHosts <= 0 {
		opts.MaxHosts = defaultMaxHosts
	}
	opts.Limits = opts.Limits.withDefaults()
	return &Protocol{opts: opts, names: map[nameKey]string{}, alive: procAlive,
		methods: interned{byPID: map[uint32]map[string]string{}, max: opts.MaxMethods},
		hosts:   interned{byPID: map[uint32]map[string]string{}, max: opts.MaxHosts}}
}

// Overflow is the number of exchanges recorded with rpc.method or
// server.address _OTHER because their process had reached MaxMethods or
// MaxHosts.
func (p *Protocol) Overflow() uint64 { return p.overflow.Load() }

// Name implements l7.Protocol.
func (p *Protocol) Name() string { return "http2" }

// Metrics implements l7.Protocol: the HTTP conventions' request duration
// and the RPC conventions' call duration (v1.44), both in seconds.
func (p *Protocol) Metrics(role l7.Role) []l7.MetricSpec {
	if role == l7.RoleServer {
		return []l7.MetricSpec{
			{Name: "http.server.request.duration", Unit: "s", Description: "Duration of HTTP server requests.", Kind: l7.Duration, Index: metricHTTP},
			{Name: "rpc.server.call.duration", Unit: "s", Description: "Measures the duration of an incoming Remote Procedure Call (RPC).", Kind: l7.Duration, Index: metricRPC},
		}
	}
	return []l7.MetricSpec{
		{Name: "http.client.request.duration", Unit: "s", Description: "Duration of HTTP client requests.", Kind: l7.Duration, Index: metricHTTP},
		{Name: "rpc.client.call.duration", Unit: "s", Description: "Measures the duration of an outgoing Remote Procedure Call (RPC).", Kind: l7.Duration, Index: metricRPC},
	}
}

// Capture implements l7.CapturePolicy: a server reads frames on one
// thread while it writes others on another (Go's net/http, gRPC), the
// streams paired by id (Multiplexed).
func (p *Protocol) Capture() l7.Capture { return l7.Capture{Multiplexed: true} }

// NewParser implements l7.Protocol.
func (p *Protocol) NewParser(c *l7.Conn) l7.Parser {
	return p.newConn(c, nil, Times{})
}

// NewUpgradedParser returns the parser of a connection that HTTP/1.1
// upgraded to h2c: req is the upgrade request, answered with 101, which is
// stream 1 of the HTTP/2 connection; t its times. The bytes after the 101's
// head are the first records to Feed.
func (p *Protocol) NewUpgradedParser(c *l7.Conn, req Upgraded, t Times) l7.Parser {
	return p.newConn(c, &req, t)
}

// Upgraded implements l7.Upgrader: an h2c upgrade, its request stream 1.
func (p *Protocol) Upgraded(c *l7.Conn, u *l7.Upgrade) l7.Parser {
	scheme := "http"
	if c.Source.TLS() {
		scheme = "https"
	}
	return p.newConn(c, &Upgraded{Method: u.Method, Path: u.Target, Authority: u.Host, Scheme: []byte(scheme)},
		Times{Start: int64(u.Start), End: int64(u.End)})
}

// routeKey names the set of routes a connection's paths are capped in: a
// server's listening port, or the server a client calls. The route table
// never forgets a key, so it must not be the process (a host runs ever new
// ones, every curl among them); ports and the servers called are few, and
// a template's cardinality is the server's API's anyway. Allocated once per
// connection.
func routeKey(c *l7.Conn) string {
	if c.Role == l7.RoleServer {
		return "server " + strconv.Itoa(int(c.Local.Port()))
	}
	return "client " + c.Peer.String()
}

// sweepEvery is how many new connections pass between two sweeps of the
// per-process tables.
const sweepEvery = 256

// procAlive reports whether pid still runs.
func procAlive(pid uint32) bool {
	_, err := os.Stat("/proc/" + strconv.FormatUint(uint64(pid), 10))
	return err == nil
}

// sweep drops the tables of processes that exited: each is bounded, but
// a host runs ever new processes. Rare (every sweepEvery connections) and
// only over the processes that made gRPC calls or client requests.
func (p *Protocol) sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns++; p.conns%sweepEvery != 0 {
		return
	}
	for _, t := range []*interned{&p.methods, &p.hosts} {
		for pid := range t.byPID {
			if !p.alive(pid) {
				delete(t.byPID, pid)
			}
		}
	}
}

func (p *Protocol) newConn(c *l7.Conn, up *Upgraded, t Times) *conn {
	p.sweep()
	cp := &conn{proto: p, c: c, svc: routeKey(c)}
	cp.eng = NewParser(ParserConfig{Limits: p.opts.Limits, Emit: cp.emit, Joined: c.Midstream && up == nil})
	if up != nil {
		cp.eng.Upgrade(*up, t)
	}
	return cp
}

// conn is one connection's l7.Parser: the frame and stream parser, and
// the mapping of its exchanges to the conventions' attributes.
type conn struct {
	proto *Protocol
	c     *l7.Conn
	eng   *Parser
	out   l7.Sink // during a call from the layer
	x     l7.Exchange
	seen  Stats // what was already reported through Sink.Drop
	// svc keys the route caps (routeKey).
	svc string

	// One-entry caches of the last path's route, method's name and
	// authority's address, so a connection calling the same thing looks
	// nothing up.
	path   cached
	route  string
	known  bool
	method cached
	rpc    string
	auth   cached
	host   string
	port   int
	name   struct{ method, target, name string }
}

// cached is a copy of a field's last value.
type cached struct {
	b [defaultMaxField]byte
	n int
	// ok: b[:n] is valid (a field longer than the buffer is never cached).
	ok bool
}

// hit reports whether v is the cached value, and caches it otherwise.
func (k *cached) hit(v []byte) bool {
	if k.ok && k.n == len(v) && string(k.b[:k.n]) == string(v) {
		return true
	}
	k.ok = len(v) <= len(k.b)
	k.n = copy(k.b[:], v)
	return false
}

// Feed implements l7.Parser.
func (cp *conn) Feed(r *l7.Record, out l7.Sink) {
	cp.out = out
	cp.eng.FeedSegs(r.Dir, r.Data, r.Segs, r.Total, Times{Start: int64(r.Start), End: int64(r.End)})
	cp.drops()
	cp.out = nil
}

// Lost implements l7.Parser.
func (cp *conn) Lost(dir l7.Dir, out l7.Sink) {
	cp.out = out
	cp.eng.LostDir(dir)
	cp.drops()
	cp.out = nil
}

// Close implements l7.Parser.
func (cp *conn) Close(end uint64, out l7.Sink) {
	cp.out = out
	cp.eng.now.End = int64(end)
	cp.eng.Close()
	cp.drops()
	cp.out = nil
}

// drops reports what the parser gave up since the last call, by the
// layer's reasons.
func (cp *conn) drops() {
	s := &cp.eng.stats
	report := func(seen *uint64, now uint64, reason string) {
		if now != *seen {
			cp.out.Drop(cp.c, reason, int(now-*seen))
			*seen = now
		}
	}
	report(&cp.seen.Undecodable, s.Undecodable, "undecodable")
	report(&cp.seen.Lost, s.Lost, "lost")
	report(&cp.seen.Unseen, s.Unseen, "lost")
	report(&cp.seen.Unfinished, s.Unfinished, "incomplete")
	report(&cp.seen.DroppedStreams, s.DroppedStreams, "overflow")
}

// Stats returns the connection's parser counters (tests, debugging).
func (cp *conn) Stats() Stats { return cp.eng.Stats() }

// emit maps one finished stream to an l7.Exchange.
func (cp *conn) emit(e *Exchange) {
	if cp.out == nil {
		return
	}
	x := &cp.x
	x.Reset()
	x.Start, x.End = uint64(e.Start), uint64(e.End)
	x.RequestSize, x.ResponseSize = e.RequestBytes, e.ResponseBytes
	if e.HasParent {
		x.HasParent, x.TraceID, x.ParentSpanID, x.TraceFlags = true, e.TraceID, e.ParentSpanID, e.TraceFlags
	}
	if m := e.GRPCMethod(); m != nil {
		cp.grpcExchange(e, m)
	} else {
		cp.httpExchange(e)
	}
	cp.out.Exchange(cp.c, x)
}

var (
	keyMethod       = attribute.Key("http.request.method")
	keyStatus       = attribute.Key("http.response.status_code")
	keyRoute        = attribute.Key("http.route")
	keyURLTemplate  = attribute.Key("url.template")
	keyScheme       = attribute.Key("url.scheme")
	keyProtoVersion = attribute.Key("network.protocol.version")
	keyServerAddr   = attribute.Key("server.address")
	keyServerPort   = attribute.Key("server.port")
	keyRPCSystem    = attribute.Key("rpc.system.name")
	keyRPCMethod    = attribute.Key("rpc.method")
	keyRPCOriginal  = attribute.Key("rpc.method_original")
	keyRPCStatus    = attribute.Key("rpc.response.status_code")

	version2   = keyProtoVersion.String("2")
	systemGRPC = keyRPCSystem.String("grpc")
)

// otherValue is the conventions' value for a method (HTTP or RPC) that is
// not known, and for a name past a cap.
const otherValue = "_OTHER"

func (cp *conn) httpExchange(e *Exchange) {
	x := &cp.x
	server := cp.c.Role == l7.RoleServer
	x.Metric = metricHTTP
	method := httpMethod(e.Method)
	x.Add(keyMethod.String(method))
	if e.Status > 0 {
		x.Add(keyStatus.Int(e.Status))
	}
	x.Add(version2)
	if server || cp.proto.opts.ClientURLScheme {
		x.Add(keyScheme.String(cp.scheme(e.Scheme)))
	}
	target := ""
	if r := cp.proto.opts.Routes; r != nil && len(e.Path) > 0 {
		if !cp.path.hit(e.Path) {
			cp.proto.mu.Lock()
			cp.route = r.RouteSide(cp.svc, !server, e.Path)
			cp.known = r.Known(cp.route)
			cp.proto.mu.Unlock()
		}
		if server && (cp.known || cp.proto.opts.RouteHeuristic) {
			x.Add(keyRoute.String(cp.route))
			target = cp.route
		} else {
			// The heuristic's template (or _OTHER past the cap), as
			// HTTP/1 reports it; a client span is named by it.
			x.Add(keyURLTemplate.String(cp.route))
			if !server {
				target = cp.route
			}
		}
	}
	if !server {
		cp.addServer(e.Authority, e.Scheme)
	}
	x.SpanName = cp.spanName(method, target)
	switch {
	case e.Status == 0 && e.Reset:
		x.Error = resetName(e.ResetCode)
	case e.Status == 0:
		x.Error = otherValue
	case e.Status >= 500 || (!server && e.Status >= 400):
		x.Error = statusText(e.Status)
	}
	x.StatusError = x.Error != ""
}

func (cp *conn) grpcExchange(e *Exchange, path []byte) {
	x := &cp.x
	server := cp.c.Role == l7.RoleServer
	x.Metric = metricRPC
	code := grpcCode(e)
	method := otherValue
	if code != codeUnimplemented && validMethod(path[1:]) {
		// UNIMPLEMENTED: the server does not know the method, so it is
		// not one of the service's (and not a series of its own).
		method = cp.rpcMethod(path[1:])
	}
	x.Add(systemGRPC)
	x.Add(keyRPCMethod.String(method))
	x.Add(keyRPCStatus.String(codeNames[code]))
	if !server {
		cp.addServer(e.Authority, e.Scheme)
	}
	if method == otherValue {
		x.AddSpan(keyRPCOriginal.String(string(path[1:])))
		x.SpanName = "grpc"
	} else {
		x.SpanName = method
	}
	if grpcError(code, server) {
		x.Error = codeNames[code]
		x.StatusError = true
	}
}

// rpcMethod interns a method for the connection's process, within its cap.
func (cp *conn) rpcMethod(m []byte) string {
	if !cp.method.hit(m) {
		cp.proto.mu.Lock()
		cp.rpc = cp.proto.methods.get(cp.c.PID, m)
		cp.proto.mu.Unlock()
	}
	if cp.rpc == otherValue {
		cp.proto.overflow.Add(1)
	}
	return cp.rpc
}

// ForgetProcess drops what a process's caps held (at its exit).
func (p *Protocol) ForgetProcess(pid uint32) {
	p.mu.Lock()
	delete(p.methods.byPID, pid)
	delete(p.hosts.byPID, pid)
	p.mu.Unlock()
}

// validMethod: "package.Service/Method", both parts non-empty.
func validMethod(m []byte) bool {
	slash := -1
	for i, c := range m {
		if c == '/' {
			if slash >= 0 {
				return false
			}
			slash = i
		}
	}
	return slash > 0 && slash < len(m)-1
}

// addServer puts server.address and server.port from the request's
// :authority on a client exchange.
func (cp *conn) addServer(authority, scheme []byte) {
	x := &cp.x
	if len(authority) == 0 {
		return
	}
	if !cp.auth.hit(authority) {
		cp.host, cp.port = "", 0
		name, port, ok := splitAuthority(authority)
		if ok {
			if port == 0 {
				port = 80
				if cp.scheme(scheme) == "https" {
					port = 443
				}
			}
			cp.proto.mu.Lock()
			cp.host = cp.proto.hosts.get(cp.c.PID, name)
			cp.proto.mu.Unlock()
			cp.port = port
		}
	}
	if cp.host == otherValue {
		cp.proto.overflow.Add(1)
	}
	if cp.host != "" {
		x.Add(keyServerAddr.String(cp.host))
		x.Add(keyServerPort.Int(cp.port))
	}
}

// splitAuthority splits host[:port] or [v6][:port]; port 0 when absent.
func splitAuthority(a []byte) (host []byte, port int, ok bool) {
	host = a
	if len(a) > 0 && a[0] == '[' {
		end := -1
		for i, c := range a {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 2 {
			return nil, 0, false
		}
		host, a = a[1:end], a[end+1:]
		if len(a) == 0 {
			return host, 0, true
		}
		if a[0] != ':' {
			return nil, 0, false
		}
		a = a[1:]
	} else {
		colon := -1
		for i, c := range a {
			if c == ':' {
				colon = i
			}
		}
		if colon < 0 {
			return host, 0, len(host) > 0
		}
		host, a = a[:colon], a[colon+1:]
	}
	if len(host) == 0 || len(a) == 0 || len(a) > 5 {
		return nil, 0, false
	}
	for _, c := range a {
		if c < '0' || c > '9' {
			return nil, 0, false
		}
		port = port*10 + int(c-'0')
	}
	if port == 0 || port > 65535 {
		return nil, 0, false
	}
	return host, port, true
}

// scheme is url.scheme: the request's :scheme when it is http or https,
// else what the data source says.
func (cp *conn) scheme(s []byte) string {
	switch string(s) {
	case "http":
		return "http"
	case "https":
		return "https"
	}
	if cp.c.Source.TLS() {
		return "https"
	}
	return "http"
}

// spanName is "{method} {target}", or the method alone ("HTTP" for
// _OTHER) without a target; interned, and cached per connection.
func (cp *conn) spanName(method, target string) string {
	if method == otherValue {
		method = "HTTP"
	}
	if target == "" || target == otherValue {
		return method
	}
	if n := &cp.name; n.method == method && n.target == target {
		return n.name
	}
	p := cp.proto
	k := nameKey{method, target}
	p.mu.Lock()
	s, ok := p.names[k]
	if !ok {
		s = method + " " + target
		// Bounded: methods are fixed, targets capped per service.
		p.names[k] = s
	}
	p.mu.Unlock()
	cp.name.method, cp.name.target, cp.name.name = method, target, s
	return s
}

// httpMethod is http.request.method: a method of RFC 9110 or PATCH, else
// _OTHER.
func httpMethod(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "HEAD":
		return "HEAD"
	case "OPTIONS":
		return "OPTIONS"
	case "PATCH":
		return "PATCH"
	case "CONNECT":
		return "CONNECT"
	case "TRACE":
		return "TRACE"
	}
	return otherValue
}

// statusTexts are the decimal strings of HTTP statuses 100-599 (error.type
// of a failed request), made once.
var statusTexts = func() (t [600]string) {
	for i := 100; i < len(t); i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusText(s int) string {
	if s >= 100 && s < len(statusTexts) {
		return statusTexts[s]
	}
	return otherValue
}

// resetNames are RFC 9113's error codes, error.type of a stream reset
// before its response.
var resetNames = [...]string{"NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
	"SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
	"COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"}

func resetName(code uint32) string {
	if code < uint32(len(resetNames)) {
		return resetNames[code]
	}
	return otherValue
}

// gRPC status codes (grpc/doc/statuscodes.md) and their names as
// rpc.response.status_code carries them.
const (
	codeOK                      = 0
	codeCancelled               = 1
	codeUnknown                 = 2
	codeDeadlineExceeded        = 4
	codePermissionDenied        = 7
	codeResourceExhausted       = 8
	codeUnimplemented           = 12
	codeInternal                = 13
	codeUnavailable             = 14
	codeDataLoss                = 15
	codeUnauthenticated         = 16
	rstRefusedStream            = 0x7
	rstCancel                   = 0x8
	rstEnhanceYourCalm          = 0xb
	rstInadequateSecurity       = 0xc
	deadlineSlackMin      int64 = 5e6
)

var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// grpcCode is the call's status: grpc-status when the server sent one,
// else what gRPC's specifications make of how the stream ended.
func grpcCode(e *Exchange) int {
	switch {
	case e.GRPCStatus >= 0:
		if e.GRPCStatus >= len(codeNames) {
			return codeUnknown // gRPC reads an unknown code as UNKNOWN
		}
		return e.GRPCStatus
	case e.Reset:
		switch e.ResetCode {
		case rstCancel:
			// Either side cancels the call when its deadline passes
			// (grpc-go's server too): the request's grpc-timeout tells a
			// deadline from a cancellation.
			if t := e.GRPCTimeout; t > 0 && e.End-e.Start >= t-max(deadlineSlackMin, t/20) {
				return codeDeadlineExceeded
			}
			return codeCancelled
		case rstRefusedStream:
			return codeUnavailable
		case rstEnhanceYourCalm:
			return codeResourceExhausted
		case rstInadequateSecurity:
			return codePermissionDenied
		}
		return codeInternal
	}
	// No grpc-status: the HTTP status as gRPC maps it
	// (grpc/doc/http-grpc-status-mapping.md).
	switch e.Status {
	case 400, 200:
		return codeInternal
	case 401:
		return codeUnauthenticated
	case 403:
		return codePermissionDenied
	case 404:
		return codeUnimplemented
	case 429, 502, 503, 504:
		return codeUnavailable
	}
	return codeUnknown
}

// grpcError: every code but OK fails a client call; a server's call fails
// with the codes the gRPC conventions list for servers.
func grpcError(code int, server bool) bool {
	if !server {
		return code != codeOK
	}
	switch code {
	case codeUnknown, codeDeadlineExceeded, codeUnimplemented, codeInternal, codeUnavailable, codeDataLoss:
		return true
	}
	return false
}

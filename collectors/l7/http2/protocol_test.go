package http2

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// recSink is the layer's side of the contract as a test sees it: every
// exchange as a line of its attributes, and the drops by reason.
type recSink struct {
	lines []string
	drops map[string]int
	last  l7.Exchange
}

func newRecSink() *recSink { return &recSink{drops: map[string]int{}} }

func (s *recSink) Exchange(c *l7.Conn, x *l7.Exchange) {
	s.last = *x
	s.lines = append(s.lines, exchangeLine(x))
}

func (s *recSink) Drop(c *l7.Conn, reason string, n int) { s.drops[reason] += n }

// exchangeLine is "metric span-name | attrs... | error status-error [span attrs]".
func exchangeLine(x *l7.Exchange) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %q |", x.Metric, x.SpanName)
	for _, kv := range x.Attrs[:x.NAttr] {
		fmt.Fprintf(&b, " %s=%s", kv.Key, kv.Value.Emit())
	}
	fmt.Fprintf(&b, " | err=%s/%v", x.Error, x.StatusError)
	for _, kv := range x.SpanAttrs[:x.NSpanAttr] {
		fmt.Fprintf(&b, " span:%s=%s", kv.Key, kv.Value.Emit())
	}
	return b.String()
}

func attr(x *l7.Exchange, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range x.Attrs[:x.NAttr] {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// tableRouter is a Router with configured routes only (exact paths, as
// patterns without placeholders are), every other path folded to its first
// segment: enough to tell http.route from url.template apart.
type tableRouter struct {
	known map[string]bool
	calls int
}

func (r *tableRouter) RouteSide(service string, client bool, path []byte) string {
	r.calls++
	if r.known[string(path)] {
		return string(path)
	}
	if i := strings.IndexByte(string(path[1:]), '/'); i >= 0 {
		return string(path[:i+1]) + "/{id}"
	}
	return string(path)
}
func (r *tableRouter) Known(route string) bool { return r.known[route] }

func feedL7(p l7.Parser, chunks []chunk, sink l7.Sink) {
	for i, c := range chunks {
		p.Feed(&l7.Record{Dir: c.dir, Data: c.data, Total: uint64(len(c.data)), Start: uint64(i*10 + 100), End: uint64(i*10 + 105)}, sink)
	}
	p.Close(uint64(len(chunks)*10+200), sink)
}

func TestProtocolAttributes(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name   string
		role   l7.Role
		source l7.Source
		step   func(cl, sv *wire, out *[]chunk)
		want   []string
		drops  map[string]int
		check  func(t *testing.T, x *l7.Exchange)
	}{
		{
			name: "http server: configured route, traceparent, 500",
			role: l7.RoleServer,
			step: func(cl, sv *wire, out *[]chunk) {
				cl.headers(1, true, 0, 0, ":method", "GET", ":scheme", "http", ":authority", "svc:8080", ":path", "/users/42?token=x", "traceparent", tp)
				cl.headers(3, true, 0, 0, ":method", "GET", ":scheme", "http", ":authority", "svc:8080", ":path", "/health")
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, true, 0, 0, ":status", "500")
				sv.headers(3, true, 0, 0, ":status", "200")
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{
				`0 "GET" | http.request.method=GET http.response.status_code=500 network.protocol.version=2 url.scheme=http url.template=/users/{id} | err=500/true`,
				`0 "GET /health" | http.request.method=GET http.response.status_code=200 network.protocol.version=2 url.scheme=http http.route=/health | err=/false`,
			},
		},
		{
			name:   "http client over TLS: server.address from :authority, 404 fails, a reset before the response",
			role:   l7.RoleClient,
			source: l7.SourceGoTLS,
			step: func(cl, sv *wire, out *[]chunk) {
				cl.headers(1, true, 0, 0, ":method", "PURGE", ":scheme", "https", ":authority", "api.example", ":path", "/health", "traceparent", tp)
				cl.headers(3, true, 0, 0, ":method", "DELETE", ":scheme", "https", ":authority", "[::1]:8443", ":path", "/items/7")
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, true, 0, 0, ":status", "404")
				sv.fr.WriteRSTStream(3, http2.ErrCodeRefusedStream)
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{
				`0 "HTTP /health" | http.request.method=_OTHER http.response.status_code=404 network.protocol.version=2 url.template=/health server.address=api.example server.port=443 | err=404/true`,
				`0 "DELETE /items/{id}" | http.request.method=DELETE network.protocol.version=2 url.template=/items/{id} server.address=::1 server.port=8443 | err=REFUSED_STREAM/true`,
			},
		},
		{
			// url.scheme from the record's source: https over OpenSSL
			// whatever the request's :scheme lacks (a proxy's other scheme
			// stays the client's: the original request's, as the
			// conventions ask of a server).
			name:   "http server over TLS: url.scheme https from the source",
			role:   l7.RoleServer,
			source: l7.SourceOpenSSL,
			step: func(cl, sv *wire, out *[]chunk) {
				cl.headers(1, true, 0, 0, ":method", "GET", ":scheme", "https", ":authority", "svc", ":path", "/health")
				cl.headers(3, true, 0, 0, ":method", "GET", ":authority", "svc", ":path", "/health")
				cl.headers(5, true, 0, 0, ":method", "GET", ":scheme", "ftp", ":authority", "svc", ":path", "/health")
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, true, 0, 0, ":status", "200")
				sv.headers(3, true, 0, 0, ":status", "200")
				sv.headers(5, true, 0, 0, ":status", "200")
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{
				`0 "GET /health" | http.request.method=GET http.response.status_code=200 network.protocol.version=2 url.scheme=https http.route=/health | err=/false`,
				`0 "GET /health" | http.request.method=GET http.response.status_code=200 network.protocol.version=2 url.scheme=https http.route=/health | err=/false`,
				`0 "GET /health" | http.request.method=GET http.response.status_code=200 network.protocol.version=2 url.scheme=https http.route=/health | err=/false`,
			},
		},
		{
			name:   "http server over the syscalls: url.scheme http without an http(s) :scheme",
			role:   l7.RoleServer,
			source: l7.SourceSyscall,
			step: func(cl, sv *wire, out *[]chunk) {
				cl.headers(1, true, 0, 0, ":method", "GET", ":authority", "svc", ":path", "/health")
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, true, 0, 0, ":status", "200")
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{
				`0 "GET /health" | http.request.method=GET http.response.status_code=200 network.protocol.version=2 url.scheme=http http.route=/health | err=/false`,
			},
		},
		{
			name: "grpc server: trailers, trailers-only, unimplemented, bad path",
			role: l7.RoleServer,
			step: func(cl, sv *wire, out *[]chunk) {
				g := []string{"content-type", "application/grpc", "te", "trailers"}
				req(cl, 1, true, "/pkg.Svc/Get", g...)
				req(cl, 3, true, "/pkg.Svc/Find", g...)
				req(cl, 5, true, "/pkg.Svc/Nope", g...)
				req(cl, 7, true, "/notamethod", g...)
				req(cl, 9, true, "/pkg.Svc/Get", g...)
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, false, 0, 0, ":status", "200", "content-type", "application/grpc")
				sv.fr.WriteData(1, false, make([]byte, 30))
				sv.headers(1, true, 0, 0, "grpc-status", "0")
				sv.headers(3, true, 0, 0, ":status", "200", "content-type", "application/grpc", "grpc-status", "5", "grpc-message", "no")
				sv.headers(5, true, 0, 0, ":status", "200", "content-type", "application/grpc", "grpc-status", "12")
				sv.headers(7, true, 0, 0, ":status", "200", "content-type", "application/grpc", "grpc-status", "12")
				sv.headers(9, true, 0, 0, ":status", "200", "content-type", "application/grpc", "grpc-status", "13")
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{
				`1 "pkg.Svc/Get" | rpc.system.name=grpc rpc.method=pkg.Svc/Get rpc.response.status_code=OK | err=/false`,
				`1 "pkg.Svc/Find" | rpc.system.name=grpc rpc.method=pkg.Svc/Find rpc.response.status_code=NOT_FOUND | err=/false`,
				`1 "grpc" | rpc.system.name=grpc rpc.method=_OTHER rpc.response.status_code=UNIMPLEMENTED | err=UNIMPLEMENTED/true span:rpc.method_original=pkg.Svc/Nope`,
				`1 "grpc" | rpc.system.name=grpc rpc.method=_OTHER rpc.response.status_code=UNIMPLEMENTED | err=UNIMPLEMENTED/true span:rpc.method_original=notamethod`,
				`1 "pkg.Svc/Get" | rpc.system.name=grpc rpc.method=pkg.Svc/Get rpc.response.status_code=INTERNAL | err=INTERNAL/true`,
			},
		},
		{
			name: "grpc client: NOT_FOUND fails, cancel vs deadline from grpc-timeout, no grpc-status",
			role: l7.RoleClient,
			step: func(cl, sv *wire, out *[]chunk) {
				g := []string{"content-type", "application/grpc"}
				req(cl, 1, true, "/pkg.Svc/Find", g...)
				// Records are 10 ns apart: a 10n timeout has passed when
				// the RST is sent, a 1S one has not.
				req(cl, 3, false, "/pkg.Svc/Slow", append(g, "grpc-timeout", "10n")...)
				req(cl, 5, false, "/pkg.Svc/Slow", append(g, "grpc-timeout", "1S")...)
				req(cl, 7, true, "/pkg.Svc/Get", g...)
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, true, 0, 0, ":status", "200", "content-type", "application/grpc", "grpc-status", "5")
				sv.headers(7, true, 0, 0, ":status", "503")
				*out = append(*out, chunk{FromServer, sv.take()})
				cl.fr.WriteRSTStream(3, http2.ErrCodeCancel)
				cl.fr.WriteRSTStream(5, http2.ErrCodeCancel)
				*out = append(*out, chunk{FromClient, cl.take()})
			},
			want: []string{
				`1 "pkg.Svc/Find" | rpc.system.name=grpc rpc.method=pkg.Svc/Find rpc.response.status_code=NOT_FOUND server.address=svc server.port=80 | err=NOT_FOUND/true`,
				`1 "pkg.Svc/Get" | rpc.system.name=grpc rpc.method=pkg.Svc/Get rpc.response.status_code=UNAVAILABLE server.address=svc server.port=80 | err=UNAVAILABLE/true`,
				`1 "pkg.Svc/Slow" | rpc.system.name=grpc rpc.method=pkg.Svc/Slow rpc.response.status_code=DEADLINE_EXCEEDED server.address=svc server.port=80 | err=DEADLINE_EXCEEDED/true`,
				`1 "pkg.Svc/Slow" | rpc.system.name=grpc rpc.method=pkg.Svc/Slow rpc.response.status_code=CANCELLED server.address=svc server.port=80 | err=CANCELLED/true`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			router := &tableRouter{known: map[string]bool{"/health": true}}
			proto := New(Options{Routes: router})
			src := tc.source
			if src == 0 {
				src = l7.SourceSyscall
			}
			c := &l7.Conn{ID: 1, PID: 7, Role: tc.role, Source: src}
			sink := newRecSink()
			feedL7(proto.NewParser(c), conversation(tc.step), sink)
			if !slices.Equal(sink.lines, tc.want) {
				t.Errorf("exchanges\n got %s\nwant %s", strings.Join(sink.lines, "\n     "), strings.Join(tc.want, "\n     "))
			}
			if len(sink.drops) != 0 {
				t.Errorf("drops %v", sink.drops)
			}
		})
	}
}

// The trace context of the request reaches the exchange; sizes are the
// DATA bytes, times the calls'.
func TestProtocolTraceAndTimes(t *testing.T) {
	proto := New(Options{})
	sink := newRecSink()
	c := &l7.Conn{ID: 1, PID: 7, Role: l7.RoleServer, Source: l7.SourceSyscall}
	feedL7(proto.NewParser(c), conversation(func(cl, sv *wire, out *[]chunk) {
		req(cl, 1, false, "/up", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		cl.fr.WriteData(1, true, make([]byte, 1000))
		*out = append(*out, chunk{FromClient, cl.take()})
		sv.headers(1, false, 0, 0, ":status", "201")
		sv.fr.WriteData(1, true, make([]byte, 17))
		*out = append(*out, chunk{FromServer, sv.take()})
	}), sink)
	x := &sink.last
	if len(sink.lines) != 1 || !x.HasParent || x.TraceFlags != 1 ||
		fmt.Sprintf("%x %x", x.TraceID, x.ParentSpanID) != "4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7" {
		t.Fatalf("trace context %+v", x)
	}
	// conversation's three setup chunks come first: the request is
	// record 3 (Start 130), the response record 4 (End 145).
	if x.Start != 130 || x.End != 145 || x.RequestSize != 1000 || x.ResponseSize != 17 {
		t.Errorf("times %d-%d, sizes %d/%d", x.Start, x.End, x.RequestSize, x.ResponseSize)
	}
	if _, ok := attr(x, keyRoute); ok {
		t.Errorf("http.route without a router: %s", exchangeLine(x))
	}
}

// A connection the agent joined in the middle (Conn.Midstream): whatever
// the dynamic table held is unknown, and streams referring to it are
// dropped as undecodable, never named.
func TestProtocolMidstream(t *testing.T) {
	g := newGRPCTraffic()
	full := append(conversation(func(cl, sv *wire, out *[]chunk) {}), g.batch(5)...)
	later := g.batch(5)
	for _, midstream := range []bool{false, true} {
		proto := New(Options{})
		sink := newRecSink()
		c := &l7.Conn{ID: 1, PID: 7, Role: l7.RoleServer, Source: l7.SourceSyscall, Midstream: midstream}
		chunks := later
		if !midstream {
			chunks = append(slices.Clone(full), later...)
		}
		feedL7(proto.NewParser(c), chunks, sink)
		switch {
		case midstream && (len(sink.lines) != 0 || sink.drops["undecodable"] != 5):
			t.Errorf("midstream: %d exchanges %v, drops %v; want 5 undecodable", len(sink.lines), sink.lines, sink.drops)
		case !midstream && (len(sink.lines) != 10 || len(sink.drops) != 0):
			t.Errorf("from the start: %d exchanges, drops %v", len(sink.lines), sink.drops)
		}
	}
}

// Drops reach the sink with the layer's reasons: streams past the cap
// (overflow), streams open at close (incomplete), after lost records
// (lost).
func TestProtocolDrops(t *testing.T) {
	proto := New(Options{Limits: Limits{MaxStreams: 2}})
	sink := newRecSink()
	c := &l7.Conn{ID: 1, PID: 7, Role: l7.RoleServer, Source: l7.SourceSyscall}
	p := proto.NewParser(c)
	chunks := conversation(func(cl, sv *wire, out *[]chunk) {
		for sid := uint32(1); sid <= 7; sid += 2 {
			req(cl, sid, true, "/x")
		}
		*out = append(*out, chunk{FromClient, cl.take()})
	})
	for _, ch := range chunks {
		p.Feed(&l7.Record{Dir: ch.dir, Data: ch.data, Total: uint64(len(ch.data))}, sink)
	}
	if want := map[string]int{"overflow": 2}; !maps.Equal(sink.drops, want) {
		t.Errorf("after 4 requests with room for 2: %v, want %v", sink.drops, want)
	}
	p.Lost(l7.ToClient, sink)
	if want := map[string]int{"overflow": 2, "lost": 2}; !maps.Equal(sink.drops, want) {
		t.Errorf("after a loss: %v, want %v", sink.drops, want)
	}
	cl := newWire()
	cl.fr.WriteSettingsAck() // a clean call boundary: still in sync on this side
	req(cl, 9, true, "/y")
	b := cl.take()
	p.Feed(&l7.Record{Dir: l7.ToServer, Data: b, Total: uint64(len(b))}, sink)
	p.Close(1000, sink)
	if want := map[string]int{"overflow": 2, "lost": 2, "incomplete": 1}; !maps.Equal(sink.drops, want) {
		t.Errorf("at close: %v, want %v", sink.drops, want)
	}
}

// rpc.method values are capped per process: past the cap, _OTHER.
func TestProtocolMethodCap(t *testing.T) {
	proto := New(Options{MaxMethods: 2})
	sink := newRecSink()
	for pid := uint32(1); pid <= 2; pid++ {
		c := &l7.Conn{ID: uint64(pid), PID: pid, Role: l7.RoleServer, Source: l7.SourceSyscall}
		feedL7(proto.NewParser(c), conversation(func(cl, sv *wire, out *[]chunk) {
			for i, m := range []string{"A", "B", "C", "A"} {
				req(cl, uint32(2*i+1), true, "/pkg.Svc/"+m, "content-type", "application/grpc")
			}
			*out = append(*out, chunk{FromClient, cl.take()})
			for i := range 4 {
				sv.headers(uint32(2*i+1), true, 0, 0, ":status", "200", "content-type", "application/grpc", "grpc-status", "0")
			}
			*out = append(*out, chunk{FromServer, sv.take()})
		}), sink)
	}
	var methods []string
	for _, l := range sink.lines {
		methods = append(methods, strings.Fields(strings.SplitN(l, "|", 3)[1])[1])
	}
	want := strings.Repeat("rpc.method=pkg.Svc/A rpc.method=pkg.Svc/B rpc.method=_OTHER rpc.method=pkg.Svc/A ", 2)
	if got := strings.Join(methods, " ") + " "; got != want {
		t.Errorf("methods %s, want %s", got, want)
	}
	if n := proto.Overflow(); n != 2 {
		t.Errorf("overflow %d, want 2", n)
	}
}

// h2c by upgrade: the 101's request is stream 1.
func TestProtocolUpgraded(t *testing.T) {
	proto := New(Options{})
	sink := newRecSink()
	c := &l7.Conn{ID: 1, PID: 7, Role: l7.RoleServer, Source: l7.SourceSyscall}
	p := proto.NewUpgradedParser(c, Upgraded{Method: []byte("GET"), Path: []byte("/up?q=1"), Authority: []byte("svc"), Scheme: []byte("http")}, Times{Start: 5, End: 6})
	sv, cl := newWire(), newWire()
	sv.fr.WriteSettings()
	sv.headers(1, true, 0, 0, ":status", "204")
	cl.buf.WriteString(preface)
	cl.fr.WriteSettings()
	feedL7(p, []chunk{{FromServer, sv.take()}, {FromClient, cl.take()}}, sink)
	if want := []string{`0 "GET" | http.request.method=GET http.response.status_code=204 network.protocol.version=2 url.scheme=http | err=/false`}; !slices.Equal(sink.lines, want) {
		t.Errorf("got %q, want %q", sink.lines, want)
	}
	if sink.last.Start != 5 {
		t.Errorf("start %d, want the upgrade request's", sink.last.Start)
	}
}

// The real gRPC programs through the relay, replayed through the layer's
// interface on each side: per method and status code, the client's own
// count.
func TestProtocolGRPCThroughRelay(t *testing.T) {
	r := newRelay(t, startGRPC(t), true)
	want := map[string]int{}
	counts := &grpcCounts{m: map[string]int{}}
	conn, err := grpc.NewClient(r.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	runGRPCWorkload(t, testpb.NewTestServiceClient(conn), counts, 3)
	// And a method the server lacks.
	for range 3 {
		_, err := testpb.NewUnimplementedServiceClient(conn).UnimplementedCall(context.Background(), &testpb.Empty{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("unimplemented call: %v", err)
		}
	}
	conn.Close()
	r.wait()
	for k, v := range counts.m {
		// "POST /grpc.testing.TestService/M 200 code" or "... DEADLINE"
		f := strings.Fields(k)
		code := codes.DeadlineExceeded
		if f[2] != "DEADLINE" {
			n, _ := strconv.Atoi(f[3])
			code = codes.Code(n)
		}
		want[f[1][1:]+" "+codeNames[code]] += v
	}
	want["_OTHER UNIMPLEMENTED"] += 3
	_, port, _ := net.SplitHostPort(r.addr())
	for _, role := range []l7.Role{l7.RoleServer, l7.RoleClient} {
		proto := New(Options{})
		got := map[string]int{}
		sink := &countSink{got: got, t: t, role: role, port: port}
		for i, rec := range r.record {
			p := proto.NewParser(&l7.Conn{ID: uint64(i), PID: 1, Role: role, Source: l7.SourceSyscall})
			for j, ch := range rec {
				at := uint64(r.times[i][j])
				p.Feed(&l7.Record{Dir: ch.dir, Data: ch.data, Total: uint64(len(ch.data)), Start: at, End: at}, sink)
			}
			p.Close(uint64(r.times[i][len(rec)-1]), sink)
		}
		if !maps.Equal(got, want) || sink.drops != 0 {
			t.Errorf("role %d: got %v\nwant %v (drops %d)", role, got, want, sink.drops)
		}
	}
}

type countSink struct {
	t     *testing.T
	role  l7.Role
	port  string
	got   map[string]int
	drops int
}

func (s *countSink) Exchange(c *l7.Conn, x *l7.Exchange) {
	m, _ := attr(x, keyRPCMethod)
	code, _ := attr(x, keyRPCStatus)
	s.got[m.AsString()+" "+code.AsString()]++
	if x.Metric != metricRPC || (x.SpanName != m.AsString() && x.SpanName != "grpc") {
		s.t.Errorf("not an rpc exchange: %s", exchangeLine(x))
	}
	if addr, _ := attr(x, keyServerAddr); s.role == l7.RoleClient && addr.AsString() != "127.0.0.1" {
		s.t.Errorf("client without server.address: %s", exchangeLine(x))
	}
	if p, _ := attr(x, keyServerPort); s.role == l7.RoleClient && strconv.Itoa(int(p.AsInt64())) != s.port {
		s.t.Errorf("client server.port: %s", exchangeLine(x))
	}
	failed := code.AsString() != "OK"
	if s.role == l7.RoleServer {
		failed = slices.Contains([]string{"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}, code.AsString())
	}
	if want := map[bool]string{true: code.AsString()}[failed]; x.Error != want || x.StatusError != failed {
		s.t.Errorf("error.type %q on %s, want %q", x.Error, exchangeLine(x), want)
	}
}

func (s *countSink) Drop(c *l7.Conn, reason string, n int) { s.drops += n }

// With the route heuristic on (http.route-heuristic), a server's folded
// template is http.route too, as for HTTP/1; the options come from the
// declared settings' defaults.
func TestProtocolRouteHeuristicAndConfig(t *testing.T) {
	cfg := DefaultConfig()
	for _, s := range Settings(&cfg) {
		if s.Check != nil {
			if err := s.Check(); err != nil {
				t.Errorf("default of %s: %v", s.Name(), err)
			}
		}
	}
	opts := cfg.Options(&tableRouter{known: map[string]bool{}}, true, false)
	if opts.Limits.MaxStreams != defaultMaxStreams || opts.MaxMethods != defaultMaxMethods || !opts.RouteHeuristic {
		t.Fatalf("options %+v", opts)
	}
	sink := newRecSink()
	c := &l7.Conn{ID: 1, PID: 7, Role: l7.RoleServer, Source: l7.SourceSyscall}
	feedL7(New(opts).NewParser(c), conversation(func(cl, sv *wire, out *[]chunk) {
		cl.headers(1, true, 0, 0, ":method", "GET", ":scheme", "http", ":authority", "svc", ":path", "/users/42")
		*out = append(*out, chunk{FromClient, cl.take()})
		sv.headers(1, true, 0, 0, ":status", "200")
		*out = append(*out, chunk{FromServer, sv.take()})
	}), sink)
	want := `0 "GET /users/{id}" | http.request.method=GET http.response.status_code=200 network.protocol.version=2 url.scheme=http http.route=/users/{id} | err=/false`
	if len(sink.lines) != 1 || sink.lines[0] != want {
		t.Errorf("got %q, want %q", sink.lines, want)
	}
}

// The per-process tables forget processes that exited, at the next sweep.
func TestProtocolForgetsExitedProcesses(t *testing.T) {
	proto := New(Options{})
	dead := map[uint32]bool{}
	proto.alive = func(pid uint32) bool { return !dead[pid] }
	sink := newRecSink()
	call := func(pid uint32) {
		c := &l7.Conn{ID: uint64(pid), PID: pid, Role: l7.RoleClient, Source: l7.SourceSyscall}
		feedL7(proto.NewParser(c), conversation(func(cl, sv *wire, out *[]chunk) {
			req(cl, 1, true, "/pkg.Svc/A", "content-type", "application/grpc")
			*out = append(*out, chunk{FromClient, cl.take()})
			sv.headers(1, true, 0, 0, ":status", "200", "content-type", "application/grpc", "grpc-status", "0")
			*out = append(*out, chunk{FromServer, sv.take()})
		}), sink)
	}
	for pid := uint32(1); pid <= 10; pid++ {
		call(pid)
	}
	if len(proto.methods.byPID) != 10 || len(proto.hosts.byPID) != 10 {
		t.Fatalf("tables of %d and %d processes, want 10", len(proto.methods.byPID), len(proto.hosts.byPID))
	}
	for pid := uint32(1); pid <= 8; pid++ {
		dead[pid] = true
	}
	for i := 10; i < sweepEvery; i++ {
		call(9)
	}
	if len(proto.methods.byPID) != 2 || len(proto.hosts.byPID) != 2 {
		t.Errorf("after the sweep: tables of %d and %d processes, want the 2 alive", len(proto.methods.byPID), len(proto.hosts.byPID))
	}
	if !procAlive(uint32(os.Getpid())) || procAlive(1<<30) {
		t.Error("procAlive")
	}
}

package httpc

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// uniquePoints fails when one collection holds two points of a metric with
// the same attributes (a backend keeps one of them and undercounts), and
// returns every metric's points by their attributes, with their counts.
func uniquePoints(tb testing.TB, reader *sdkmetric.ManualReader) map[string]map[string]uint64 {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(tb.Context(), &rm); err != nil {
		tb.Fatal(err)
	}
	out := map[string]map[string]uint64{}
	add := func(name string, set attribute.Set, n uint64) {
		if out[name] == nil {
			out[name] = map[string]uint64{}
		}
		k := attrString(set)
		if _, dup := out[name][k]; dup {
			tb.Errorf("%s: two points with attributes %s", name, k)
		}
		out[name][k] = n
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					add(m.Name, p.Attributes, p.Count)
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					add(m.Name, p.Attributes, p.Count)
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					add(m.Name, p.Attributes, uint64(p.Value))
				}
			}
		}
	}
	return out
}

// attrString renders the attributes that are not the process identity.
func attrString(set attribute.Set) string {
	var parts []string
	for _, kv := range set.ToSlice() {
		switch kv.Key {
		case "service.name", "service.namespace", "service.instance.id", "process.pid", "process.executable.name", "container.id":
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%s", kv.Key, kv.Value.Emit()))
	}
	sort.Strings(parts)
	return fmt.Sprint(parts)
}

// TestClientSeriesUniqueByAttributes: a client calling many paths of one
// server makes one point per attribute set, not one per route (the route is
// not a client attribute); HTTP/1.x minor versions beyond 1 share 1.1's.
func TestClientSeriesUniqueByAttributes(t *testing.T) {
	c, reader := unitCollector(t, sdktrace.NeverSample())
	c.cur.server = false
	c.cur.peer = netip.MustParseAddr("10.0.0.1")
	c.cur.peerPort = 8080
	for i := range 50 {
		ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: fmt.Appendf(nil, "/page%c", 'a'+i%26), Start: 1, End: 2}
		if i%10 == 0 {
			ex.Minor = 2 // HTTP/1.2 is exported as 1.1 as well
		}
		c.onExchange(ex)
	}
	pts := uniquePoints(t, reader)
	dur := pts["http.client.request.duration"]
	want := "[http.request.method=GET http.response.status_code=200 network.protocol.version=1.1 server.address=10.0.0.1 server.port=8080]"
	if len(dur) != 1 || dur[want] != 50 {
		t.Fatalf("client duration points %v, want one point %s with 50", dur, want)
	}
}

// TestOptInOffByDefault: what the conventions make opt-in (the body-size
// histograms, body sizes on spans, url.scheme on the client side) is off
// by default and on with its switch; url.scheme stays on the server side
// (required there). No histogram has a 0 bound.
func TestOptInOffByDefault(t *testing.T) {
	bodyMetrics := []string{"http.server.request.body.size", "http.server.response.body.size",
		"http.client.request.body.size", "http.client.response.body.size"}
	for _, tc := range []struct {
		name           string
		bodies, scheme bool
	}{
		{"default", false, false},
		{"body sizes", true, false},
		{"client url.scheme", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.BodySizes, cfg.ClientURLScheme = tc.bodies, tc.scheme
			exp := tracetest.NewInMemoryExporter()
			c, reader := unitCollectorWith(t, cfg, sdktrace.AlwaysSample(), sdktrace.WithSyncer(exp))
			server := c.cur
			client := c.newConn(connKey{tgid: 1, fd: 4, start: 1})
			client.peer, client.peerPort, client.svc, client.lastLen = netip.MustParseAddr("10.0.0.1"), 8080, "/unit", -1
			for _, st := range []*connState{server, client} {
				c.cur = st
				c.onExchange(&Exchange{Method: MethodPost, Status: 200, Minor: 1, Path: []byte("/p"), Start: 1, End: 2, ReqBody: 10, RespBody: 300})
			}
			pts := uniquePoints(t, reader)
			for _, m := range bodyMetrics {
				if got := len(pts[m]) == 1; got != tc.bodies {
					t.Errorf("%s exported: %v, want %v (%v)", m, got, tc.bodies, pts[m])
				}
			}
			scheme := map[string]bool{}
			for _, m := range []string{"http.server.request.duration", "http.client.request.duration"} {
				for k := range pts[m] {
					scheme[m] = strings.Contains(k, "url.scheme=http")
				}
			}
			if !scheme["http.server.request.duration"] || scheme["http.client.request.duration"] != tc.scheme {
				t.Errorf("url.scheme on server, client durations: %v, want true, %v", scheme, tc.scheme)
			}
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(t.Context(), &rm); err != nil {
				t.Fatal(err)
			}
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					var bounds []float64
					switch d := m.Data.(type) {
					case metricdata.Histogram[float64]:
						bounds = d.DataPoints[0].Bounds
					case metricdata.Histogram[int64]:
						bounds = d.DataPoints[0].Bounds
					}
					if len(bounds) > 0 && bounds[0] <= 0 {
						t.Errorf("%s has the bound %v (le=\"0\")", m.Name, bounds[0])
					}
				}
			}
			waitFor(t, func() bool { return c.spansQueued.Load() == uint64(len(exp.GetSpans())) })
			spans := exp.GetSpans()
			if len(spans) != 2 {
				t.Fatalf("%d spans, want 2", len(spans))
			}
			for _, sp := range spans {
				has := map[attribute.Key]bool{}
				for _, kv := range sp.Attributes {
					has[kv.Key] = true
				}
				if has["http.request.body.size"] != tc.bodies || has["http.response.body.size"] != tc.bodies {
					t.Errorf("%s span body sizes present %v, want %v", sp.SpanKind, has["http.request.body.size"], tc.bodies)
				}
				wantScheme := sp.SpanKind == trace.SpanKindServer || tc.scheme
				if has["url.scheme"] != wantScheme {
					t.Errorf("%s span url.scheme present %v, want %v", sp.SpanKind, has["url.scheme"], wantScheme)
				}
			}
		})
	}
}

// TestRouteOverflowCountedOnce: a client and a server past their route cap
// on one request each: the route overflow counter counts the server's
// requests (http.route is a server attribute), once.
func TestRouteOverflowCountedOnce(t *testing.T) {
	c, reader := unitCollector(t, sdktrace.NeverSample())
	if err := c.selfInstruments(); err != nil {
		t.Fatal(err)
	}
	var err error
	if c.routes, err = NewRoutes(nil, 2); err != nil {
		t.Fatal(err)
	}
	server := c.cur
	client := c.newConn(connKey{tgid: 1, fd: 4, start: 1})
	server.stats = c.statsFor(1)
	client.peer, client.peerPort, client.svc, client.stats, client.lastLen = netip.MustParseAddr("127.0.0.1"), 80, "/unit", server.stats, -1
	for i := range 10 {
		ex := &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: fmt.Appendf(nil, "/r%c", 'a'+i), Start: 1, End: 2}
		for _, st := range []*connState{server, client} {
			c.cur = st
			c.onExchange(ex)
		}
	}
	c.cur = server
	pts := uniquePoints(t, reader)
	if got := pts["otelbee.http.route.overflow"]["[]"]; got != 8 {
		t.Fatalf("route overflow %d for 8 server requests past the cap of 2 (and 8 client ones): %v", got, pts["otelbee.http.route.overflow"])
	}
	var n uint64
	for k, v := range pts["http.server.request.duration"] {
		n += v
		t.Log(k, v)
	}
	if n != 10 || len(pts["http.server.request.duration"]) != 3 {
		t.Fatalf("server points %v, want 3 routes holding 10", pts["http.server.request.duration"])
	}
}

// TestErrorTypeOnDurations: error.type is on the duration metrics, as the
// conventions require: the status code for server 5xx and client 4xx/5xx,
// nothing for other statuses.
func TestErrorTypeOnDurations(t *testing.T) {
	c, reader := unitCollector(t, sdktrace.NeverSample())
	for _, server := range []bool{true, false} {
		c.cur.server = server
		c.cur.lastSeries = nil
		for _, st := range []int{200, 404, 404, 500, 503, 503, 503} {
			c.onExchange(&Exchange{Method: MethodGet, Status: st, Minor: 1, Path: []byte("/x"), Start: 1, End: 2})
		}
	}
	pts := uniquePoints(t, reader)
	count := func(metric string) map[string]uint64 {
		out := map[string]uint64{}
		for _, dp := range pointsOf(t, reader, metric) {
			st, _ := dp.Attributes.Value(keyStatus)
			et, _ := dp.Attributes.Value(keyErrorType)
			out[fmt.Sprintf("%d %s", st.AsInt64(), et.Emit())] += dp.Count
		}
		return out
	}
	_ = pts
	for metric, want := range map[string]map[string]uint64{
		"http.server.request.duration": {"200 ": 1, "404 ": 2, "500 500": 1, "503 503": 3},
		"http.client.request.duration": {"200 ": 1, "404 404": 2, "500 500": 1, "503 503": 3},
	} {
		if got := count(metric); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s by status and error.type: %v, want %v", metric, got, want)
		}
	}
}

func pointsOf(tb testing.TB, reader *sdkmetric.ManualReader, name string) []metricdata.HistogramDataPoint[float64] {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(tb.Context(), &rm); err != nil {
		tb.Fatal(err)
	}
	var out []metricdata.HistogramDataPoint[float64]
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == name {
				out = append(out, h.DataPoints...)
			}
		}
	}
	return out
}

func collect(tb testing.TB, reader any) metricdata.ResourceMetrics {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.(*sdkmetric.ManualReader).Collect(tb.Context(), &rm); err != nil {
		tb.Fatal(err)
	}
	return rm
}

func sumInt64(d metricdata.Aggregation) (metricdata.Sum[int64], bool) {
	s, ok := d.(metricdata.Sum[int64])
	return s, ok
}

// TestTransportErrorType: requests waiting when a call on their connection
// fails are recorded with no status code and error.type naming the failure;
// a half-read request is counted incomplete; nothing is parsed afterwards.
func TestTransportErrorType(t *testing.T) {
	c, reader := unitCollector(t, sdktrace.NeverSample())
	st := c.cur
	st.stats = c.statsFor(1)
	for _, tc := range []struct {
		server bool
		errno  uint8
	}{{false, 104}, {false, 104}, {true, 32}, {false, 110}, {true, 113}} {
		st.server, st.lastSeries, st.lastLen = tc.server, nil, -1
		st.parser.Reset(tc.server, &st.stats.Stats, c.sinkFn)
		st.parser.Feed(tc.server, []byte("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), 28, callTimes{1, 2})
		st.parser.Feed(tc.server, []byte("GET /b HTTP/1.1\r\nHo"), 19, callTimes{3, 4}) // half a head
		st.parser.Fail(tc.errno, 10)
		st.parser.Feed(!tc.server, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 38, callTimes{11, 12})
	}
	got := map[string]uint64{}
	for _, m := range []string{"http.client.request.duration", "http.server.request.duration"} {
		for _, dp := range pointsOf(t, reader, m) {
			st, hasStatus := dp.Attributes.Value(keyStatus)
			et, _ := dp.Attributes.Value(keyErrorType)
			k := m + " " + et.Emit()
			if hasStatus {
				k += " status=" + st.Emit()
			}
			got[k] += dp.Count
		}
	}
	want := map[string]uint64{
		"http.client.request.duration connection_reset": 2,
		"http.client.request.duration timeout":          1,
		"http.server.request.duration connection_reset": 1,
		"http.server.request.duration _OTHER":           1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("points %v, want %v", got, want)
	}
	if n := st.stats.Incomplete.Load(); n != 5 {
		t.Fatalf("incomplete %d, want the 5 half heads", n)
	}
	if n := st.stats.Unpaired.Load(); n != 0 {
		t.Fatalf("the response after the failure was parsed: %d unpaired", n)
	}
}

// BenchmarkOnExchangeClientPaths: a client calling four paths in turn on
// one connection (the route and span name change with every request), 1 %
// sampled: no allocation once warm.
func BenchmarkOnExchangeClientPaths(b *testing.B) {
	c, _ := unitCollector(b, sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01)))
	c.cur.server = false
	c.cur.stats = c.statsFor(1)
	var exs [4]*Exchange
	for i := range exs {
		exs[i] = &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: fmt.Appendf(nil, "/api/v1/items/%d/part%c", 1000+i, 'a'+i),
			RespBody: 12, Start: 1000, End: 51000}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.onExchange(exs[i&3])
		i++
	}
}

// TestRouteAndSpanNames: http.route only for a route really known (a
// configured pattern), the heuristic's template as url.template; server
// spans "{method} {http.route}" or "{method}", client spans "{method}
// {url.template}" or "{method}" past the route cap; --http.route-heuristic
// puts the heuristic's template into http.route.
func TestRouteAndSpanNames(t *testing.T) {
	type want struct{ name, route, template string }
	for _, tc := range []struct {
		name      string
		heuristic bool
		server    bool
		path      string
		want      want
	}{
		{"server, configured route", false, true, "/users/7", want{"GET /users/{id}", "/users/{id}", ""}},
		{"server, folded path", false, true, "/orders/9", want{"GET", "", "/orders/{id}"}},
		{"server, 404 path", false, true, "/nope", want{"GET", "", "/nope"}},
		{"server, heuristic switch", true, true, "/orders/9", want{"GET /orders/{id}", "/orders/{id}", ""}},
		{"server, past the cap", false, true, "/c", want{"GET", "", OverflowRoute}},
		{"client, configured route", false, false, "/users/7", want{"GET /users/{id}", "", "/users/{id}"}},
		{"client, folded path", false, false, "/orders/9", want{"GET /orders/{id}", "", "/orders/{id}"}},
		{"client, past the cap", false, false, "/c", want{"GET", "", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.RouteHeuristic = tc.heuristic
			exp := tracetest.NewInMemoryExporter()
			c, reader := unitCollectorWith(t, cfg, sdktrace.AlwaysSample(), sdktrace.WithSyncer(exp))
			var err error
			if c.routes, err = NewRoutes([]string{"/users/{id}"}, 2); err != nil {
				t.Fatal(err)
			}
			st := c.cur
			if !tc.server {
				st = c.newConn(connKey{tgid: 1, fd: 4, start: 1})
				st.peer, st.peerPort, st.svc, st.lastLen = netip.MustParseAddr("10.0.0.1"), 8080, "/unit", -1
				c.cur = st
			}
			if tc.path == "/c" { // use up the cap of 2 first
				for _, p := range []string{"/a", "/b"} {
					c.onExchange(&Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte(p), Start: 1, End: 2})
				}
			}
			c.onExchange(&Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte(tc.path), Start: 1, End: 2})
			waitFor(t, func() bool { return c.spansQueued.Load() == uint64(len(exp.GetSpans())) })
			spans := exp.GetSpans()
			sp := spans[len(spans)-1]
			got := want{sp.Name, spanAttr(sp.Attributes, keyRoute), spanAttr(sp.Attributes, keyURLTemplate)}
			if got != tc.want {
				t.Errorf("span %+v, want %+v", got, tc.want)
			}
			if !tc.server {
				return
			}
			// The metric point carries the same attribute as the span.
			pts := uniquePoints(t, reader)["http.server.request.duration"]
			wantAttr := "http.route=" + tc.want.route
			if tc.want.route == "" {
				wantAttr = "url.template=" + tc.want.template
			}
			found := false
			for k := range pts {
				if strings.Contains(k, wantAttr+" ") || strings.HasSuffix(k, wantAttr+"]") {
					found = true
				}
				if tc.want.route == "" && strings.Contains(k, "http.route=") {
					t.Errorf("server point %s has an http.route", k)
				}
			}
			if !found {
				t.Errorf("no server point with %s: %v", wantAttr, pts)
			}
		})
	}
}

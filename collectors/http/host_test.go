package httpc

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestSplitHost(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port uint16
		ok   bool
	}{
		{"api.example.test", "api.example.test", 80, true},
		{"api.example.test:8080", "api.example.test", 8080, true},
		{"api.example.test:", "api.example.test", 80, true},
		{"user:secret@api.example.test:81", "api.example.test", 81, true},
		{"[::1]:9000", "::1", 9000, true},
		{"[2001:db8::1]", "2001:db8::1", 80, true},
		{"10.0.0.1:443", "10.0.0.1", 443, true},
		{"", "", 0, false},
		{":80", "", 0, false},
		{"host:http", "", 0, false},
		{"host:0", "", 0, false},
		{"host:70000", "", 0, false},
		{"[::1", "", 0, false},
		{"[::1]x", "", 0, false},
	} {
		h, p, ok := splitHost([]byte(tc.in))
		if ok != tc.ok || (ok && (string(h) != tc.host || p != tc.port)) {
			t.Errorf("splitHost(%q) = %q, %d, %v; want %q, %d, %v", tc.in, h, p, ok, tc.host, tc.port, tc.ok)
		}
	}
}

func TestRedactedQuery(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a=1", "a=REDACTED"},
		{"a=1&b=secret&flag", "a=REDACTED&b=REDACTED&flag"},
		{"&&a=&", "a=REDACTED"},
		{"token=abc=def", "token=REDACTED"},
		{"k\xff=v", "k\uFFFD=REDACTED"},
		{"", ""},
	} {
		if got := string(appendRedactedQuery(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("appendRedactedQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestURLFull(t *testing.T) {
	peer := netip.MustParseAddr("10.0.0.7")
	for _, tc := range []struct {
		host, path, query string
		peer              netip.Addr
		want              string
	}{
		{"api.example.test", "/users/1", "", peer, "http://api.example.test/users/1"},
		{"api.example.test:8080", "/a;jsessionid=S/b", "", peer, "http://api.example.test:8080/a/b"},
		{"u:pw@api.example.test", "/", "", peer, "http://api.example.test/"},
		{"", "/x", "", peer, "http://10.0.0.7:8080/x"},
		{"", "/x", "", netip.MustParseAddr("::1"), "http://[::1]:8080/x"},
		{"", "", "", netip.Addr{}, "http://localhost/"},
		{"h", "/q", "a=1&b", peer, "http://h/q?a=REDACTED&b"},
	} {
		if got := string(appendURLFull(nil, []byte(tc.host), tc.peer, 8080, []byte(tc.path), []byte(tc.query))); got != tc.want {
			t.Errorf("url.full of Host %q path %q = %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}
}

// TestParserKeepsHostUserAgentQuery: the Host and User-Agent headers (any
// case, the first of each) and the target's query reach the exchange,
// bounded; a response's headers of those names do not.
func TestParserKeepsHostUserAgentQuery(t *testing.T) {
	long := strings.Repeat("x", 600)
	for _, tc := range []struct {
		name, req       string
		host, ua, query string
		path            string
		total           uint64 // the call's bytes, when more than captured
	}{
		{"plain", "GET /a?b=1&c#frag HTTP/1.1\r\nHost: api.example.test:8080\r\nUser-Agent: curl/8.0\r\n\r\n", "api.example.test:8080", "curl/8.0", "b=1&c", "/a", 0},
		{"case and first wins", "GET / HTTP/1.1\r\nhOsT:  h1 \r\nHOST: h2\r\nuser-agent: ua1\r\nUser-Agent: ua2\r\n\r\n", "h1", "ua1", "", "/", 0},
		{"none", "GET /p HTTP/1.1\r\nAccept: */*\r\n\r\n", "", "", "", "/p", 0},
		{"bounded", "GET /p?" + long + " HTTP/1.1\r\nHost: " + long + "\r\nUser-Agent: " + long + "\r\n\r\n", long[:maxValue], long[:maxValue], long[:maxValue], "/p", 0},
		// the capture ends inside Host: a cut name is not kept (the peer is used)
		{"cut by the capture", "GET /p HTTP/1.1\r\nUser-Agent: ua\r\nHost: api.exa", "", "ua", "", "/p", 2000},
		{"absolute form", "GET http://u:p@proxy.test/r?q=1 HTTP/1.1\r\nHost: proxy.test\r\n\r\n", "proxy.test", "", "q=1", "/r", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			c := NewConn(true, &Stats{}, func(ex *Exchange) {
				got = append(got, string(ex.Host), string(ex.UserAgent), string(ex.Query), string(ex.Path))
			})
			total := uint64(len(tc.req))
			if tc.total > 0 {
				total = tc.total
			}
			c.Feed(true, []byte(tc.req), total, callTimes{1, 2})
			resp := "HTTP/1.1 200 OK\r\nHost: resp.test\r\nUser-Agent: server\r\nContent-Length: 0\r\n\r\n"
			c.Feed(false, []byte(resp), uint64(len(resp)), callTimes{3, 4})
			want := []string{tc.host, tc.ua, tc.query, tc.path}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// TestClientServerAddressFromHost: client metrics and spans carry the Host
// header's name and port, not the peer's address; without a Host, the
// peer's. A service calling more Host names than http.max_routes folds
// the rest into server.address=_OTHER on metrics, counted per service,
// while its spans keep the names.
func TestClientServerAddressFromHost(t *testing.T) {
	c, reader, exp := spanCollector(t)
	c.routes, _ = NewRoutes(nil, 3)
	if err := c.selfInstruments(); err != nil {
		t.Fatal(err)
	}
	// a real process, so the counter has its service
	cmd := exec.Command("sleep", "60")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=addr-svc")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(50 * time.Millisecond)
	st := c.cur
	st.proc = uint32(cmd.Process.Pid)
	st.stats = c.statsFor(st.proc)
	st.server = false
	st.peer, st.peerPort = netip.MustParseAddr("10.0.0.9"), 18080
	send := func(host string, n int) {
		for range n {
			c.onExchange(&Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/v1/items"),
				Host: []byte(host), UserAgent: []byte("client-ua"), Query: []byte("k=secret"), Start: 1, End: 2})
		}
	}
	send("api.example.test", 3)
	send("api.example.test:8443", 2)
	send("", 1)
	send("b.example.test", 1)
	send("c.example.test", 2)
	send("d.example.test", 1) // the fourth name: past the cap of 3
	send("e.example.test:81", 2)
	c.drainSpans()
	got := uniquePoints(t, reader)["http.client.request.duration"]
	want := map[string]uint64{
		"api.example.test 80": 3, "api.example.test 8443": 2, "10.0.0.9 18080": 1,
		"b.example.test 80": 1, "c.example.test 80": 2, "_OTHER 80": 1, "_OTHER 81": 2,
	}
	if len(got) != len(want) {
		t.Errorf("client series %v, want %d", got, len(want))
	}
	for addr, n := range want {
		a, p, _ := strings.Cut(addr, " ")
		k := "[http.request.method=GET http.response.status_code=200 network.protocol.version=1.1 server.address=" + a + " server.port=" + p + "]"
		if got[k] != n {
			t.Errorf("%s: %d requests, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if self := selfPoints(t, c, reader); self["otelbee.http.server_address.overflow addr-svc "] != 3 {
		t.Errorf("server_address.overflow %v, want 3 for addr-svc", self)
	}
	spans := exp.GetSpans()
	if len(spans) != 12 {
		t.Fatalf("%d spans, want 12", len(spans))
	}
	for i, wantURL := range []string{"http://api.example.test/v1/items", "", "", "http://api.example.test:8443/v1/items", "",
		"http://10.0.0.9:18080/v1/items", "http://b.example.test/v1/items", "http://c.example.test/v1/items", "", "http://d.example.test/v1/items",
		"http://e.example.test:81/v1/items", ""} {
		s := spans[i]
		if s.SpanKind != trace.SpanKindClient {
			t.Fatalf("span kind %v", s.SpanKind)
		}
		if wantURL == "" {
			continue
		}
		if u := spanAttr(s.Attributes, keyURLFull); u != wantURL {
			t.Errorf("span %d url.full %q, want %q", i, u, wantURL)
		}
		addr := strings.TrimPrefix(wantURL, "http://")
		addr, _, _ = strings.Cut(addr, "/")
		name, _, _ := strings.Cut(addr, ":")
		if a := spanAttr(s.Attributes, keyServerAddress); a != name {
			t.Errorf("span %d server.address %q, want %q", i, a, name)
		}
		if spanAttr(s.Attributes, keyUserAgent) != "" || spanAttr(s.Attributes, keyURLQuery) != "" {
			t.Errorf("client span %d carries user_agent.original or url.query", i)
		}
	}
}

// TestServerSpanHostUserAgentQuery: a server span carries server.address
// and server.port from Host and user_agent.original; url.query only with
// the switch, and then redacted; server metrics carry none of them.
func TestServerSpanHostUserAgentQuery(t *testing.T) {
	for _, query := range []bool{false, true} {
		c, reader, exp := spanCollector(t)
		c.cfg.URLQuery = query
		c.onExchange(&Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/search"),
			Host: []byte("api.example.test:8080"), UserAgent: []byte("curl/8.1 \xff"), Query: []byte("q=secret&page=2&x"), Start: 1, End: 2})
		c.drainSpans()
		spans := exp.GetSpans()
		if len(spans) != 1 {
			t.Fatalf("%d spans", len(spans))
		}
		a := spans[0].Attributes
		if spanAttr(a, keyServerAddress) != "api.example.test" || spanAttr(a, keyServerPort) != "8080" {
			t.Errorf("server.address %q, server.port %q", spanAttr(a, keyServerAddress), spanAttr(a, keyServerPort))
		}
		if ua := spanAttr(a, keyUserAgent); ua != "curl/8.1 \uFFFD" || !utf8.ValidString(ua) {
			t.Errorf("user_agent.original %q", ua)
		}
		wantQ := ""
		if query {
			wantQ = "q=REDACTED&page=REDACTED&x"
		}
		if q := spanAttr(a, keyURLQuery); q != wantQ {
			t.Errorf("url.query with switch %v: %q, want %q", query, q, wantQ)
		}
		for _, kv := range a {
			if strings.Contains(kv.Value.Emit(), "secret") {
				t.Errorf("%s=%q", kv.Key, kv.Value.Emit())
			}
		}
		forEachMetricString(t, reader, func(where, v string) {
			if strings.Contains(where, "server.address") || strings.Contains(where, "user_agent") || strings.Contains(v, "secret") {
				t.Errorf("server metric %s = %q", where, v)
			}
		})
	}
}

// BenchmarkOnExchangeClientHosts: a client sending two Host names in turn
// on one connection (server.address changes with every request), 1 %
// sampled: no allocation once warm.
func BenchmarkOnExchangeClientHosts(b *testing.B) {
	c, _ := unitCollector(b, sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01)))
	c.cur.server = false
	c.cur.stats = c.statsFor(1)
	var exs [2]*Exchange
	for i := range exs {
		exs[i] = &Exchange{Method: MethodGet, Status: 200, Minor: 1, Path: []byte("/api/v1/items"),
			Host: fmt.Appendf(nil, "svc-%d.example.test:8080", i), UserAgent: []byte("Go-http-client/1.1"),
			RespBody: 12, Start: 1000, End: 51000}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.onExchange(exs[i&1])
		i++
	}
}

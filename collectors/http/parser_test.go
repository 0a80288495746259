package httpc

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// call is one read or write of a test conversation.
type call struct {
	read  bool   // from the server's point of view when server
	data  string // the bytes
	cap   int    // captured prefix length; 0 means all
	total int    // total byte count; 0 means len(data)
}

type got struct {
	exs []string
}

func (g *got) sink(ex *Exchange) {
	s := fmt.Sprintf("%s %s %d 1.%d req=%d resp=%d t=%d-%d", ex.Method, ex.Path, ex.Status, ex.Minor, ex.ReqBody, ex.RespBody, ex.Start, ex.End)
	if ex.HasParent {
		s += " parent=" + hex.EncodeToString(ex.TraceID[:]) + "/" + hex.EncodeToString(ex.ParentSpanID[:])
	}
	if ex.Truncated {
		s += " truncated"
	}
	g.exs = append(g.exs, s)
}

func run(server bool, calls []call, closeAtEnd bool) ([]string, *Stats) {
	var g got
	st := &Stats{}
	c := NewConn(server, st, g.sink)
	for i, cl := range calls {
		data := []byte(cl.data)
		total := cl.total
		if total == 0 {
			total = len(data)
		}
		if cl.cap > 0 && cl.cap < len(data) {
			data = data[:cl.cap]
		}
		ts := uint64(i+1) * 10
		c.Feed(cl.read, data, uint64(total), callTimes{enter: ts - 5, exit: ts})
	}
	if closeAtEnd {
		c.Close()
	}
	return g.exs, st
}

func TestParser(t *testing.T) {
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	tests := []struct {
		name       string
		server     bool
		calls      []call
		close      bool
		want       []string
		incomplete uint64
		malformed  uint64
	}{
		{
			name:   "simple keep-alive",
			server: true,
			calls: []call{
				{read: true, data: "GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
				{read: true, data: "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"},
				{read: false, data: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"},
			},
			want: []string{"GET /a 200 1.1 req=0 resp=5 t=10-20", "GET /b 404 1.1 req=0 resp=0 t=30-40"},
		},
		{
			name:   "pipelined in one read, responses in one write",
			server: true,
			calls: []call{
				{read: true, data: "GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcHEAD /3 HTTP/1.1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"},
			},
			want: []string{"GET /1 200 1.1 req=0 resp=2 t=10-20", "POST /2 201 1.1 req=3 resp=0 t=10-20", "HEAD /3 200 1.1 req=0 resp=0 t=10-20"},
		},
		{
			name:   "split head and body",
			server: true,
			calls: []call{
				{read: true, data: "POST /u HT"},
				{read: true, data: "TP/1.1\r\nContent-Le"},
				{read: true, data: "ngth: 10\r"},
				{read: true, data: "\n\r\n01234"},
				{read: true, data: "56789"},
				{read: false, data: "HTTP/1.1 200 OK\r\n"},
				{read: false, data: "Content-Length: 3\r\n\r\n"},
				{read: false, data: "abc"},
			},
			want: []string{"POST /u 200 1.1 req=10 resp=3 t=10-80"},
		},
		{
			name:   "chunked both ways with trailers",
			server: true,
			calls: []call{
				{read: true, data: "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
				{read: true, data: "6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"},
				{read: false, data: "0\r\n\r\n"},
			},
			want: []string{"POST /c 200 1.1 req=11 resp=10 t=10-40"},
		},
		{
			name:   "body not captured (sendfile)",
			server: true,
			calls: []call{
				{read: true, data: "GET /big HTTP/1.1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"},
				{read: false, data: "", total: 65536},
				{read: false, data: "", total: 34464},
			},
			want: []string{"GET /big 200 1.1 req=0 resp=100000 t=10-40"},
		},
		{
			name:   "head and body in one write, body past the capture",
			server: true,
			calls: []call{
				{read: true, data: "GET /x HTTP/1.1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("z", 5000), cap: 1024},
				{read: true, data: "GET /y HTTP/1.1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 204 No Content\r\n\r\n"},
			},
			want: []string{"GET /x 200 1.1 req=0 resp=5000 t=10-20", "GET /y 204 1.1 req=0 resp=0 t=30-40"},
		},
		{
			name:   "100-continue",
			server: true,
			calls: []call{
				{read: true, data: "PUT /f HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"},
				{read: false, data: "HTTP/1.1 100 Continue\r\n\r\n"},
				{read: true, data: "data"},
				{read: false, data: "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"},
			},
			want: []string{"PUT /f 201 1.1 req=4 resp=0 t=10-40"},
		},
		{
			name:   "HTTP/1.0 close-delimited response",
			server: true,
			calls: []call{
				{read: true, data: "GET /old HTTP/1.0\r\n\r\n"},
				{read: false, data: "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nabc"},
				{read: false, data: "defg"},
			},
			close: true,
			want:  []string{"GET /old 200 1.0 req=0 resp=7 t=10-30"},
		},
		{
			name:   "client side times: write enter to read exit",
			server: false,
			calls: []call{
				{read: false, data: "GET /api/v1/items/12345 HTTP/1.1\r\nHost: s\r\n\r\n"},
				{read: true, data: "HTTP/1.1 503 Unavailable\r\nContent-Length: 2\r\n\r\n"},
				{read: true, data: "no"},
			},
			want: []string{"GET /api/v1/items/12345 503 1.1 req=0 resp=2 t=5-30"},
		},
		{
			name:   "traceparent",
			server: true,
			calls: []call{
				{read: true, data: "GET /t HTTP/1.1\r\nTraceParent: " + tp + "\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
			},
			want: []string{"GET /t 200 1.1 req=0 resp=0 t=10-20 parent=0af7651916cd43dd8448eb211c80319c/b7ad6b7169203331"},
		},
		{
			name:   "half request then close",
			server: true,
			calls: []call{
				{read: true, data: "GET /h HTTP/1.1\r\nHost:"},
			},
			close:      true,
			incomplete: 1,
		},
		{
			name:   "garbage where a request must start, then a good one on the next call",
			server: true,
			calls: []call{
				{read: true, data: "GET /a HTTP/1.1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
				{read: true, data: "\x00\x01\x02garbage"},
				{read: true, data: "more garbage"},
				{read: true, data: "GET /b HTTP/1.1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
			},
			want:      []string{"GET /a 200 1.1 req=0 resp=0 t=10-20", "GET /b 200 1.1 req=0 resp=0 t=50-60"},
			malformed: 1,
		},
		{
			name:   "header larger than the capture: answered 400",
			server: true,
			calls: []call{
				{read: true, data: "GET /big HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 1000), cap: 512},
				{read: true, data: strings.Repeat("a", 1000), cap: 512},
				{read: false, data: "HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad"},
			},
			close: true,
			want:  []string{"GET /big 400 1.1 req=0 resp=3 t=10-30 truncated"},
			// the head is assumed to end with the first call: the rest of
			// it is bytes where no request starts
			malformed: 1,
		},
		{
			name:   "one byte read ahead (Go's background read) starts the next request",
			server: true,
			calls: []call{
				{read: true, data: "GET /a HTTP/1.1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
				{read: true, data: "G"},
				{read: true, data: "ET /b HTTP/1.1\r\n\r\n"},
				{read: false, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
			},
			want: []string{"GET /a 200 1.1 req=0 resp=0 t=10-20", "GET /b 200 1.1 req=0 resp=0 t=30-50"},
		},
		{
			name:   "absolute-form target",
			server: false,
			calls: []call{
				{read: false, data: "GET http://example.test:8080/p/q?z HTTP/1.1\r\n\r\n"},
				{read: true, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
			},
			want: []string{"GET /p/q 200 1.1 req=0 resp=0 t=5-20"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exs, st := run(tt.server, tt.calls, tt.close)
			if strings.Join(exs, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("exchanges:\n got %q\nwant %q", exs, tt.want)
			}
			if st.Incomplete.Load() != tt.incomplete {
				t.Errorf("incomplete = %d, want %d", st.Incomplete.Load(), tt.incomplete)
			}
			if st.Malformed.Load() != tt.malformed {
				t.Errorf("malformed = %d, want %d", st.Malformed.Load(), tt.malformed)
			}
		})
	}
}

func TestParserLost(t *testing.T) {
	var g got
	st := &Stats{}
	c := NewConn(true, st, g.sink)
	c.Feed(true, []byte("GET /a HTTP/1.1\r\n\r\n"), 19, callTimes{1, 2})
	c.Lost() // the response's record was lost
	c.Feed(false, []byte("tail of a body"), 14, callTimes{3, 4})
	c.Feed(true, []byte("GET /b HTTP/1.1\r\n\r\n"), 19, callTimes{5, 6})
	c.Feed(false, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 38, callTimes{7, 8})
	if len(g.exs) != 1 || !strings.HasPrefix(g.exs[0], "GET /b 200") {
		t.Fatalf("exchanges %q", g.exs)
	}
	if st.Lost.Load() != 1 {
		t.Fatalf("lost = %d", st.Lost.Load())
	}
}

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"":                  "/",
		"/":                 "/",
		"/users/123":        "/users/{id}",
		"/users/123/orders": "/users/{id}/orders",
		"/o/6ba7b810-9dad-11d1-80b4-00c04fd430c8": "/o/{uuid}",
		"/blob/e3b0c44298fc1c149afbf4c8996fb924":  "/blob/{hash}",
		"/static/app.js":                          "/static/app.js",
		"/v1/items/AbC12xYz9":                     "/v1/items/{id}",
		"/index.html":                             "/index.html",
		"/api/v2/health":                          "/api/v2/health",
		"/a//b":                                   "/a//b",
		"/users/42/":                              "/users/{id}/",
		"/deadbeef":                               "/deadbeef",
		"/2024-01-01":                             "/2024-01-01",
	} {
		if got := string(Fold(nil, []byte(in))); got != want {
			t.Errorf("Fold(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRoutesPatternsAndCap(t *testing.T) {
	r, err := NewRoutes([]string{"/users/{name}/repos", "/static/*"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"/users/alice/repos": "/users/{name}/repos",
		"/static/css/a.css":  "/static/*",
		"/users/7":           "/users/{id}",
	} {
		if got := r.Route("a", []byte(in)); got != want {
			t.Errorf("Route(%q) = %q, want %q", in, got, want)
		}
	}
	if got := r.Route("a", []byte("/new")); got != OverflowRoute {
		t.Errorf("fourth route = %q, want %q", got, OverflowRoute)
	}
	if got := r.Route("a", []byte("/users/8")); got != "/users/{id}" {
		t.Errorf("known route after the cap = %q", got)
	}
	if got := r.Route("b", []byte("/new")); got != "/new" {
		t.Errorf("another service's route = %q", got)
	}
	if _, err := NewRoutes([]string{"/a/*/b"}, 3); err == nil {
		t.Error("want an error for * before the end")
	}
}

var benchCalls = [][]byte{
	[]byte("GET /users/12345?x=1 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"),
	[]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nDate: Sun, 22 Nov 2026 02:00:00 GMT\r\n\r\nHello world!"),
}

// BenchmarkParser is one request and its response, as the collector feeds
// them: 0 allocations per call is the target.
func BenchmarkParser(b *testing.B) {
	st := &Stats{}
	n := 0
	c := NewConn(true, st, func(*Exchange) { n++ })
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Feed(true, benchCalls[0], uint64(len(benchCalls[0])), callTimes{1, 2})
		c.Feed(false, benchCalls[1], uint64(len(benchCalls[1])), callTimes{3, 4})
	}
	if n != b.N {
		b.Fatalf("%d exchanges for %d iterations", n, b.N)
	}
}

func BenchmarkRoute(b *testing.B) {
	r, _ := NewRoutes(nil, 100)
	p := []byte("/users/12345/orders/6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Route("a", p)
	}
}

func TestParserAllocs(t *testing.T) {
	st := &Stats{}
	c := NewConn(true, st, func(*Exchange) {})
	r, _ := NewRoutes(nil, 100)
	allocs := testing.AllocsPerRun(1000, func() {
		c.Feed(true, benchCalls[0], uint64(len(benchCalls[0])), callTimes{1, 2})
		c.Feed(false, benchCalls[1], uint64(len(benchCalls[1])), callTimes{3, 4})
		r.Route("a", []byte("/users/12345"))
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per request, want 0", allocs)
	}
}

// FuzzParser feeds arbitrary call sequences: the parser must not panic,
// must keep its queue bounded and must report sane exchanges.
func FuzzParser(f *testing.F) {
	f.Add(benchCalls[0], benchCalls[1], uint16(0), true)
	f.Add([]byte("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"), []byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"), uint16(3), false)
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"), []byte("HTTP/1.0 200 OK\r\n\r\nbody"), uint16(40000), true)
	f.Add([]byte("\x16\x03\x01\x00"), []byte("HTTP/1.1 9"), uint16(1), false)
	f.Fuzz(func(t *testing.T, a, b []byte, extra uint16, server bool) {
		st := &Stats{}
		c := NewConn(server, st, func(ex *Exchange) {
			if ex.Status < 100 || ex.Status > 999 || len(ex.Path) > maxPath || ex.ReqBody < -1 || ex.RespBody < -1 { // -1: size not known
				t.Fatalf("bad exchange %+v", ex)
			}
		})
		for i := 0; i < 3; i++ {
			c.Feed(true, a, uint64(len(a))+uint64(extra)*uint64(i&1), callTimes{1, 2})
			c.Feed(false, b, uint64(len(b)), callTimes{3, 4})
			if c.Pending() > maxPending {
				t.Fatalf("%d pending", c.Pending())
			}
		}
		c.Lost()
		c.Feed(false, b, uint64(len(b))+uint64(extra), callTimes{5, 6})
		c.Close()
	})
}

// nameLenByColon is what nameLen stands for: the name ends at the line's
// first colon, and only hdrLens' lengths are of interest.
func nameLenByColon(line []byte) int {
	colon := bytes.IndexByte(line, ':')
	for _, l := range hdrLens {
		if colon == l {
			return l
		}
	}
	return 0
}

func TestNameLen(t *testing.T) {
	for i := 1; i < len(hdrLens); i++ {
		if hdrLens[i] <= hdrLens[i-1] {
			t.Fatalf("hdrLens %v not shortest first: nameLen would stop at a longer name's place", hdrLens)
		}
	}
	for _, tc := range []struct {
		line string
		want int
	}{
		{"Host: a:1", 4},
		{"host:x", 4},
		{"Host : x", 0}, // a space before the colon: not the Host header
		{"Hos:t: x", 0}, // the name ends at the first colon
		{"Date: Tue, 01 Dec 2026 15:30:00 GMT", 4},
		{"Content-Length: 615", 14},
		{"Content:Length: 615", 7},
		{"Transfer-Encoding: chunked", 17},
		{"Server: nginx/1.22.1", 0},
		{"Connection: keep-alive", 10},
		{"User-Agent: curl/7.88.1", 10},
		{"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 11},
		{"Upgrade: h2c", 7},
		{"Host", 0},
		{"Host:", 4},
		{":", 0},
		{"", 0},
		{"x-a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p:q:r", 0},
	} {
		if got := nameLenByColon([]byte(tc.line)); got != tc.want {
			t.Errorf("nameLenByColon(%q) = %d, want %d (the table is wrong)", tc.line, got, tc.want)
		}
		checkNameLen(t, []byte(tc.line))
	}
}

// checkNameLen: nameLen finds the name wherever it has one of hdrLens'
// lengths; where it does not, nameLen's answer holds a colon (so matches no
// name) or is 0.
func checkNameLen(t *testing.T, line []byte) {
	t.Helper()
	got, want := nameLen(line), nameLenByColon(line)
	switch {
	case want != 0 && got != want:
		t.Errorf("nameLen(%q) = %d, the first colon says %d", line, got, want)
	case want == 0 && got != 0 && bytes.IndexByte(line[:got], ':') < 0:
		t.Errorf("nameLen(%q) = %d, a name without a colon the first colon does not end", line, got)
	}
}

func FuzzNameLen(f *testing.F) {
	for _, c := range benchCalls {
		for _, l := range bytes.Split(c, []byte("\r\n")) {
			f.Add(l)
		}
	}
	f.Add([]byte("Hos:t: x"))
	f.Fuzz(checkNameLen)
}

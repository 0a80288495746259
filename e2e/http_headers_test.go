package e2e

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestHTTPHeaderAttributes: curl calls a real Go server by a host name
// (--resolve: "Host: api.example.test:PORT") and with an explicit
// "Host: api.example.test" header, with a secret in the query. In the real
// OpenTelemetry Collector: client spans have url.full and server.address
// = the Host name (not 127.0.0.1), server.port from Host (80 when Host
// names none); client duration series are keyed by that name; server
// spans have user_agent.original = curl's own and server.address from
// Host; the query is nowhere by default, and only redacted with
// --http.url-query. Exact counts against curl's and the server's.
func TestHTTPHeaderAttributes(t *testing.T) {
	harness.RequireRoot(t)
	out, err := exec.Command("curl", "--version").Output()
	if err != nil {
		t.Skip("skipping: curl not installed")
	}
	ua := "curl/" + strings.Fields(string(out))[1] // curl's default User-Agent
	const name = "api.example.test"
	const resolved, explicit = 3, 2
	for _, tc := range []struct {
		name  string
		flags []string
		query bool
	}{
		{"default", nil, false},
		{"url query", []string{"--http.url-query"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := harness.StartCollector(t)
			harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=500", "OTEL_BSP_SCHEDULE_DELAY=200"},
				append([]string{"--collectors=http", "--otlp.endpoint=http://" + col.HTTPEndpoint, "--otlp.protocol=http/protobuf"}, tc.flags...)...)
			sfx := strconv.Itoa(rand.IntN(1 << 30))
			srv, cli := "hdr-srv-"+sfx, "hdr-cli-"+sfx
			addr, stop := goServer(t, srv)
			_, port, _ := strings.Cut(addr, ":")
			var urls []string
			for i := range resolved {
				urls = append(urls, fmt.Sprintf("http://%s:%s/users/%d?token=secret%d&page=2", name, port, i, i))
			}
			got := curlCounts(t, cli, []string{"--resolve", name + ":" + port + ":127.0.0.1"}, urls...)
			urls = nil
			for i := range explicit {
				urls = append(urls, fmt.Sprintf("http://%s/users/%d?token=secret%d&page=2", addr, 10+i, i))
			}
			addCounts(got, curlCounts(t, cli, []string{"-H", "Host: " + name}, urls...))
			if got["GET 200"] != resolved+explicit || len(got) != 1 {
				t.Fatalf("curl counted %v, want %d GET 200", got, resolved+explicit)
			}
			if rep := stop(); rep.Counts["GET 200 /users/{id}"] != resolved+explicit || len(rep.Counts) != 1 {
				t.Fatalf("server counted %v, want %d GET 200 /users/{id}", rep.Counts, resolved+explicit)
			}
			kind := func(ss []harness.Span, svc, kind string) []harness.Span {
				var out []harness.Span
				for _, s := range ss {
					if s.Resource["service.name"] == svc && s.Kind == kind {
						out = append(out, s)
					}
				}
				return out
			}
			col.WaitForSpans(t, func(ss []harness.Span) bool {
				return len(kind(ss, cli, "Client")) == resolved+explicit && len(kind(ss, srv, "Server")) == resolved+explicit
			}, 30*time.Second)
			spans, err := col.Spans()
			if err != nil {
				t.Fatal(err)
			}
			q := func(i int) string {
				if !tc.query {
					return ""
				}
				return "?token=REDACTED&page=REDACTED"
			}
			wantClient, wantServer := map[string]int{}, map[string]int{}
			for i := range resolved {
				wantClient[fmt.Sprintf("http://%s:%s/users/%d%s %s %s", name, port, i, q(i), name, port)]++
				wantServer[fmt.Sprintf("%s %s %s %s", name, port, ua, strings.TrimPrefix(q(i), "?"))]++
			}
			for i := range explicit {
				wantClient[fmt.Sprintf("http://%s/users/%d%s %s 80", name, 10+i, q(i), name)]++
				wantServer[fmt.Sprintf("%s 80 %s %s", name, ua, strings.TrimPrefix(q(i), "?"))]++
			}
			gotClient, gotServer := map[string]int{}, map[string]int{}
			for _, s := range kind(spans, cli, "Client") {
				a := s.Attributes
				gotClient[a["url.full"]+" "+a["server.address"]+" "+a["server.port"]]++
				if _, ok := a["url.query"]; ok {
					t.Errorf("client span has url.query %q", a["url.query"])
				}
			}
			for _, s := range kind(spans, srv, "Server") {
				a := s.Attributes
				gotServer[a["server.address"]+" "+a["server.port"]+" "+a["user_agent.original"]+" "+a["url.query"]]++
				if _, ok := a["url.query"]; ok != tc.query {
					t.Errorf("server span url.query present %v, want %v", ok, tc.query)
				}
			}
			if !mapsEqual(gotClient, wantClient) {
				t.Errorf("client spans by url.full, server.address, server.port:\n got %s\nwant %s", sorted(gotClient), sorted(wantClient))
			}
			if !mapsEqual(gotServer, wantServer) {
				t.Errorf("server spans by server.address, server.port, user_agent.original, url.query:\n got %s\nwant %s", sorted(gotServer), sorted(wantServer))
			}
			for _, s := range append(kind(spans, cli, "Client"), kind(spans, srv, "Server")...) {
				for k, v := range s.Attributes {
					if strings.Contains(v, "secret") {
						t.Errorf("%s span %s=%q carries the query's value", s.Kind, k, v)
					}
				}
			}
			// Client durations by the name called, never the peer's address.
			res := harness.Filter{Resource: map[string]string{"service.name": cli}}
			col.WaitForMetric(t, "http.client.request.duration", res, func(v float64) bool { return v == resolved+explicit }, 30*time.Second)
			byAddr := map[string]int{}
			for _, sp := range harness.Latest(mustMetrics(t, col), "http.client.request.duration", res) {
				byAddr[sp.Point.Attributes["server.address"]+" "+sp.Point.Attributes["server.port"]] += int(sp.Total)
			}
			if want := map[string]int{name + " " + port: resolved, name + " 80": explicit}; !mapsEqual(byAddr, want) {
				t.Errorf("client durations by server.address, server.port:\n got %s\nwant %s", sorted(byAddr), sorted(want))
			}
		})
	}
}

package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestSpansExactPerServiceInOneRequest: eight real Go servers, each under
// its own service name, get 1..8 requests from curl (also named per
// server). The real OpenTelemetry Collector must receive exactly one server
// span per request served and one client span per request curl sent, each
// under its own service's resource (service.name, service.instance.id,
// host.name, process.executable.name on the resource, one instance per
// service; none of the identity among the span's attributes), none twice;
// and the sixteen services' spans must leave in a few requests (one per
// export), their metrics in one request, not one request per service.
func TestSpansExactPerServiceInOneRequest(t *testing.T) {
	harness.RequireRoot(t)
	col := harness.StartCollector(t)
	// A long schedule delay: everything below ends within one or two.
	env := []string{"OTEL_TRACES_SAMPLER=always_on", "OTEL_BSP_SCHEDULE_DELAY=3000", "OTEL_METRIC_EXPORT_INTERVAL=3000"}
	harness.StartAgent(t, env, "--collectors=http", "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	const servers = 8
	type svc struct {
		server, client string
		addr           string
		stop           func() httpReport
	}
	var svcs []svc
	for i := range servers {
		s := svc{server: fmt.Sprintf("spans-srv-%s-%d", sfx, i), client: fmt.Sprintf("spans-cl-%s-%d", sfx, i)}
		s.addr, s.stop = goServer(t, s.server)
		svcs = append(svcs, s)
	}
	want := map[string]int{} // service.name + " " + kind -> spans
	trafficStart := time.Now()
	for i, s := range svcs {
		var urls []string
		for range i + 1 {
			urls = append(urls, "http://"+s.addr+"/hello")
		}
		got := curlCounts(t, s.client, nil, urls...)
		if got["GET 200"] != i+1 {
			t.Fatalf("curl %s: %v", s.client, got)
		}
		want[s.client+" Client"] = i + 1
	}
	traffic := time.Since(trafficStart)
	for i, s := range svcs {
		rep := s.stop()
		if rep.Counts["GET 200 /hello"] != i+1 {
			t.Fatalf("server %s served %v", s.server, rep.Counts)
		}
		want[s.server+" Server"] = i + 1
	}
	mine := func(ss []harness.Span) map[string]int {
		got := map[string]int{}
		for _, s := range ss {
			k := s.Resource["service.name"] + " " + s.Kind
			if _, ok := want[k]; ok {
				got[k]++
			}
		}
		return got
	}
	col.WaitForSpans(t, func(ss []harness.Span) bool { return mapsEqual(mine(ss), want) }, 30*time.Second)
	// Two more exports: nothing more may arrive (no span twice).
	time.Sleep(7 * time.Second)
	spans, err := col.Spans()
	if err != nil {
		t.Fatal(err)
	}
	if got := mine(spans); !mapsEqual(got, want) {
		t.Fatalf("spans per service and kind:\n got %s\nwant %s", sorted(got), sorted(want))
	}
	pids := map[string]string{}
	for _, s := range spans {
		if _, ok := want[s.Resource["service.name"]+" "+s.Kind]; !ok {
			continue
		}
		name := s.Resource["service.name"]
		// process.pid is not asked for: a service's processes are folded
		// into one instance (--process.instance, issue 16).
		for _, k := range []string{"service.instance.id", "host.name", "process.executable.name"} {
			if s.Resource[k] == "" {
				t.Errorf("%s: resource without %s: %v", name, k, s.Resource)
			}
		}
		for _, k := range []string{"service.name", "service.instance.id", "process.pid", "otelbee.internal.resource"} {
			if _, ok := s.Attributes[k]; ok {
				t.Errorf("%s: span attribute %s belongs to the resource", name, k)
			}
		}
		if s.Attributes["http.request.method"] != "GET" || s.Attributes["url.path"] != "/hello" {
			t.Errorf("%s: span attributes %v", name, s.Attributes)
		}
		if p, ok := pids[name]; ok && p != s.Resource["service.instance.id"] {
			t.Errorf("%s: spans under two service.instance.id (%s, %s)", name, p, s.Resource["service.instance.id"])
		}
		pids[name] = s.Resource["service.instance.id"]
	}

	// Each line of the collector's file is one export request.
	// Spans that ended within the traffic's span leave in the exports of
	// the 3 s schedule it covers: one or two on a quiet machine, more when
	// a loaded one stretches the traffic; never one per service.
	requests := tracesRequestsWith(t, col.TracesPath, want)
	exports := max(3, int(traffic/(3*time.Second))+2)
	if requests == 0 || requests > exports {
		t.Errorf("the spans of %d services came in %d requests, want one per export (1 to %d here: the traffic took %v)", len(want), requests, exports, traffic.Round(time.Millisecond))
	}
	// Metrics too: the last exports carry every service (cumulative), in
	// one request each.
	names := map[string]bool{}
	for k := range want {
		names[k[:strings.LastIndexByte(k, ' ')]] = true
	}
	most := 0
	for _, n := range metricsRequestsWith(t, col.MetricsPath, names) {
		most = max(most, n)
	}
	if most != len(names) {
		t.Errorf("at most %d of the %d services' metrics in one request, want all in one", most, len(names))
	}
}

// metricsRequestsWith returns, for each export request (line of the
// collector's metrics file), how many of the services in names it holds.
func metricsRequestsWith(t *testing.T, path string, names map[string]bool) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	var u pmetric.JSONUnmarshaler
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		md, err := u.UnmarshalMetrics(line)
		if err != nil {
			continue // empty, or the last line being written
		}
		seen := map[string]bool{}
		rms := md.ResourceMetrics()
		for i := range rms.Len() {
			name, _ := rms.At(i).Resource().Attributes().Get("service.name")
			if names[name.Str()] {
				seen[name.Str()] = true
			}
		}
		if len(seen) > 0 {
			out = append(out, len(seen))
		}
	}
	return out
}

// tracesRequestsWith counts the export requests (lines of the collector's
// traces file) holding a span of one of the services in want.
func tracesRequestsWith(t *testing.T, path string, want map[string]int) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var u ptrace.JSONUnmarshaler
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		td, err := u.UnmarshalTraces(line)
		if err != nil {
			continue // the last line, being written
		}
		rss := td.ResourceSpans()
		for i := range rss.Len() {
			name, _ := rss.At(i).Resource().Attributes().Get("service.name")
			if _, ok := want[name.Str()+" Server"]; ok {
				n++
				break
			}
			if _, ok := want[name.Str()+" Client"]; ok {
				n++
				break
			}
		}
	}
	return n
}

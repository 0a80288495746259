package e2e

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// exported is one exported data point of a metric, with the metric's kind
// and temporality.
type exported struct {
	Kind        harness.MetricKind
	Temporality string
	Point       harness.DataPoint
}

// exportedPoints returns every exported point of metric name on the
// resources of service svc, in time order.
func exportedPoints(t *testing.T, col *harness.Collector, svc, name string) []exported {
	t.Helper()
	rms, err := col.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	var out []exported
	for _, rm := range rms {
		if rm.Resource["service.name"] != svc {
			continue
		}
		for _, m := range rm.Metrics {
			if m.Name != name {
				continue
			}
			for _, p := range m.Points {
				out = append(out, exported{Kind: m.Kind, Temporality: m.Temporality, Point: p})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Point.Time.Before(out[j].Point.Time) })
	return out
}

// checkDelta checks that the points of a metric are delta points of kind,
// cover disjoint intervals in each series, are at least two with something
// in them, and add up to want.
func checkDelta(t *testing.T, name string, pts []exported, kind harness.MetricKind, want float64) {
	t.Helper()
	var total float64
	nonzero := 0
	lastEnd := map[string]time.Time{} // by attribute set
	for i, p := range pts {
		if p.Kind != kind || p.Temporality != "delta" {
			t.Errorf("%s: point %d is %s %s, want delta %s", name, i, p.Temporality, p.Kind, kind)
			return
		}
		series := fmt.Sprint(p.Point.Attributes)
		if end, ok := lastEnd[series]; ok && p.Point.Start.Before(end) {
			t.Errorf("%s %s: a point starts at %v, before the previous one ended (%v): intervals overlap",
				name, series, p.Point.Start, end)
		}
		lastEnd[series] = p.Point.Time
		if p.Point.Value() > 0 {
			nonzero++
		}
		total += p.Point.Value()
	}
	if total != want || nonzero < 2 {
		var vs []string
		for _, p := range pts {
			vs = append(vs, strconv.FormatFloat(p.Point.Value(), 'f', -1, 64))
		}
		t.Errorf("%s: delta points %s add up to %v (%d with values), want %v in at least 2 intervals",
			name, strings.Join(vs, " "), total, nonzero, want)
	}
}

// deltaTraffic runs rounds of known TCP and HTTP traffic, each round in
// its own export interval, and returns the ground truth: the TCP server's
// connections and bytes received, and the HTTP server's requests.
type deltaTruth struct {
	tcpServerSvc, httpServerSvc string
	conns, bytesIn, requests    float64
}

func deltaTraffic(t *testing.T, rounds int) deltaTruth {
	t.Helper()
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	truth := deltaTruth{tcpServerSvc: "delta-tcp-server-" + sfx, httpServerSvc: "delta-http-server-" + sfx}
	addr, stopTCP := tcpServer(t, "", "127.0.0.1:0", truth.tcpServerSvc)
	httpAddr, stopHTTP := goServer(t, truth.httpServerSvc)
	httpload := buildTool(t, "./e2e/cmd/httpload")
	for r := range rounds {
		tcpClient(t, "", "delta-tcp-client-"+sfx, "-addr", addr, "-n", strconv.Itoa(3+r), "-send", "1000", "-recv", "300")()
		runClient(t, "delta-http-client-"+sfx, httpload, "-url", "http://"+httpAddr,
			"-plan", fmt.Sprintf("GET /users/1*%d,POST /users/2*2", 2+r))
		time.Sleep(2500 * time.Millisecond) // the export interval is 1 s: the next round is in another one
	}
	tcpTruth := stopTCP()
	httpTruth := stopHTTP()
	truth.conns = float64(tcpTruth.Connections)
	truth.bytesIn = float64(tcpTruth.BytesReceived)
	for _, n := range httpTruth.Counts {
		truth.requests += float64(n)
	}
	t.Logf("ground truth: tcp server %v connections, %v bytes received; http server %v requests", truth.conns, truth.bytesIn, truth.requests)
	return truth
}

// TestOTLPDeltaTemporality: with OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE
// delta or lowmemory, the real OpenTelemetry Collector receives the
// histograms the collectors aggregate themselves (TCP in the kernel, HTTP in
// Go) as per-interval delta points that add up exactly to the traffic the
// servers counted, and the counters as the specification's table says:
// delta under delta, cumulative under lowmemory (they are asynchronous
// counters); up-down counters cumulative under both.
func TestOTLPDeltaTemporality(t *testing.T) {
	for _, pref := range []string{"delta", "lowmemory"} {
		t.Run(pref, func(t *testing.T) { testOTLPDelta(t, pref) })
	}
}

func testOTLPDelta(t *testing.T, pref string) {
	harness.RequireRoot(t)
	col := harness.StartCollector(t)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=" + pref},
		"--collectors=tcp,http", "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	truth := deltaTraffic(t, 3)
	// Once at load 22 the delta points added up to 12 of the server's 15
	// requests, with no export failure logged: say where the rest went.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, q := range [][]string{
			{"otelbee_http_requests_dropped_total", `job="` + truth.httpServerSvc + `"`},
			{"otelbee_http_requests_incomplete_total", `job="` + truth.httpServerSvc + `"`},
			{"http_server_request_duration_seconds_count", `job="` + truth.httpServerSvc + `"`},
			{"otelbee_l7_records_dropped_total"},
			{"otelbee_exporter_metric_points_dropped_total"},
			{"otelbee_exporter_failures_total"},
		} {
			t.Logf("agent's %s{%s} = %v", q[0], strings.Join(q[1:], ","), scrapeSum(t, agent.MetricsURL, q[0], q[1:]...))
		}
	})

	tcpRes := harness.Filter{Resource: map[string]string{"service.name": truth.tcpServerSvc}}
	httpRes := harness.Filter{Resource: map[string]string{"service.name": truth.httpServerSvc}}
	// Wait until everything was exported (Total adds delta points up).
	col.WaitForMetric(t, "otelbee.tcp.connection.duration", tcpRes, func(v float64) bool { return v >= truth.conns }, 30*time.Second)
	col.WaitForMetric(t, "http.server.request.duration", httpRes, func(v float64) bool { return v >= truth.requests }, 30*time.Second)
	col.WaitForMetric(t, "otelbee.tcp.connection.io", tcpRes, func(v float64) bool { return v >= truth.bytesIn }, 30*time.Second)
	time.Sleep(1500 * time.Millisecond) // one more interval: nothing may arrive beyond the truth

	checkDelta(t, "otelbee.tcp.connection.duration", exportedPoints(t, col, truth.tcpServerSvc, "otelbee.tcp.connection.duration"), harness.KindHistogram, truth.conns)
	checkDelta(t, "http.server.request.duration", exportedPoints(t, col, truth.httpServerSvc, "http.server.request.duration"), harness.KindHistogram, truth.requests)
	// Delta histogram buckets add up to the count, point by point.
	for _, p := range exportedPoints(t, col, truth.httpServerSvc, "http.server.request.duration") {
		var n uint64
		for _, c := range p.Point.BucketCounts {
			n += c
		}
		if n != p.Point.Count {
			t.Errorf("http.server.request.duration delta point: buckets add up to %d, count %d", n, p.Point.Count)
		}
	}

	opened := exportedPoints(t, col, truth.tcpServerSvc, "otelbee.tcp.connection.opened")
	switch pref {
	case "delta":
		checkDelta(t, "otelbee.tcp.connection.opened", opened, harness.KindSum, truth.conns)
		var io []exported
		for _, p := range exportedPoints(t, col, truth.tcpServerSvc, "otelbee.tcp.connection.io") {
			if p.Point.Attributes["network.io.direction"] == "receive" {
				io = append(io, p)
			}
		}
		checkDelta(t, "otelbee.tcp.connection.io receive", io, harness.KindSum, truth.bytesIn)
	case "lowmemory":
		if len(opened) == 0 || opened[len(opened)-1].Temporality != "cumulative" || opened[len(opened)-1].Point.Value() != truth.conns {
			t.Errorf("lowmemory: otelbee.tcp.connection.opened (an asynchronous counter) must be cumulative and end at %v: %+v", truth.conns, opened)
		}
	}
	for _, p := range exportedPoints(t, col, truth.tcpServerSvc, "otelbee.tcp.connection.active") {
		if p.Temporality != "cumulative" {
			t.Errorf("otelbee.tcp.connection.active (up-down counter) is %s, want cumulative under %s", p.Temporality, pref)
			break
		}
	}
}

// TestOTLPExponentialHistograms: with
// OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=base2_exponential_bucket_histogram
// (and delta temporality) the HTTP duration histogram reaches the real
// collector as delta exponential histograms whose counts add up to the
// server's requests, while the Prometheus endpoint keeps its explicit
// cumulative buckets with the same count; the kernel-aggregated TCP
// histograms, which have fixed bounds, stay explicit and the agent says so.
func TestOTLPExponentialHistograms(t *testing.T) {
	harness.RequireRoot(t)
	col := harness.StartCollector(t)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000",
		"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta",
		"OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=base2_exponential_bucket_histogram"},
		"--collectors=tcp,http", "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	truth := deltaTraffic(t, 2)

	httpRes := harness.Filter{Resource: map[string]string{"service.name": truth.httpServerSvc}}
	col.WaitForMetric(t, "http.server.request.duration", httpRes, func(v float64) bool { return v >= truth.requests }, 30*time.Second)
	pts := exportedPoints(t, col, truth.httpServerSvc, "http.server.request.duration")
	checkDelta(t, "http.server.request.duration", pts, harness.KindExponentialHistogram, truth.requests)
	for _, p := range pts {
		if p.Kind != harness.KindExponentialHistogram {
			break // reported by checkDelta
		}
		n := p.Point.ZeroCount
		for _, c := range p.Point.PositiveCounts {
			n += c
		}
		if n != p.Point.Count || p.Point.Scale > 20 || p.Point.Scale < -10 {
			t.Errorf("exponential point: buckets add up to %d, count %d, scale %d", n, p.Point.Count, p.Point.Scale)
		}
		// Every request took between 1 µs and 10 s: the buckets say so.
		if p.Point.Count > 0 && p.Point.ZeroCount == 0 {
			lo := bucketLower(p.Point.Scale, p.Point.PositiveOffset)
			hi := bucketLower(p.Point.Scale, p.Point.PositiveOffset+int32(len(p.Point.PositiveCounts)))
			if lo < 1e-6/2 || hi > 10*2 {
				t.Errorf("exponential buckets span %g..%g s, not request durations", lo, hi)
			}
		}
	}
	waitProm(t, prom, fmt.Sprintf(`sum(http_server_request_duration_seconds_count{job=%q})`, truth.httpServerSvc), truth.requests)
	waitProm(t, prom, fmt.Sprintf(`sum(http_server_request_duration_seconds_bucket{job=%q,le="+Inf"})`, truth.httpServerSvc), truth.requests)

	tcpRes := harness.Filter{Resource: map[string]string{"service.name": truth.tcpServerSvc}}
	col.WaitForMetric(t, "otelbee.tcp.connection.duration", tcpRes, func(v float64) bool { return v >= truth.conns }, 30*time.Second)
	checkDelta(t, "otelbee.tcp.connection.duration", exportedPoints(t, col, truth.tcpServerSvc, "otelbee.tcp.connection.duration"), harness.KindHistogram, truth.conns)
	if !strings.Contains(agent.Log(), "histogram keeps explicit buckets") || !strings.Contains(agent.Log(), "otelbee.tcp.connection.duration") {
		t.Errorf("the agent does not say that otelbee.tcp.connection.duration stays explicit:\n%s", agent.LogTail(30))
	}
}

// bucketLower is the lower boundary of exponential bucket i at scale s.
func bucketLower(s, i int32) float64 {
	return math.Exp2(float64(i) / float64(uint64(1)<<max(s, 0)) * float64(uint64(1)<<max(-s, 0)))
}

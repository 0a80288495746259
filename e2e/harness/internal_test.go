package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

func TestParseSnmp(t *testing.T) {
	out := map[string]int64{}
	in := "Ip: Forwarding DefaultTTL\nIp: 2 64\nTcp: RtoAlgorithm RetransSegs MaxConn\nTcp: 1 17 -1\n"
	if err := parseSnmpPairs([]byte(in), out); err != nil {
		t.Fatal(err)
	}
	if out["TcpRetransSegs"] != 17 || out["TcpMaxConn"] != -1 || out["IpDefaultTTL"] != 64 {
		t.Errorf("parsed %v", out)
	}
	if err := parseSnmpPairs([]byte("Tcp: A B\nUdp: 1 2\n"), out); err == nil {
		t.Error("mismatched protocol lines accepted")
	}
	if err := parseSnmp6([]byte("Ip6InReceives  \t 5\nIcmp6InMsgs 0\n"), out); err != nil || out["Ip6InReceives"] != 5 {
		t.Errorf("snmp6: %v %v", out, err)
	}
}

func TestPrometheusConfig(t *testing.T) {
	jobs, err := scrapeJobs([]string{"127.0.0.1:9464", "https://127.0.0.1:1/x", "127.0.0.1:9465"})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 2 || len(jobs[0].targets) != 2 || jobs[1].scheme != "https" || jobs[1].path != "/x" {
		t.Fatalf("jobs = %+v", jobs)
	}
	cfg := prometheusConfig("127.0.0.1:1234", 500*time.Millisecond, jobs)
	for _, want := range []string{"scrape_interval: 500ms", "scrape_timeout: 500ms", `targets: ["127.0.0.1:1234"]`,
		`targets: ["127.0.0.1:9464", "127.0.0.1:9465"]`, `metrics_path: "/x"`, "honor_labels: true"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if promDuration(15*time.Second) != "15s" || promDuration(1500*time.Millisecond) != "1500ms" {
		t.Error("promDuration")
	}
	if cfg := prometheusConfig("a:1", time.Minute, nil); !strings.Contains(cfg, "scrape_timeout: 10s") {
		t.Errorf("timeout not capped at 10s:\n%s", cfg)
	}
	if _, err := scrapeJobs([]string{"bad target"}); err == nil {
		t.Error("target with a space accepted")
	}
}

// writeMetrics appends one export request per call to path, as the file
// exporter does.
func writeMetrics(t *testing.T, path string, md pmetric.Metrics, partial bool) {
	t.Helper()
	var m pmetric.JSONMarshaler
	b, err := m.MarshalMetrics(md)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if partial {
		b = b[:len(b)/2]
	} else {
		b = append(b, '\n')
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func sumExport(svc string, temporality pmetric.AggregationTemporality, at time.Time, values map[string]int64) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", svc)
	rm.Resource().Attributes().PutInt("process.pid", 42)
	m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("tcp.bytes")
	s := m.SetEmptySum()
	s.SetAggregationTemporality(temporality)
	s.SetIsMonotonic(true)
	for peer, v := range values {
		dp := s.DataPoints().AppendEmpty()
		dp.Attributes().PutStr("peer", peer)
		dp.SetTimestamp(pcommon.NewTimestampFromTime(at))
		dp.SetIntValue(v)
	}
	return md
}

func TestLatestAndTotal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.jsonl")
	t0 := time.Unix(1700000000, 0)
	cum := pmetric.AggregationTemporalityCumulative
	writeMetrics(t, path, sumExport("a", cum, t0, map[string]int64{"x": 10, "y": 1}), false)
	writeMetrics(t, path, sumExport("a", cum, t0.Add(time.Second), map[string]int64{"x": 25}), false)
	writeMetrics(t, path, sumExport("b", pmetric.AggregationTemporalityDelta, t0, map[string]int64{"x": 3}), false)
	writeMetrics(t, path, sumExport("b", pmetric.AggregationTemporalityDelta, t0.Add(time.Second), map[string]int64{"x": 4}), false)
	writeMetrics(t, path, sumExport("a", cum, t0.Add(2*time.Second), map[string]int64{"x": 1000}), true) // being written

	rms, err := ReadMetricsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rms) != 4 {
		t.Fatalf("%d resource metrics, want 4 (the partial line ignored)", len(rms))
	}
	if rms[0].Resource["process.pid"] != "42" || rms[0].Metrics[0].Kind != KindSum || rms[0].Metrics[0].Temporality != "cumulative" {
		t.Errorf("first = %+v", rms[0])
	}
	a := Filter{Resource: map[string]string{"service.name": "a"}}
	if got, ok := Total(rms, "tcp.bytes", a); !ok || got != 26 {
		t.Errorf("Total(a) = %v %v, want 26 (x latest 25 + y 1)", got, ok)
	}
	ax := Filter{Resource: a.Resource, Attributes: map[string]string{"peer": "x"}}
	if sp := Latest(rms, "tcp.bytes", ax); len(sp) != 1 || sp[0].Point.Int != 25 || !sp[0].Point.Time.Equal(t0.Add(time.Second)) {
		t.Errorf("Latest(a, x) = %+v", sp)
	}
	if got, _ := Total(rms, "tcp.bytes", Filter{Resource: map[string]string{"service.name": "b"}}); got != 7 {
		t.Errorf("Total(b, delta) = %v, want 3+4", got)
	}
	if _, ok := Total(rms, "tcp.bytes", Filter{Resource: map[string]string{"service.name": "c"}}); ok {
		t.Error("Total matched a missing service")
	}
	if names := MetricNames(rms); len(names) != 1 || names[0] != "tcp.bytes" {
		t.Errorf("MetricNames = %v", names)
	}

	// A file that does not exist yet holds nothing.
	if rms, err := ReadMetricsFile(filepath.Join(t.TempDir(), "none")); err != nil || rms != nil {
		t.Errorf("missing file: %v %v", rms, err)
	}
	// A corrupt complete line is an error naming the line.
	if err := os.WriteFile(path, []byte("{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMetricsFile(path); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("corrupt line: %v", err)
	}
}

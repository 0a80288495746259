package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	// The conventions the agent is checked against, pinned by the
	// go.opentelemetry.io/otel version in go.mod: v1.43.0 is the newest
	// that otel v1.47.0 ships (v1.44 is not in it). A module update that
	// drops it fails to compile here; moving to a newer one is a one-line
	// change of semconvVersion and this import.
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/otelbee/otelbee/e2e/harness"
)

const semconvVersion = "v1.43.0"

// convMetric is one metric of the conventions: its unit and instrument kind.
type convMetric struct{ unit, kind string }

// registry is the conventions' metrics and attribute keys.
type registry struct {
	metrics map[string]convMetric
	attrs   map[string]bool
}

var (
	reConvType = regexp.MustCompile(`type (\w+) struct \{\s*metric\.(\w+)`)
	reConvName = regexp.MustCompile(`func \((\w+)\) Name\(\) string \{\s*return "([^"]+)"`)
	reConvUnit = regexp.MustCompile(`func \((\w+)\) Unit\(\) string \{\s*return "([^"]*)"`)
	reAttrKey  = regexp.MustCompile(`attribute\.Key\("([^"]+)"\)`)
)

// instrumentKind maps the instrument a conv type embeds to the kind of
// data a backend receives.
func instrumentKind(instrument string) string {
	switch {
	case strings.HasSuffix(instrument, "Histogram"):
		return "histogram"
	case strings.HasSuffix(instrument, "UpDownCounter"):
		return "updowncounter"
	case strings.HasSuffix(instrument, "Counter"):
		return "counter"
	case strings.HasSuffix(instrument, "Gauge"):
		return "gauge"
	}
	return "unknown:" + instrument
}

// loadRegistry reads the generated Go package of the conventions: every
// metric (name, unit, instrument) from the *conv packages and every
// attribute key of the registry.
func loadRegistry(t *testing.T) registry {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "go.opentelemetry.io/otel")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("locating go.opentelemetry.io/otel: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "semconv", semconvVersion)
	if !strings.HasSuffix(semconv.SchemaURL, "/"+strings.TrimPrefix(semconvVersion, "v")) {
		t.Fatalf("imported semconv package has schema %s, want %s", semconv.SchemaURL, semconvVersion)
	}
	reg := registry{metrics: map[string]convMetric{}, attrs: map[string]bool{}}
	files, err := filepath.Glob(filepath.Join(dir, "*conv", "metric.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no conv packages in %s: %v", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		kinds, names, units := map[string]string{}, map[string]string{}, map[string]string{}
		for _, m := range reConvType.FindAllStringSubmatch(src, -1) {
			kinds[m[1]] = instrumentKind(m[2])
		}
		for _, m := range reConvName.FindAllStringSubmatch(src, -1) {
			names[m[1]] = m[2]
		}
		for _, m := range reConvUnit.FindAllStringSubmatch(src, -1) {
			units[m[1]] = m[2]
		}
		for typ, name := range names {
			reg.metrics[name] = convMetric{unit: units[typ], kind: kinds[typ]}
		}
		for _, m := range reAttrKey.FindAllStringSubmatch(src, -1) {
			reg.attrs[m[1]] = true
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "attribute_group.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range reAttrKey.FindAllStringSubmatch(string(b), -1) {
		reg.attrs[m[1]] = true
	}
	// Sanity: the parse found the registry, not an empty set that lets
	// everything through.
	for name, want := range map[string]convMetric{
		"http.server.request.duration": {"s", "histogram"},
		"dns.lookup.duration":          {"s", "histogram"},
		"process.cpu.time":             {"s", "counter"},
		"process.memory.usage":         {"By", "updowncounter"},
	} {
		if reg.metrics[name] != want {
			t.Fatalf("conventions %s: %s is %+v, want %+v (parse of %s broken?)", semconvVersion, name, reg.metrics[name], want, dir)
		}
	}
	if !reg.attrs["http.route"] || !reg.attrs["cpu.mode"] || !reg.attrs["service.name"] || reg.attrs["network.connection.direction"] {
		t.Fatalf("attribute registry of %s not parsed right (%d keys)", semconvVersion, len(reg.attrs))
	}
	return reg
}

// otelSpecAttrs are attributes the OpenTelemetry specification (not the
// semantic conventions' registry) defines.
var otelSpecAttrs = map[string]bool{
	"otel.metric.overflow": true, // metrics SDK: cardinality limit
}

// emittedKind is the kind of an exported metric, in the registry's terms.
func emittedKind(m harness.Metric) string {
	switch m.Kind {
	case harness.KindHistogram, harness.KindExponentialHistogram:
		return "histogram"
	case harness.KindSum:
		if m.Monotonic {
			return "counter"
		}
		return "updowncounter"
	case harness.KindGauge:
		return "gauge"
	}
	return string(m.Kind)
}

// TestSemanticConventions runs every collector with every opt-in on under
// real traffic (curl against a Go server, a refused connect, dig against
// dnsmasq) into the real OpenTelemetry Collector, and compares every metric
// name, unit, instrument kind and attribute key it exports (metric points,
// resources, spans) with the semantic conventions' Go package: a name in a
// convention's namespace must be that convention's, with its unit and kind;
// anything else must be under otelbee. (keys without a namespace are only
// allowed on otelbee.* metrics, which scope them).
func TestSemanticConventions(t *testing.T) {
	harness.RequireRoot(t)
	reg := loadRegistry(t)
	env := startDNSEnv(t, "semconv")
	col := harness.StartCollector(t)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000", "OTEL_BSP_SCHEDULE_DELAY=200"},
		"--collectors=tcp,dns,http", "--http.body-sizes", "--http.client-url-scheme", "--dns.spans", "--bpf.stats",
		"--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	_ = agent

	sfx := strconv.Itoa(rand.IntN(1 << 30))
	srv, cli, dnsSvc := "semconv-srv-"+sfx, "semconv-cli-"+sfx, "semconv-dns-"+sfx
	addr, stop := goServer(t, srv)
	const n = 5
	urls := []string{"http://" + addr + "/fail"} // a 5xx: error.type on both sides
	for i := range n - 1 {
		urls = append(urls, fmt.Sprintf("http://%s/users/%d", addr, i))
	}
	curlCounts(t, cli, nil, urls...)
	// A refused connect: otelbee.tcp.connection.failed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	runClientAllowFail(t, cli, "curl", "-s", "-o", "/dev/null", "http://"+closed+"/")
	stop()
	for _, name := range []string{"web." + dnsDomain, "missing." + dnsDomain} {
		if code, _ := dnsDig(t, env.pair.A, dnsSvc, "@"+env.server, "+tries=1", "+timeout=3", name, "A"); code == "" {
			t.Fatalf("dig %s: no answer", name)
		}
	}

	svc := func(s string) harness.Filter { return harness.Filter{Resource: map[string]string{"service.name": s}} }
	eq := func(v float64) func(float64) bool { return func(got float64) bool { return got == v } }
	col.WaitForMetric(t, "http.server.request.duration", svc(srv), eq(n), 30*time.Second)
	col.WaitForMetric(t, "http.client.request.duration", svc(cli), eq(n), 30*time.Second)
	col.WaitForMetric(t, "dns.lookup.duration", svc(dnsSvc), eq(2), 30*time.Second)
	col.WaitForMetric(t, "otelbee.tcp.connection.failed", svc(cli), eq(1), 30*time.Second)
	col.WaitForMetric(t, "process.cpu.time", svc("otelbee"), func(float64) bool { return true }, 30*time.Second)
	col.WaitForSpans(t, func(s []harness.Span) bool {
		kinds := map[string]bool{}
		for _, sp := range s {
			kinds[sp.Resource["service.name"]+" "+sp.Kind] = true
		}
		return kinds[srv+" Server"] && kinds[cli+" Client"] && kinds[dnsSvc+" Client"]
	}, 30*time.Second)

	rms, err := col.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	spans, err := col.Spans()
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		unit, kind string
		attrs      map[string]bool
	}
	metrics := map[string]*seen{}
	resourceKeys := map[string]bool{}
	for _, rm := range rms {
		for k := range rm.Resource {
			resourceKeys[k] = true
		}
		for _, m := range rm.Metrics {
			s := metrics[m.Name]
			if s == nil {
				s = &seen{unit: m.Unit, kind: emittedKind(m), attrs: map[string]bool{}}
				metrics[m.Name] = s
			}
			if s.unit != m.Unit || s.kind != emittedKind(m) {
				t.Errorf("%s exported as %s %q and as %s %q", m.Name, s.kind, s.unit, emittedKind(m), m.Unit)
			}
			for _, p := range m.Points {
				for k := range p.Attributes {
					s.attrs[k] = true
				}
			}
		}
	}
	spanKeys := map[string]bool{}
	for _, sp := range spans {
		for k := range sp.Attributes {
			spanKeys[k] = true
		}
		for k := range sp.Resource {
			resourceKeys[k] = true
		}
	}

	attrOK := func(key string, onOwnMetric bool) bool {
		switch {
		case reg.attrs[key], otelSpecAttrs[key], strings.HasPrefix(key, "otelbee."):
			return true
		case !strings.Contains(key, "."):
			return onOwnMetric
		}
		return false
	}
	names := make([]string, 0, len(metrics))
	for name := range metrics {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := metrics[name]
		own := strings.HasPrefix(name, "otelbee.")
		if conv, ok := reg.metrics[name]; ok {
			if s.unit != conv.unit || s.kind != conv.kind {
				t.Errorf("%s is a %s in %q; the conventions (%s) define a %s in %q", name, s.kind, s.unit, semconvVersion, conv.kind, conv.unit)
			}
		} else if !own {
			t.Errorf("%s is no metric of the conventions (%s) and not under otelbee.", name, semconvVersion)
		}
		for k := range s.attrs {
			if !attrOK(k, own) {
				t.Errorf("%s: attribute %s is not in the conventions' registry (%s) and not under otelbee.", name, k, semconvVersion)
			}
		}
	}
	for k := range resourceKeys {
		if !attrOK(k, false) {
			t.Errorf("resource attribute %s is not in the conventions' registry (%s) and not under otelbee.", k, semconvVersion)
		}
	}
	for k := range spanKeys {
		if !attrOK(k, false) {
			t.Errorf("span attribute %s is not in the conventions' registry (%s) and not under otelbee.", k, semconvVersion)
		}
	}
	// What the check covered, so that it cannot pass on an empty run.
	for _, want := range []string{"http.server.request.duration", "http.client.request.duration",
		"http.server.request.body.size", "http.client.response.body.size", "dns.lookup.duration",
		"otelbee.dns.lookup.answers", "otelbee.tcp.connection.opened", "otelbee.tcp.connection.duration",
		"otelbee.tcp.connection.failed", "process.cpu.time", "process.memory.usage", "otelbee.events.dropped"} {
		if metrics[want] == nil {
			t.Errorf("%s was not exported: the check did not cover it", want)
		}
	}
	t.Logf("checked %d metrics, %d span and %d resource attribute keys against the conventions %s", len(metrics), len(spanKeys), len(resourceKeys), semconvVersion)
}

// runClientAllowFail runs a client that is expected to fail (a refused
// connect) to completion.
func runClientAllowFail(t *testing.T, service string, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	p := harness.StartProcess(t, service, cmd)
	p.Wait(30 * time.Second)
}

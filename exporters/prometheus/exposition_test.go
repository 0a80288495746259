package prometheus

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
)

// scrapeAs scrapes h asking for the given format.
func scrapeAs(t testing.TB, h http.Handler, accept string) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body.String())
	}
	return rec.Body.String()
}

var (
	acceptText = string(expfmt.NewFormat(expfmt.TypeTextPlain))
	acceptOM   = "application/openmetrics-text;version=1.0.0"
)

// record makes a varied collection: services with and without an
// instance, one sharing its identity between two processes (merged
// series), counters, up-down counters, gauges, int and float histograms
// with different bounds, odd names and values, an attribute named le, a
// name clash, exponential histograms and a producer's data.
func record(t testing.TB, mp *sdkmetric.MeterProvider) {
	ctx := context.Background()
	m := mp.Meter(scope, metric.WithInstrumentationVersion("0.1.0"))
	other := mp.Meter("github.com/otelbee/otelbee/collectors/dns")
	self := mp.Meter("github.com/otelbee/otelbee/agent")
	opened, _ := m.Int64Counter("tcp.connection.opened", metric.WithUnit("{connection}"), metric.WithDescription("TCP connections opened.\nSecond line with \\ and \"quotes\"."))
	bytes, _ := m.Float64Counter("tcp.connection.io", metric.WithUnit("By"))
	active, _ := m.Int64UpDownCounter("tcp.connection.active", metric.WithUnit("{connection}"))
	rtt, _ := m.Float64Gauge("tcp.rtt.last", metric.WithUnit("s"))
	dur, _ := m.Float64Histogram("tcp.connection.duration", metric.WithUnit("s"), metric.WithDescription("Duration."),
		metric.WithExplicitBucketBoundaries(0.001, 0.1, 1, 10, 1e7))
	size, _ := other.Int64Histogram("dns.response.size", metric.WithUnit("By"), metric.WithExplicitBucketBoundaries(64, 512, 4096))
	lookups, _ := other.Int64Counter("dns.lookups")
	exp, _ := other.Float64Histogram("dns.lookup.duration", metric.WithUnit("s"))
	clash, _ := m.Int64Gauge("tcp.connection.opened_total") // loses to the counter
	produced, _ := self.Int64Counter("otelbee.events.produced")

	gunicorn := func(pid int) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("service.name", "gunicorn"), attribute.Int("process.pid", pid)}
	}
	ids := [][]attribute.KeyValue{api(), db(), gunicorn(7), gunicorn(8)}
	for i := range 40 {
		ident := []attribute.KeyValue{attribute.String("service.name", fmt.Sprintf("svc-%02d", i%7)),
			attribute.String("service.instance.id", fmt.Sprintf("node:%d", i%3)), attribute.Int("process.pid", 1000+i%21)}
		ids = append(ids, ident)
	}
	for i, ident := range ids {
		port := attribute.Int("server.port", 8000+i%5)
		opened.Add(ctx, int64(1+i*37), with(ident, attribute.String("network.connection.direction", "inbound"), port))
		opened.Add(ctx, 2_000_000+int64(i), with(ident, attribute.String("network.connection.direction", "outbound")))
		bytes.Add(ctx, float64(i)*1.5e6+0.25, with(ident, attribute.String("network.io.direction", "receive")))
		active.Add(ctx, int64(i%4)-2, with(ident))
		if i != 3 { // no duplicate gauge: which one is kept is not the point here
			rtt.Record(ctx, float64(i)/3, with(ident, port))
		}
		for j := range i % 6 {
			dur.Record(ctx, math.Pow(10, float64(j-4)), with(ident, attribute.String("le", "spoof")))
			size.Record(ctx, int64(40*j*j), with(ident))
			exp.Record(ctx, float64(j)/100, with(ident))
		}
		lookups.Add(ctx, 1, with(ident, attribute.String("dns.question.name", fmt.Sprintf("host-%d.example.", i%9)),
			attribute.String("odd-key.x", "v\\al\"ue\nnext")))
	}
	clash.Record(ctx, 1)
	produced.Add(ctx, 42, metric.WithAttributes(attribute.String("collector", "tcp")))
	produced.Add(ctx, 0, metric.WithAttributes(attribute.String("collector", "dns")))
}

// TestExpositionMatchesClientGolang: the text and OpenMetrics answers
// written from the SDK's data are byte for byte what client_golang's
// encoders make of translator's metrics, on the first scrape and on later
// ones (labels kept from an earlier scrape), with and without scope labels
// and copied resource labels.
func TestExpositionMatchesClientGolang(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"default", nil},
		{"no scope labels", []Option{WithoutScopeLabels()}},
		{"resource labels", []Option{WithResourceLabels("service.name", "process.pid")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			views := sdkmetric.WithView(sdkmetric.NewView(sdkmetric.Instrument{Name: "dns.lookup.duration"},
				sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 40, MaxScale: 10}}))
			e, mp := newProviderWith(t, []sdkmetric.Option{views}, tc.opts...)
			record(t, mp)
			for round := range 3 {
				for _, accept := range []string{acceptText, acceptOM, ""} {
					want := scrapeAs(t, e.legacy, accept)
					got := scrapeAs(t, e.Handler(), accept)
					if got != want {
						t.Fatalf("round %d, Accept %q: the answers differ:\n%s", round, accept, firstDiff(got, want))
					}
					if !strings.Contains(got, `tcp_connection_duration_seconds_bucket{`) || !strings.Contains(got, "target_info{") {
						t.Fatalf("round %d: series missing:\n%s", round, got)
					}
				}
				record(t, mp) // new values, the same series
			}
		})
	}
}

// newProviderWith is newProvider with extra provider options.
func newProviderWith(t testing.TB, popts []sdkmetric.Option, opts ...Option) (*Exporter, *sdkmetric.MeterProvider) {
	t.Helper()
	e := New(opts...)
	res := resource.NewSchemaless(
		attribute.String("service.name", "otelbee"),
		attribute.String("service.version", "0.1.0"),
		attribute.String("host.name", "node-1"),
	)
	mp := sdkmetric.NewMeterProvider(append(popts, sdkmetric.WithResource(res), sdkmetric.WithReader(e.Reader()))...)
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return e, mp
}

// firstDiff shows where two answers part.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n  got  %q\n  want %q", i+1, gl, wl)
		}
	}
	return "(same lines)"
}

// TestExpositionForgetsSeries: series the SDK no longer reports leave the
// label cache, so churn does not grow it.
func TestExpositionForgetsSeries(t *testing.T) {
	at := time.Unix(1700000000, 0)
	round := 0
	e := New(WithProducer(producerFunc(func(context.Context) ([]metricdata.ScopeMetrics, error) {
		pts := make([]metricdata.DataPoint[int64], 2000)
		for i := range pts {
			pts[i] = metricdata.DataPoint[int64]{Attributes: attribute.NewSet(attribute.String("service.name", "churn"),
				attribute.Int("process.pid", round*2000+i)), StartTime: at, Time: at, Value: 1}
		}
		return []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{{Name: "churn.requests",
			Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true, DataPoints: pts}}}}}, nil
	})))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.Reader()))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	for round = range 10 {
		body := scrapeAs(t, e.Handler(), acceptText)
		if n := strings.Count(body, "\nchurn_requests_total{"); n != 1 { // one service, one instance: merged
			t.Fatalf("round %d: %d churn series", round, n)
		}
		if !strings.Contains(body, "churn_requests_total{job=\"churn\"} 2000\n") {
			t.Fatalf("round %d: want 2000 requests merged:\n%s", round, body)
		}
	}
	e.cache.mu.Lock()
	n := e.cache.npoints
	e.cache.mu.Unlock()
	if n > 2*2000+1024 {
		t.Errorf("the label cache holds %d data points after 10 rounds of 2,000 new ones", n)
	}
}

// BenchmarkExposition is the exporter's own cost per series, without the
// SDK's collection: a producer hands the same n data points (half
// counters, half histograms with the SDK's default 16 buckets, 100
// services) to every scrape, written in the text format.
func BenchmarkExposition(b *testing.B) {
	for _, n := range []int{1000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			at := time.Unix(1700000000, 0)
			bounds := []float64{0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000}
			sums := make([]metricdata.DataPoint[int64], n/2)
			hists := make([]metricdata.HistogramDataPoint[float64], n/2)
			for i := range n / 2 {
				attrs := attribute.NewSet(attribute.String("service.name", fmt.Sprintf("svc-%05d", i/5)),
					attribute.Int("process.pid", 1000+i/5), attribute.Int("server.port", 8000+i%5))
				sums[i] = metricdata.DataPoint[int64]{Attributes: attrs, StartTime: at, Time: at, Value: int64(i)}
				counts := make([]uint64, len(bounds)+1)
				counts[i%len(counts)] = 3
				hists[i] = metricdata.HistogramDataPoint[float64]{Attributes: attrs, StartTime: at, Time: at,
					Count: 3, Sum: 0.9, Bounds: bounds, BucketCounts: counts}
			}
			data := []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{
				{Name: "tcp.connection.opened", Unit: "{connection}", Data: metricdata.Sum[int64]{
					Temporality: metricdata.CumulativeTemporality, IsMonotonic: true, DataPoints: sums}},
				{Name: "tcp.connection.duration", Unit: "s", Data: metricdata.Histogram[float64]{
					Temporality: metricdata.CumulativeTemporality, DataPoints: hists}},
			}}}
			e := New(WithProducer(producerFunc(func(context.Context) ([]metricdata.ScopeMetrics, error) { return data, nil })))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.Reader()))
			b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			body := scrapeAs(b, e.Handler(), acceptText)
			if got := strings.Count(body, "tcp_connection_opened_total{"); got != n/2 {
				b.Fatalf("%d counter series exposed, want %d", got, n/2)
			}
			h := e.Handler()
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			w := &discardWriter{header: http.Header{}}
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				h.ServeHTTP(w, req)
			}
			b.ReportMetric(float64(len(body))/float64(n), "bytes/series")
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/series")
			b.ReportMetric(float64(testing.AllocsPerRun(1, func() { h.ServeHTTP(w, req) }))/float64(n), "allocs/series")
		})
	}
}

// chunkRecorder records the writes an answer is made of.
type chunkRecorder struct {
	header       http.Header
	body         strings.Builder
	writes, most int
}

func (w *chunkRecorder) Header() http.Header { return w.header }
func (w *chunkRecorder) WriteHeader(int)     {}
func (w *chunkRecorder) Write(p []byte) (int, error) {
	w.writes++
	w.most = max(w.most, len(p))
	return w.body.Write(p)
}

// TestScrapeStreams: a large answer goes out in chunks of at most
// chunkSize as it is written, not built whole; gzip (asked for by
// Prometheus) holds the same text; name[] selects families.
func TestScrapeStreams(t *testing.T) {
	e, mp := newProviderWith(t, nil)
	record(t, mp)
	plain := scrapeAs(t, e.Handler(), acceptText)
	if len(plain) < 3*chunkSize {
		t.Fatalf("the answer is only %d bytes", len(plain))
	}
	w := &chunkRecorder{header: http.Header{}}
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	e.Handler().ServeHTTP(w, req)
	if w.body.String() != plain || w.writes < len(plain)/chunkSize || w.most > chunkSize {
		t.Errorf("%d bytes in %d writes of at most %d; want the same %d bytes in writes of at most %d", w.body.Len(), w.writes, w.most, len(plain), chunkSize)
	}

	req = httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, req)
	if rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", rec.Header().Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || string(unzipped) != plain {
		t.Errorf("gzip answer differs from the plain one (%v)", err)
	}

	req = httptest.NewRequest(http.MethodGet, "/metrics?name[]=target_info&name[]=dns_lookups_total", nil)
	rec = httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, req)
	for _, l := range strings.Split(strings.TrimSpace(rec.Body.String()), "\n") {
		if !strings.HasPrefix(l, "target_info") && !strings.HasPrefix(l, "dns_lookups_total") && !strings.HasPrefix(l, "# ") {
			t.Errorf("name[] let through %q", l)
		}
	}
}

package httpc

import (
	"strings"
	"testing"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/process/identity"
)

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "",
		"/":                                "/",
		"/anything/semi;jsessionid=SECRET": "/anything/semi",
		"/a;x=1/b;y=2":                     "/a/b",
		"/a;x=1/b;y=2/":                    "/a/b/",
		"/;jsessionid=S":                   "/",
		"/a/%3Bnot-a-param":                "/a/%3Bnot-a-param",
		"/caf\xc3":                         "/caf\uFFFD",
		"/caf\xc3;jsessionid=\xff/x":       "/caf\uFFFD/x",
		"/café;v=1":                        "/café",
	} {
		if got := string(CleanPath(nil, []byte(in))); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRouteStripsParamsAndInvalidUTF8(t *testing.T) {
	r, err := NewRoutes([]string{"/users/{id}/cart"}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"/anything/semi;jsessionid=SECRET": "/anything/semi",
		"/users/7;jsessionid=S/cart":       "/users/{id}/cart",
		"/users/7/cart;jsessionid=S":       "/users/{id}/cart",
		"/orders/123;v=2":                  "/orders/{id}",
		"/caf\xc3":                         "/caf\uFFFD",
		"/\xff\xfe/12":                     "/\uFFFD/{id}",
	} {
		if got := r.Route("svc", []byte(in)); got != want {
			t.Errorf("Route(%q) = %q, want %q", in, got, want)
		}
	}
	if got := string(Fold(nil, CleanPath(nil, []byte("/a;jsessionid=S/42")))); got != "/a/{id}" {
		t.Errorf("Fold of a clean path kept a parameter: %q", got)
	}
}

// spanCollector is a unit collector whose sampled spans are ended by the
// caller (drainSpans), so a test or a fuzz target sees them synchronously.
func spanCollector(tb testing.TB) (*Collector, *sdkmetric.ManualReader, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	producers := &collectors.ProducerSet{}
	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(producers))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	sampler := sdktrace.AlwaysSample()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sampler), sdktrace.WithIDGenerator(sampling.IDGenerator{}))
	c := New(collectors.Deps{Meter: mp.Meter("unit"), TracerProvider: tp, Sampler: sampler,
		Processes: identity.NewResolver("/proc", "unit"), Producers: producers}, DefaultConfig())
	var err error
	if c.routes, err = NewRoutes(nil, 100); err != nil {
		tb.Fatal(err)
	}
	producers.Add(c)
	c.setupTracing()
	st := c.newConn(connKey{tgid: 1, fd: 3, start: 1})
	st.server = true
	st.svc = "/unit"
	st.stats = c.statsFor(1)
	st.lastLen = -1
	c.cur = st
	return c, reader, exp
}

// TestSecretParamsNotExported: a session id in a path parameter reaches no
// route, span name, url.path or metric attribute, on either side.
func TestSecretParamsNotExported(t *testing.T) {
	c, reader, exp := spanCollector(t)
	for _, server := range []bool{true, false} {
		c.cur.server = server
		c.cur.lastSeries = nil
		c.onExchange(&Exchange{Method: MethodGet, Status: 200, Minor: 1,
			Path: []byte("/anything/semi;jsessionid=SECRET"), Start: 1, End: 2})
	}
	c.drainSpans()
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	for _, s := range spans {
		// A server span without a configured route is named by its method;
		// a client span by its url.template.
		want := "GET /anything/semi"
		if s.SpanKind == trace.SpanKindServer {
			want = "GET"
		}
		if s.Name != want || spanAttr(s.Attributes, keyURLTemplate) != "/anything/semi" {
			t.Errorf("%s span name %q, url.template %q; want %q, /anything/semi", s.SpanKind, s.Name, spanAttr(s.Attributes, keyURLTemplate), want)
		}
		for _, kv := range s.Attributes {
			if strings.Contains(kv.Value.Emit(), "SECRET") {
				t.Errorf("span attribute %s=%q", kv.Key, kv.Value.Emit())
			}
		}
		if v := spanAttr(s.Attributes, keyPath); v != "/anything/semi" {
			t.Errorf("url.path %q", v)
		}
	}
	forEachMetricString(t, reader, func(where, v string) {
		if strings.Contains(v, "SECRET") {
			t.Errorf("%s: %q", where, v)
		}
	})
}

func spanAttr(kvs []attribute.KeyValue, k attribute.Key) string {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value.Emit()
		}
	}
	return ""
}

// forEachMetricString calls f with every string attribute value of every
// point the collector's producer and instruments export.
func forEachMetricString(tb testing.TB, reader *sdkmetric.ManualReader, f func(where, v string)) {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(tb.Context(), &rm); err != nil {
		tb.Fatal(err)
	}
	each := func(name string, set attribute.Set) {
		for _, kv := range set.ToSlice() {
			if kv.Value.Type() == attribute.STRING {
				f(name+" "+string(kv.Key), kv.Value.AsString())
			}
		}
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					each(m.Name, p.Attributes)
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					each(m.Name, p.Attributes)
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					each(m.Name, p.Attributes)
				}
			}
		}
	}
}

// FuzzAttributesValidUTF8: whatever bytes a client or server sends, every
// span name, span attribute and metric attribute made from them is valid
// UTF-8 (OTLP refuses a whole batch otherwise), and no path parameter
// survives into a route.
func FuzzAttributesValidUTF8(f *testing.F) {
	f.Add([]byte("GET /caf\xc3 HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), true)
	f.Add([]byte("GET /a;jsessionid=\xff\xfe/b HTTP/1.1\r\nHost: \xc3\r\n\r\n"), []byte("HTTP/1.1 404 Not Found\r\n\r\n"), false)
	f.Add([]byte("\xff\xfe\xfd / HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 500 x\r\n\r\n"), true)
	f.Add([]byte("GET /q?k\xff=v\xfe&z HTTP/1.1\r\nHost: u:p@h\xc3:8\r\nUser-Agent: a\xff\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\n\r\n"), false)
	f.Add([]byte("GET /q?k\xff=v\xfe&z HTTP/1.1\r\nHost: [\xff]:1\r\nUser-Agent: a\xff\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\n\r\n"), true)
	c, reader, exp := spanCollector(f)
	c.cfg.URLQuery = true // the redacted query is made from traffic too
	f.Fuzz(func(t *testing.T, req, resp []byte, server bool) {
		exp.Reset()
		st := c.cur
		st.server = server
		st.lastLen, st.lastSeries = -1, nil
		st.parser.Reset(server, &st.stats.Stats, c.sinkFn)
		// request, then response, in the directions of the side
		st.parser.Feed(server, req, uint64(len(req)), callTimes{1, 2})
		st.parser.Feed(!server, resp, uint64(len(resp)), callTimes{3, 4})
		st.parser.Close()
		c.drainSpans()
		for _, s := range exp.GetSpans() {
			if !utf8.ValidString(s.Name) {
				t.Fatalf("span name %q", s.Name)
			}
			for _, kv := range s.Attributes {
				if kv.Value.Type() == attribute.STRING && !utf8.ValidString(kv.Value.AsString()) {
					t.Fatalf("span attribute %s=%q", kv.Key, kv.Value.AsString())
				}
			}
		}
		forEachMetricString(t, reader, func(where, v string) {
			if !utf8.ValidString(v) {
				t.Fatalf("%s = %q", where, v)
			}
			if (strings.HasSuffix(where, string(keyRoute)) || strings.HasSuffix(where, string(keyURLTemplate))) && strings.Contains(v, ";") {
				t.Fatalf("%s = %q keeps a path parameter", where, v)
			}
		})
	})
}

package capture

import (
	"context"
	"net/netip"
	"os"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/process/identity"
)

// oneMetric is a protocol with one client duration metric.
type oneMetric struct{}

func (oneMetric) Name() string { return "test" }
func (oneMetric) Metrics(l7.Role) []l7.MetricSpec {
	return []l7.MetricSpec{{Name: "db.client.operation.duration", Unit: "s", Kind: l7.Duration}}
}
func (oneMetric) NewParser(*l7.Conn) l7.Parser { return nil }

// A protocol's own server.address (from :authority, Host or a handshake)
// wins over the peer's address, and a span carries the observed service's
// identity, from which the span path makes its resource.
func TestSinkKeepsProtocolServerAddressAndIdentity(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	res := identity.NewResolver("/proc", "testhost")
	cfg := DefaultConfig()
	cfg.Spans = true
	e := NewEngine(collectors.Deps{TracerProvider: tp, Processes: res, Sampler: sdktrace.AlwaysSample()}, cfg)
	s := NewSink(e, oneMetric{})
	c := &l7.Conn{ID: 1, PID: uint32(os.Getpid()), Role: l7.RoleClient, Source: l7.SourceSyscall,
		Peer: netip.MustParseAddrPort("127.0.0.1:8443")}
	var x l7.Exchange
	x.Start, x.End, x.SpanName = 1, 2, "GET"
	x.Add(attribute.String("server.address", "api.example"))
	x.Add(attribute.Int("server.port", 443))
	s.Exchange(c, &x)

	sms, err := s.Produce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var points int
	for _, sm := range sms {
		for _, m := range sm.Metrics {
			forEachAttrs(m.Data, func(set attribute.Set) {
				points++
				if v, _ := set.Value("server.address"); v.AsString() != "api.example" {
					t.Errorf("metric server.address = %q, want the protocol's api.example", v.AsString())
				}
				if v, _ := set.Value("server.port"); v.AsInt64() != 443 {
					t.Errorf("metric server.port = %d, want 443", v.AsInt64())
				}
			})
		}
	}
	if points != 1 {
		t.Fatalf("%d points, want 1", points)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	got := map[attribute.Key]attribute.Value{}
	for _, kv := range spans[0].Attributes() {
		if _, dup := got[kv.Key]; dup {
			t.Errorf("span attribute %s set twice", kv.Key)
		}
		got[kv.Key] = kv.Value
	}
	if got["server.address"].AsString() != "api.example" {
		t.Errorf("span server.address = %q", got["server.address"].AsString())
	}
	want := res.Lookup(c.PID).ServiceName
	if want == "" || got[identity.KeyServiceName].AsString() != want {
		t.Errorf("span service.name = %q, want the process's %q", got[identity.KeyServiceName].AsString(), want)
	}
}

// forEachAttrs calls fn with the attribute set of every point of data.
func forEachAttrs(data metricdata.Aggregation, fn func(attribute.Set)) {
	switch d := data.(type) {
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			fn(p.Attributes)
		}
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			fn(p.Attributes)
		}
	}
}

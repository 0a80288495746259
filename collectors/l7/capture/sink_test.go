package capture

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
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

// Two short-lived processes of one service are one instance: their
// exchanges land on one series, counted exactly; in pid mode on two.
func TestSinkFoldsInstances(t *testing.T) {
	for _, tt := range []struct {
		mode   identity.InstanceMode
		points int
	}{{identity.InstanceService, 1}, {identity.InstancePID, 2}} {
		res := identity.NewResolver("/proc", "testhost")
		res.InstanceMode = tt.mode
		e := NewEngine(collectors.Deps{Processes: res}, DefaultConfig())
		s := NewSink(e, oneMetric{})
		var pids []uint32
		for i := 0; i < 2; i++ {
			cmd := exec.Command("sleep", "30")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			pids = append(pids, uint32(cmd.Process.Pid))
		}
		for _, pid := range pids {
			c := &l7.Conn{PID: pid, Role: l7.RoleClient, Peer: netip.MustParseAddrPort("127.0.0.1:5432")}
			x := l7.Exchange{Start: 1, End: 2}
			s.Exchange(c, &x)
		}
		sms, err := s.Produce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		points, total := 0, uint64(0)
		for _, sm := range sms {
			for _, m := range sm.Metrics {
				if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
					for _, p := range h.DataPoints {
						points++
						total += p.Count
					}
				}
			}
		}
		if points != tt.points || total != 2 {
			t.Errorf("mode %v: %d points counting %d, want %d counting 2", tt.mode, points, total, tt.points)
		}
	}
}

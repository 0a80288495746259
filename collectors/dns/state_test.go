package dns

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/collectors/identity"
)

// unitCollector is a collector without kernel objects: events are fed to
// its state directly.
func unitCollector(tb testing.TB, cfg Config) (*Collector, *sdkmetric.ManualReader) {
	tb.Helper()
	producers := &collectors.ProducerSet{}
	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(producers))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tb.Cleanup(func() { mp.Shutdown(context.Background()) })
	c := New(collectors.Deps{
		Logger:    slog.New(slog.DiscardHandler),
		Meter:     mp.Meter("test"),
		Processes: identity.NewResolver("/proc", "testhost"),
		Producers: producers,
	}, cfg)
	if err := c.createInstruments(); err != nil {
		tb.Fatal(err)
	}
	c.st = newState(c)
	producers.Add(c)
	return c, reader
}

// record builds a ring buffer record like bpf/dns.c does.
func record(kind dnsDnsKind, ts, queryTs, cookie uint64, tgid uint32, msg []byte) []byte {
	b := make([]byte, eventSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], ts)
	le.PutUint64(b[8:], queryTs)
	le.PutUint64(b[16:], cookie)
	le.PutUint32(b[24:], tgid)
	le.PutUint16(b[28:], uint16(len(msg)))
	le.PutUint16(b[30:], uint16(min(len(msg), captureSize)))
	server := 48 // a query goes to the server (daddr), an answer comes from it (saddr)
	if kind == dnsDnsKindKIND_RESPONSE {
		server = 32
	}
	copy(b[server+10:], []byte{0xff, 0xff, 198, 18, 0, 2})
	le.PutUint16(b[64:], 40000)
	le.PutUint16(b[66:], 53)
	if kind == dnsDnsKindKIND_RESPONSE {
		le.PutUint16(b[64:], 53)
		le.PutUint16(b[66:], 40000)
	}
	b[68], b[69] = byte(kind), 17
	if len(msg) >= 2 {
		le.PutUint16(b[70:], binary.BigEndian.Uint16(msg))
	}
	copy(b[eventHeaderSize:], msg)
	return b
}

func feed(c *Collector, rec []byte) {
	var ev event
	if err := decodeEvent(rec, &ev); err != nil {
		panic(err)
	}
	c.st.handle(context.Background(), &ev)
}

type point struct {
	name, qtype, outcome, server string
	count                        uint64
	sum                          float64
}

func points(t *testing.T, reader *sdkmetric.ManualReader) map[string]point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]point{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if m.Name != "dns.lookup.duration" || !ok {
				continue
			}
			for _, dp := range h.DataPoints {
				get := func(k string) string { v, _ := dp.Attributes.Value(attributeKey(k)); return v.Emit() }
				p := point{name: get("dns.question.name"), qtype: get("dns.question.type"),
					outcome: get("dns.response.code") + get("error.type"),
					server:  get("server.address") + ":" + get("server.port"), count: dp.Count, sum: dp.Sum}
				out[p.name+" "+p.qtype+" "+p.outcome] = p
			}
		}
	}
	return out
}

func TestStateMatchesFoldsAndTimesOut(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxNamesPerService = 2
	cfg.Timeout = time.Second
	c, reader := unitCollector(t, cfg)
	pid := uint32(os.Getpid())
	names := []string{"a.test.", "b.test.", "c.test.", "d.test.", "a.test."}
	for i, n := range names {
		id := uint16(10 + i)
		feed(c, record(dnsDnsKindKIND_QUERY, 1000, 0, 5, pid, buildQuery(id, n, dnsmessage.TypeA)))
		feed(c, record(dnsDnsKindKIND_RESPONSE, 1000+uint64(i+1)*1e6, 1000, 5, pid, response(id, n, dnsmessage.TypeA, 0, 1)))
	}
	// Unmatched answer, unparseable query, then a query that times out.
	feed(c, record(dnsDnsKindKIND_RESPONSE, 5000, 1000, 5, pid, response(99, "x.test.", dnsmessage.TypeA, 0, 1)))
	feed(c, record(dnsDnsKindKIND_QUERY, 5000, 0, 5, pid, []byte{0, 1, 1, 0}))
	feed(c, record(dnsDnsKindKIND_QUERY, 10_000, 0, 6, pid, buildQuery(77, "slow.test.", dnsmessage.TypeTXT)))
	c.st.sweep(context.Background(), 10_000+uint64(cfg.Timeout)-1)
	if len(c.st.pending) != 1 {
		t.Fatalf("pending before the timeout: %d", len(c.st.pending))
	}
	c.st.sweep(context.Background(), 10_000+uint64(cfg.Timeout))

	got := points(t, reader)
	want := map[string]uint64{
		"a.test A NOERROR":   2,
		"b.test A NOERROR":   1,
		"_OTHER A NOERROR":   2,
		"_OTHER TXT timeout": 1,
	}
	if len(got) != len(want) {
		t.Fatalf("series: %v", got)
	}
	for k, n := range want {
		if got[k].count != n || got[k].server != "198.18.0.2:53" {
			t.Errorf("%s: %+v, want count %d from 198.18.0.2:53", k, got[k], n)
		}
	}
	// a.test answered after 1 ms and 5 ms.
	if s := got["a.test A NOERROR"].sum; s < 0.005999 || s > 0.006001 {
		t.Errorf("a.test latency sum %v, want 0.006", s)
	}
	if s := got["_OTHER TXT timeout"].sum; s != 1 {
		t.Errorf("timeout recorded as %v s, want the 1 s timeout", s)
	}
	st := &c.stats
	if st.folded.Load() != 3 || st.unmatched.Load() != 1 || st.queriesBad.Load() != 1 ||
		st.timeouts.Load() != 1 || st.queriesParsed.Load() != 6 || st.responsesParsed.Load() != 6 || len(c.st.pending) != 0 {
		t.Errorf("stats: folded %d unmatched %d bad %d timeouts %d parsed %d/%d pending %d",
			st.folded.Load(), st.unmatched.Load(), st.queriesBad.Load(), st.timeouts.Load(),
			st.queriesParsed.Load(), st.responsesParsed.Load(), len(c.st.pending))
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Config){
		func(c *Config) { c.Ports = nil },
		func(c *Config) { c.Ports = []uint16{0} },
		func(c *Config) { c.Timeout = time.Millisecond },
		func(c *Config) { c.MaxNamesPerService = 0 },
		func(c *Config) { c.MaxPending = 10 },
		func(c *Config) { c.RingBufferBytes = 3 << 20 },
		func(c *Config) { c.RetireAfter = -time.Second },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if c.Validate() == nil {
			t.Errorf("case %d: invalid config accepted: %+v", i, c)
		}
	}
	bm := portBitmap([]uint16{53, 5353, 65535})
	if bm[0]>>53&1 != 1 || bm[5353>>6]>>(5353&63)&1 != 1 || bm[1023]>>63 != 1 || bm[0]>>52&1 != 0 {
		t.Error("port bitmap")
	}
}

// BenchmarkLookup is the agent's work for one lookup: decode and parse the
// query and the answer records, match them, record the histograms.
func BenchmarkLookup(b *testing.B) {
	c, _ := unitCollector(b, DefaultConfig())
	pid := uint32(os.Getpid())
	const distinct = 50
	var recs [distinct][2][]byte
	for i := range distinct {
		name := "svc-" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".ns.svc.cluster.local."
		recs[i][0] = record(dnsDnsKindKIND_QUERY, 1000, 0, 9, pid, buildQuery(uint16(i), name, dnsmessage.TypeA))
		recs[i][1] = record(dnsDnsKindKIND_RESPONSE, 250_000, 1000, 9, pid, response(uint16(i), name, dnsmessage.TypeA, 0, 2))
	}
	ctx := context.Background()
	var ev event
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := &recs[i%distinct]
		decodeEvent(r[0], &ev)
		c.st.handle(ctx, &ev)
		decodeEvent(r[1], &ev)
		c.st.handle(ctx, &ev)
		i++
	}
}

func TestSpansOptIn(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Spans = true
	c, reader := unitCollector(t, cfg)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c.tracer = tp.Tracer("test")
	pid := uint32(os.Getpid())
	feed(c, record(dnsDnsKindKIND_QUERY, 1_000_000, 0, 5, pid, buildQuery(1, "span.test.", dnsmessage.TypeSRV)))
	feed(c, record(dnsDnsKindKIND_RESPONSE, 3_000_000, 1_000_000, 5, pid, response(1, "span.test.", dnsmessage.TypeSRV, 0, 2)))
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	sp := spans[0]
	if sp.Name() != "DNS SRV" || sp.SpanKind() != trace.SpanKindClient || sp.EndTime().Sub(sp.StartTime()) != 2*time.Millisecond {
		t.Errorf("span %q kind %v duration %v", sp.Name(), sp.SpanKind(), sp.EndTime().Sub(sp.StartTime()))
	}
	attrs := map[string]string{}
	for _, kv := range sp.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["dns.question.name"] != "span.test" || attrs["dns.answer.count"] != "2" ||
		attrs["dns.response.code"] != "NOERROR" || attrs["process.pid"] != fmt.Sprint(pid) {
		t.Errorf("span attributes: %v", attrs)
	}
	// The sampled lookup is its duration bucket's exemplar.
	linked := 0
	for _, dp := range collectortest.HistogramPoints(t, reader, "dns.lookup.duration") {
		for _, ex := range dp.Exemplars {
			if trace.SpanID(ex.SpanID) == sp.SpanContext().SpanID() && trace.TraceID(ex.TraceID) == sp.SpanContext().TraceID() {
				linked++
			}
		}
	}
	if linked != 1 {
		t.Errorf("%d exemplars point at the lookup's span, want 1", linked)
	}
	// A sampler that says no: the lookup is recorded, no span is started.
	c.deps.Sampler = sdktrace.NeverSample()
	feed(c, record(dnsDnsKindKIND_QUERY, 4_000_000, 0, 5, pid, buildQuery(2, "span.test.", dnsmessage.TypeSRV)))
	feed(c, record(dnsDnsKindKIND_RESPONSE, 5_000_000, 4_000_000, 5, pid, response(2, "span.test.", dnsmessage.TypeSRV, 0, 2)))
	if n := len(rec.Started()); n != 1 {
		t.Errorf("%d spans started, want 1: the unsampled lookup reached the SDK", n)
	}
	// Off by default: no tracer, no span.
	c2, _ := unitCollector(t, DefaultConfig())
	if c2.tracer != nil {
		t.Error("spans on by default")
	}
}

// TestMaxSeries: past dns.max_series, lookups of new series are recorded in
// one series marked otel.metric.overflow=true and counted; none is lost.
func TestMaxSeries(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxSeries = 2
	c, reader := unitCollector(t, cfg)
	pid := uint32(os.Getpid())
	names := []string{"a.test.", "b.test.", "c.test.", "d.test.", "e.test.", "a.test."}
	for i, n := range names {
		id := uint16(10 + i)
		feed(c, record(dnsDnsKindKIND_QUERY, 1000, 0, 5, pid, buildQuery(id, n, dnsmessage.TypeA)))
		feed(c, record(dnsDnsKindKIND_RESPONSE, 2000, 1000, 5, pid, response(id, n, dnsmessage.TypeA, 0, 1)))
	}
	got := points(t, reader)
	// The overflow point has none of the attributes: its key is "  ".
	want := map[string]uint64{"a.test A NOERROR": 2, "b.test A NOERROR": 1, "  ": 3}
	if len(got) != len(want) {
		t.Fatalf("points %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k].count != n {
			t.Errorf("%q: %d lookups, want %d (all: %v)", k, got[k].count, n, got)
		}
	}
	if n := c.stats.seriesOverflow.Load(); n != 3 {
		t.Errorf("overflow counter %d, want 3", n)
	}
}

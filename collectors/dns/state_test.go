package dns

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	otelcodes "go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/exporters/spans"
	"github.com/otelbee/otelbee/process/identity"
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
	name, qtype, outcome, errType, server string
	count                                 uint64
	sum                                   float64
	bounds                                []float64
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
				p := point{name: get("dns.question.name"), qtype: get("otelbee.dns.question.type"),
					outcome: get("otelbee.dns.response.code"), errType: get("error.type"),
					server: get("server.address") + ":" + get("server.port"), count: dp.Count, sum: dp.Sum, bounds: dp.Bounds}
				if p.outcome == "" {
					p.outcome = p.errType
				}
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
	c.emitter = spans.EmitterOf(tp.Tracer("test"))
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
	if attrs["dns.question.name"] != "span.test" || attrs["otelbee.dns.answer.count"] != "2" ||
		attrs["otelbee.dns.response.code"] != "NOERROR" || attrs["process.pid"] != fmt.Sprint(pid) {
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
	if c2.emitter != nil {
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

// TestErrorTypes: every failed lookup has error.type (the response code's
// mnemonic, or timeout), a NOERROR one has none; a failed lookup's span has
// status Error.
func TestErrorTypes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Spans = true
	cfg.Timeout = time.Second
	c, reader := unitCollector(t, cfg)
	rec := tracetest.NewSpanRecorder()
	c.emitter = spans.EmitterOf(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test"))
	pid := uint32(os.Getpid())
	codes := []dnsmessage.RCode{dnsmessage.RCodeSuccess, dnsmessage.RCodeNameError, dnsmessage.RCodeServerFailure,
		dnsmessage.RCodeRefused, dnsmessage.RCodeNameError, dnsmessage.RCodeFormatError}
	for i, rc := range codes {
		id := uint16(i + 1)
		feed(c, record(dnsDnsKindKIND_QUERY, 1000, 0, 5, pid, buildQuery(id, "e.test.", dnsmessage.TypeA)))
		feed(c, record(dnsDnsKindKIND_RESPONSE, 2000, 1000, 5, pid, response(id, "e.test.", dnsmessage.TypeA, rc, 0)))
	}
	feed(c, record(dnsDnsKindKIND_QUERY, 1000, 0, 6, pid, buildQuery(50, "e.test.", dnsmessage.TypeA)))
	c.st.sweep(context.Background(), 1000+uint64(time.Second))

	got := points(t, reader)
	want := map[string]struct {
		n       uint64
		errType string
	}{
		"e.test A NOERROR":  {1, ""},
		"e.test A NXDOMAIN": {2, "NXDOMAIN"},
		"e.test A SERVFAIL": {1, "SERVFAIL"},
		"e.test A REFUSED":  {1, "REFUSED"},
		"e.test A FORMERR":  {1, "FORMERR"},
		"e.test A timeout":  {1, "timeout"},
	}
	if len(got) != len(want) {
		t.Fatalf("series %v", got)
	}
	for k, w := range want {
		if got[k].count != w.n || got[k].errType != w.errType {
			t.Errorf("%s: %d lookups, error.type %q; want %d, %q", k, got[k].count, got[k].errType, w.n, w.errType)
		}
	}
	status := map[string]int{}
	for _, sp := range rec.Ended() {
		et := ""
		for _, kv := range sp.Attributes() {
			if kv.Key == "error.type" {
				et = kv.Value.AsString()
			}
		}
		if (et != "") != (sp.Status().Code == otelcodes.Error) || (et != "" && sp.Status().Description != et) {
			t.Errorf("span with error.type %q has status %v %q", et, sp.Status().Code, sp.Status().Description)
		}
		status[sp.Status().Code.String()]++
	}
	if status["Error"] != 6 || status["Unset"] != 1 {
		t.Errorf("span statuses %v, want 6 Error and 1 Unset", status)
	}
}

// TestDurationBuckets: the default bounds are the conventions' advice for
// dns.lookup.duration; dns.duration_buckets replaces them; bad ones are
// refused.
func TestDurationBuckets(t *testing.T) {
	wantDefault := []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
	custom := []float64{0.0001, 0.001, 0.01}
	for _, b := range [][]float64{nil, custom} {
		cfg := DefaultConfig()
		want := wantDefault
		if b != nil {
			cfg.DurationBuckets, want = b, b
		}
		c, reader := unitCollector(t, cfg)
		pid := uint32(os.Getpid())
		feed(c, record(dnsDnsKindKIND_QUERY, 1000, 0, 5, pid, buildQuery(1, "b.test.", dnsmessage.TypeA)))
		feed(c, record(dnsDnsKindKIND_RESPONSE, 3_001_000, 1000, 5, pid, response(1, "b.test.", dnsmessage.TypeA, 0, 1)))
		p := points(t, reader)["b.test A NOERROR"]
		if !slices.Equal(p.bounds, want) || p.count != 1 {
			t.Errorf("bounds %v (count %d), want %v", p.bounds, p.count, want)
		}
	}
	for _, b := range [][]float64{{}, {1, 1}, {2, 1}, {-1}, {math.NaN()}, {math.Inf(1)}, make([]float64, 65)} {
		cfg := DefaultConfig()
		cfg.DurationBuckets = b
		if cfg.Validate() == nil {
			t.Errorf("bounds %v accepted", b)
		}
	}
}

// TestNameCase: dns.question.name is the name as asked; spellings that
// differ only in case are one name for the per-service budget, and at most
// maxSpellings of them are kept.
func TestNameCase(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxNamesPerService = 1
	c, reader := unitCollector(t, cfg)
	pid := uint32(os.Getpid())
	asked := []string{"Web.Test.", "web.test.", "WEB.TEST.", "Web.Test.", "wEb.test.", "weB.test.", "other.test."}
	for i, n := range asked {
		id := uint16(i + 1)
		feed(c, record(dnsDnsKindKIND_QUERY, 1000, 0, 5, pid, buildQuery(id, n, dnsmessage.TypeA)))
		feed(c, record(dnsDnsKindKIND_RESPONSE, 2000, 1000, 5, pid, response(id, n, dnsmessage.TypeA, 0, 1)))
	}
	got := points(t, reader)
	want := map[string]uint64{
		"Web.Test A NOERROR": 3, // twice as asked, and weB.test: the fifth spelling
		"web.test A NOERROR": 1,
		"WEB.TEST A NOERROR": 1,
		"wEb.test A NOERROR": 1,
		"_OTHER A NOERROR":   1, // a second name past the budget of one
	}
	if len(got) != len(want) {
		t.Fatalf("series %v", got)
	}
	for k, n := range want {
		if got[k].count != n {
			t.Errorf("%s: %d lookups, want %d", k, got[k].count, n)
		}
	}
	if n := c.stats.folded.Load(); n != 1 {
		t.Errorf("folded %d, want 1", n)
	}
}

// endRecord builds a KIND_SOCK_ERROR or KIND_CLOSE record.
func endRecord(kind dnsDnsKind, ts, cookie uint64, errno int32) []byte {
	b := make([]byte, eventSize)
	le := binary.LittleEndian
	le.PutUint64(b[offTsNs:], ts)
	le.PutUint64(b[offCookie:], cookie)
	b[offKind] = byte(kind)
	le.PutUint32(b[offError:], uint32(errno))
	return b
}

// TestSocketEnds: a socket's error ends its pending queries with the
// error's type at the error's time; its close ends them as timeouts at the
// close; other sockets' queries wait on.
func TestSocketEnds(t *testing.T) {
	c, reader := unitCollector(t, DefaultConfig())
	pid := uint32(os.Getpid())
	q := func(ts, cookie uint64, id uint16, name string) {
		feed(c, record(dnsDnsKindKIND_QUERY, ts, 0, cookie, pid, buildQuery(id, name, dnsmessage.TypeA)))
	}
	q(1_000_000, 5, 1, "refused.test.") // A and AAAA-like: two on one socket
	q(1_500_000, 5, 2, "refused.test.")
	q(2_000_000, 6, 3, "closed.test.")
	q(2_000_000, 7, 4, "waiting.test.")
	feed(c, endRecord(dnsDnsKindKIND_SOCK_ERROR, 3_000_000, 5, int32(unix.ECONNREFUSED)))
	feed(c, endRecord(dnsDnsKindKIND_CLOSE, 5_000_000, 5, 0)) // nothing left on it
	feed(c, endRecord(dnsDnsKindKIND_CLOSE, 1_002_000_000, 6, 0))
	feed(c, endRecord(dnsDnsKindKIND_CLOSE, 9_000_000, 99, 0)) // unknown socket

	got := points(t, reader)
	if p := got["refused.test A connection_refused"]; p.count != 2 || math.Abs(p.sum-0.0035) > 1e-9 {
		t.Errorf("refused: %+v, want 2 lookups, 2 ms + 1.5 ms", p)
	}
	if p := got["closed.test A timeout"]; p.count != 1 || math.Abs(p.sum-1.0) > 1e-9 {
		t.Errorf("closed: %+v, want 1 lookup of 1 s", p)
	}
	if len(got) != 2 || len(c.st.pending) != 1 || len(c.st.byCookie) != 1 || len(c.st.byCookie[7]) != 1 {
		t.Errorf("series %v; pending %d, index %v; want the waiting query only", got, len(c.st.pending), c.st.byCookie)
	}
	if c.stats.failed.Load() != 2 || c.stats.clientGaveUp.Load() != 1 || c.stats.socketErrors.Load() != 1 || c.stats.closes.Load() != 3 {
		t.Errorf("stats: failed %d gave up %d errors %d closes %d", c.stats.failed.Load(), c.stats.clientGaveUp.Load(),
			c.stats.socketErrors.Load(), c.stats.closes.Load())
	}
	for errno, want := range map[unix.Errno]string{unix.ECONNREFUSED: "connection_refused", unix.EHOSTUNREACH: "host_unreachable",
		unix.ENETUNREACH: "network_unreachable", unix.ECONNRESET: "connection_reset", unix.ETIMEDOUT: "timeout", unix.EMSGSIZE: "_OTHER"} {
		if got := errorType(socketOutcome(int32(errno))); got != want {
			t.Errorf("errno %v: error.type %q, want %q", errno, got, want)
		}
	}
}

// FuzzLookupAttributes: whatever bytes a query and its answer carry, every
// attribute the collector puts on dns.lookup.duration is valid UTF-8 (an
// invalid one would make protobuf refuse the whole OTLP export).
func FuzzLookupAttributes(f *testing.F) {
	f.Add(nameQuery(1, "caf\xc3"), []byte{})
	f.Add(buildQuery(2, "Web.Test.", dnsmessage.TypeA), response(2, "Web.Test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, 0))
	f.Add(nameQuery(3, "\xff\xfe\x00\\\""), nameQuery(3, "\xff"))
	f.Fuzz(func(t *testing.T, query, answer []byte) {
		c, reader := unitCollector(t, DefaultConfig())
		pid := uint32(os.Getpid())
		feed(c, record(dnsDnsKindKIND_QUERY, 1000, 0, 5, pid, query))
		if len(answer) > 0 {
			feed(c, record(dnsDnsKindKIND_RESPONSE, 2000, 1000, 5, pid, answer))
		}
		c.st.sweep(context.Background(), 1000+uint64(c.cfg.Timeout))
		for _, dp := range collectortest.HistogramPoints(t, reader, "dns.lookup.duration") {
			for _, kv := range dp.Attributes.ToSlice() {
				if v := kv.Value.Emit(); !utf8.ValidString(v) {
					t.Fatalf("attribute %s = %q is not valid UTF-8", kv.Key, v)
				}
			}
		}
	})
}

package dns

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/exporters/spans"
	"github.com/otelbee/otelbee/exporters/spans/spanstest"
	"github.com/otelbee/otelbee/process/identity"
)

// traceAPISpan is a lookup's span as it was made before Emit, through the
// trace API, kept here to compare the two.
func traceAPISpan(s *state, tr trace.Tracer, e *pendEntry, outcome uint16, answers int64, endNs uint64) {
	sr := s.seriesFor(e, outcome)
	name := sr.Name
	_, sp := tr.Start(context.Background(), name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(s.wall(e.tsNs)))
	sp.SetAttributes(sr.Span...)
	var kvs []attribute.KeyValue
	if answers >= 0 {
		kvs = append(kvs, keyAnswerCount.Int64(answers))
	}
	if sr.Folded && e.tgid != 0 {
		kvs = append(kvs, identity.KeyProcessPID.Int64(int64(e.tgid)))
	}
	if len(kvs) > 0 {
		sp.SetAttributes(kvs...)
	}
	if et := errorType(outcome); et != "" {
		sp.SetStatus(codes.Error, et)
	}
	sp.End(trace.WithTimestamp(s.wall(endNs)))
}

type lookup struct {
	e       pendEntry
	outcome uint16
	answers int64
	endNs   uint64
}

// lookups are answered, failed and timed-out lookups of this process and
// of a short-lived one folded into its service's instance (its spans add
// its process.pid).
func lookups(t *testing.T, res *identity.Resolver) []lookup {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	self, short := uint32(os.Getpid()), uint32(cmd.Process.Pid)
	entry := func(tgid uint32, name string, qtype dnsmessage.Type, ts uint64) pendEntry {
		return pendEntry{tsNs: ts, tgid: tgid, proc: res.Lookup(tgid), name: name, qtype: qtype,
			server: [16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 53}, port: 53, transport: 17}
	}
	return []lookup{
		{entry(self, "api.example", dnsmessage.TypeA, 1000), uint16(dnsmessage.RCodeSuccess), 2, 5000},
		{entry(self, "api.example", dnsmessage.TypeA, 6000), uint16(dnsmessage.RCodeSuccess), 1, 9000},
		{entry(self, "nope.example", dnsmessage.TypeAAAA, 10000), uint16(dnsmessage.RCodeNameError), 0, 12000},
		{entry(self, "slow.example", dnsmessage.TypeSRV, 20000), outcomeTimeout, -1, 90000},
		{entry(short, "api.example", dnsmessage.TypeA, 30000), uint16(dnsmessage.RCodeSuccess), 2, 31000},
	}
}

// TestEmitAsTheTraceAPI: every lookup's span through Emit leaves exactly
// as it did through the trace API before Emit (names, kind, times,
// attributes, status, resources; a folded process's own process.pid
// included), and so through EmitterOf's trace API path (the SDK's).
func TestEmitAsTheTraceAPI(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Spans = true
	before, viaAPI, viaEmit := spanstest.New(t, nil), spanstest.New(t, nil), spanstest.New(t, nil)
	const scope = "github.com/otelbee/otelbee/collectors/dns"
	var ls []lookup
	for _, way := range []struct {
		emitter spans.Emitter
		old     trace.Tracer
	}{{old: before.Tracer(scope)}, {emitter: spans.EmitterOf(spanstest.APIOnly(viaAPI).Tracer(scope))}, {emitter: spans.EmitterOf(viaEmit.Tracer(scope))}} {
		c, _ := unitCollector(t, cfg)
		c.deps.Processes.InstanceMode = identity.InstanceService
		c.st.wallOffset = 1700000000e9
		c.emitter = way.emitter
		if ls == nil {
			ls = lookups(t, c.deps.Processes)
		}
		for _, l := range ls {
			e := l.e
			if way.old != nil {
				traceAPISpan(c.st, way.old, &e, l.outcome, l.answers, l.endNs)
				continue
			}
			c.st.record(context.Background(), &e, l.outcome, l.endNs-e.tsNs, l.answers, l.endNs)
		}
	}
	want := before.ResourceSpans(t)
	if n := spanstest.Count(want); n != len(ls) {
		t.Fatalf("%d spans before, want %d", n, len(ls))
	}
	if d := spanstest.Diff(want, viaEmit.ResourceSpans(t)); d != "" {
		t.Errorf("Emit: %s", d)
	}
	if d := spanstest.Diff(want, viaAPI.ResourceSpans(t)); d != "" {
		t.Errorf("EmitterOf's trace API: %s", d)
	}
}

// TestSpanAllocs: a sampled lookup of a warm series becomes its span and
// its exemplar without an allocation.
func TestSpanAllocs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Spans = true
	c, _ := unitCollector(t, cfg)
	p := spanstest.New(t, nil)
	c.emitter = spans.EmitterOf(p.Tracer("dns"))
	c.deps.Sampler, _ = sampling.Parse("parentbased_always_on", "")
	l := lookups(t, c.deps.Processes)[0]
	lookup := func() {
		e := l.e
		c.st.record(context.Background(), &e, l.outcome, l.endNs-e.tsNs, l.answers, l.endNs)
	}
	for range 20000 { // the service's buffer grows to its size
		lookup()
	}
	if n := testing.AllocsPerRun(1000, lookup); n != 0 {
		t.Errorf("%v allocations per sampled lookup, want 0", n)
	}
	if p.Queued() < 21000 {
		t.Errorf("%d spans queued, want every lookup's", p.Queued())
	}
}

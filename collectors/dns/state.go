package dns

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/otelbee/otelbee/collectors/aggregate"
	"github.com/otelbee/otelbee/collectors/identity"
	"github.com/otelbee/otelbee/collectors/sampling"
)

// OverflowName is the dns.question.name of lookups whose name is beyond the
// service's budget of distinct names.
const OverflowName = "_OTHER"

// Outcomes that are not response codes.
const (
	outcomeTimeout   = 0xffff
	outcomeMalformed = 0xfffe
)

// Attribute keys.
const (
	keyQuestionName = attribute.Key("dns.question.name")
	keyQuestionType = attribute.Key("dns.question.type")
	keyResponseCode = attribute.Key("dns.response.code")
	keyErrorType    = attribute.Key("error.type")
	keyServerAddr   = attribute.Key("server.address")
	keyServerPort   = attribute.Key("server.port")
	keyTransport    = attribute.Key("network.transport")
	keyAnswerCount  = attribute.Key("dns.answer.count")
)

// pendKey matches an answer to its query: the socket and the DNS id.
type pendKey struct {
	cookie uint64
	id     uint16
}

// pendEntry is a query the agent saw and waits an answer for.
type pendEntry struct {
	tsNs      uint64
	tgid      uint32
	proc      *identity.Process
	name      string // kept name or OverflowName
	folded    bool
	qtype     dnsmessage.Type
	server    [16]byte
	port      uint16
	transport uint8
	goneAtNs  uint64 // the kernel entry was gone at a sweep: answered there
}

// seriesKey identifies one set of measurement attributes.
type seriesKey struct {
	tgid      uint32
	name      string
	qtype     dnsmessage.Type
	outcome   uint16
	server    [16]byte
	port      uint16
	transport uint8
}

// series is one attribute set: the span attributes of its lookups and its
// histograms (its own, or the overflow ones past Config.MaxSeries).
type series struct {
	attrs      []attribute.KeyValue
	h          *histograms
	overflowed bool
}

// histograms are one attribute set's histograms; guarded by
// Collector.seriesMu.
type histograms struct {
	set      attribute.Set
	duration aggregate.Histogram[float64]
	answers  aggregate.Histogram[float64]
}

// overflowSet marks the series that collects the lookups of series beyond
// dns.max_series, as the OpenTelemetry SDK marks its cardinality overflow.
var overflowSet = attribute.NewSet(attribute.Bool("otel.metric.overflow", true))

// state is the Run goroutine's: no lock.
type state struct {
	c        *Collector
	pending  map[pendKey]pendEntry
	names    map[string]map[string]string // service.name -> kept names
	series   map[seriesKey]*series
	overflow *histograms          // past Config.MaxSeries; guarded by Collector.seriesMu
	retired  map[uint32]time.Time // tgid -> when seen gone
	msg      message
	sweeps   int
	// wallOffset converts CLOCK_MONOTONIC nanoseconds to wall time.
	wallOffset time.Duration
}

func newState(c *Collector) *state {
	return &state{
		c:          c,
		pending:    map[pendKey]pendEntry{},
		names:      map[string]map[string]string{},
		series:     map[seriesKey]*series{},
		retired:    map[uint32]time.Time{},
		wallOffset: time.Duration(time.Now().UnixNano() - int64(monotonicNow())),
	}
}

func (s *state) handle(ctx context.Context, ev *event) {
	switch dnsDnsKind(ev.kind) {
	case dnsDnsKindKIND_QUERY:
		s.onQuery(ev)
	case dnsDnsKindKIND_RESPONSE:
		s.onResponse(ctx, ev)
	default:
		s.c.stats.malformedRecords.Add(1)
	}
}

// forgetKernel deletes the kernel's pending entry of a query the agent
// will not track. ErrKeyNotExist means an answer already took it.
func (s *state) forgetKernel(k pendKey) {
	if s.c.pendMap == nil {
		return
	}
	s.c.pendMap.Delete(dnsPendingKey{Cookie: k.cookie, Id: k.id})
}

func (s *state) onQuery(ev *event) {
	k := pendKey{cookie: ev.cookie, id: ev.id}
	err := parseMessage(ev.data, &s.msg)
	if err != nil || s.msg.response {
		s.c.stats.queriesBad.Add(1)
		s.forgetKernel(k)
		return
	}
	s.c.stats.queriesParsed.Add(1)
	if _, dup := s.pending[k]; !dup && len(s.pending) >= int(s.c.cfg.MaxPending) {
		s.c.stats.pendingFullAgent.Add(1)
		s.forgetKernel(k)
		return
	}
	proc := s.c.deps.Processes.Lookup(ev.tgid)
	name, folded := s.intern(proc.ServiceName, s.msg.Name())
	s.pending[k] = pendEntry{
		tsNs:      ev.tsNs,
		tgid:      ev.tgid,
		proc:      proc,
		name:      name,
		folded:    folded,
		qtype:     s.msg.qtype,
		server:    ev.daddr,
		port:      ev.dport,
		transport: ev.transport,
	}
	s.c.stats.pendingAgentCount.Store(int64(len(s.pending)))
}

func (s *state) onResponse(ctx context.Context, ev *event) {
	k := pendKey{cookie: ev.cookie, id: ev.id}
	err := parseMessage(ev.data, &s.msg)
	outcome := uint16(outcomeMalformed)
	if err == nil || errors.Is(err, errNoQuestion) {
		s.c.stats.responsesParsed.Add(1)
		outcome = uint16(s.msg.rcode)
	} else {
		s.c.stats.responsesBad.Add(1)
	}
	e, ok := s.pending[k]
	if !ok {
		// The query was unparseable, or answered after it timed out.
		s.c.stats.unmatched.Add(1)
		return
	}
	delete(s.pending, k)
	s.c.stats.pendingAgentCount.Store(int64(len(s.pending)))
	var dur uint64
	if ev.tsNs > ev.queryTsNs {
		dur = ev.tsNs - ev.queryTsNs
	}
	answers := int64(-1)
	if outcome != outcomeMalformed {
		answers = int64(s.msg.answers)
	}
	s.record(ctx, &e, outcome, dur, answers, ev.tsNs)
}

// record puts one finished lookup on the instruments.
// A lookup that became a sampled span is its duration bucket's exemplar.
func (s *state) record(ctx context.Context, e *pendEntry, outcome uint16, durNs uint64, answers int64, endNs uint64) {
	sr := s.seriesFor(e, outcome)
	var sc trace.SpanContext
	if s.c.tracer != nil {
		sc = s.span(ctx, e, sr, answers, endNs)
	}
	d := float64(durNs) / 1e9
	if sr.overflowed {
		s.c.stats.seriesOverflow.Add(1)
	}
	h := sr.h
	s.c.seriesMu.Lock()
	if sc.IsSampled() {
		h.duration.RecordSampled(durationBuckets[:], d, s.wall(endNs), sc)
	} else {
		h.duration.Record(durationBuckets[:], d)
	}
	if answers >= 0 {
		h.answers.Record(answerBuckets[:], float64(answers))
	}
	s.c.seriesMu.Unlock()
	if e.folded {
		s.c.stats.folded.Add(1)
	}
}

// span ends the lookup's span if it is sampled, and returns its context.
func (s *state) span(ctx context.Context, e *pendEntry, sr *series, answers int64, endNs uint64) trace.SpanContext {
	name := "DNS " + typeName(e.qtype)
	// Unsampled lookups never reach the SDK (package sampling).
	ctx, sampled := sampling.Decide(s.c.deps.Sampler, ctx, name, trace.SpanKindClient)
	if !sampled {
		return trace.SpanContext{}
	}
	start := s.wall(e.tsNs)
	end := s.wall(endNs)
	attrs := sr.attrs
	if answers >= 0 {
		attrs = append(attrs[:len(attrs):len(attrs)], keyAnswerCount.Int64(answers))
	}
	_, sp := s.c.tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(start),
		trace.WithAttributes(attrs...))
	sp.End(trace.WithTimestamp(end))
	return sp.SpanContext()
}

// wall turns a kernel monotonic timestamp into wall-clock time.
func (s *state) wall(mono uint64) time.Time {
	return time.Unix(0, int64(mono)+int64(s.wallOffset))
}

// intern returns the kept copy of name for service, or OverflowName once the
// service has MaxNamesPerService names. A name already kept costs a map
// lookup and no allocation.
func (s *state) intern(service string, name []byte) (string, bool) {
	set, ok := s.names[service]
	if !ok {
		set = map[string]string{}
		s.names[service] = set
	}
	if v, ok := set[string(name)]; ok {
		return v, false
	}
	if len(set) >= s.c.cfg.MaxNamesPerService {
		return OverflowName, true
	}
	v := string(name)
	set[v] = v
	return v, false
}

func (s *state) seriesFor(e *pendEntry, outcome uint16) *series {
	key := seriesKey{tgid: e.tgid, name: e.name, qtype: e.qtype, outcome: outcome,
		server: e.server, port: e.port, transport: e.transport}
	if sr, ok := s.series[key]; ok {
		return sr
	}
	proc := e.proc
	if proc == nil {
		proc = s.c.deps.Processes.Lookup(e.tgid)
	}
	kv := append([]attribute.KeyValue{}, proc.Attributes()...)
	kv = append(kv,
		keyQuestionName.String(e.name),
		keyQuestionType.String(typeName(e.qtype)),
	)
	switch outcome {
	case outcomeTimeout:
		kv = append(kv, keyErrorType.String("timeout"))
	case outcomeMalformed:
		kv = append(kv, keyErrorType.String("malformed_response"))
	default:
		kv = append(kv, keyResponseCode.String(rcodeName(dnsmessage.RCode(outcome))))
	}
	kv = append(kv,
		keyServerAddr.String(netip.AddrFrom16(e.server).Unmap().String()),
		keyServerPort.Int(int(e.port)),
		keyTransport.String(transportName(e.transport)),
	)
	// Only the Run goroutine writes s.series: it reads without the lock and
	// takes it to insert, as Produce iterates.
	s.c.seriesMu.Lock()
	defer s.c.seriesMu.Unlock()
	if len(s.series) >= s.c.cfg.MaxSeries {
		// Not kept: recorded in the overflow histograms; the span of the
		// lookup still carries its attributes.
		if s.overflow == nil {
			s.overflow = &histograms{set: overflowSet}
		}
		return &series{attrs: kv, h: s.overflow, overflowed: true}
	}
	sr := &series{attrs: kv, h: &histograms{set: attribute.NewSet(kv...)}}
	s.series[key] = sr
	return sr
}

func transportName(t uint8) string {
	if t == 6 {
		return "tcp"
	}
	return "udp"
}

// sweep times out queries older than the timeout, then (every few
// seconds) forgets exited processes and frees kernel entries the agent does
// not know (none, unless records were lost).
func (s *state) sweep(ctx context.Context, now uint64) {
	timeout := uint64(s.c.cfg.Timeout)
	for k, e := range s.pending {
		if now < e.tsNs || now-e.tsNs < timeout {
			continue
		}
		if e.goneAtNs != 0 {
			// Answered in the kernel, but its record never arrived: the
			// kernel counted that drop.
			if now-e.goneAtNs >= timeout {
				s.c.stats.answerLost.Add(1)
				delete(s.pending, k)
			}
			continue
		}
		var err error
		if s.c.pendMap != nil { // nil only in unit tests
			err = s.c.pendMap.Delete(dnsPendingKey{Cookie: k.cookie, Id: k.id})
		}
		switch {
		case err == nil:
			s.c.stats.timeouts.Add(1)
			delete(s.pending, k)
			s.record(ctx, &e, outcomeTimeout, timeout, -1, e.tsNs+timeout)
		case errors.Is(err, ebpf.ErrKeyNotExist):
			e.goneAtNs = now
			s.pending[k] = e
		default:
			s.c.log.Warn("deleting a timed-out dns query from the kernel", "error", err)
		}
	}
	s.c.stats.pendingAgentCount.Store(int64(len(s.pending)))
	s.sweeps++
	if time.Duration(s.sweeps)*s.c.sweepEvery() < 10*time.Second {
		return
	}
	s.sweeps = 0
	s.sweepOrphans(now, 3*timeout)
	s.retire()
}

// sweepOrphans deletes kernel entries older than maxAge that the agent has
// no query for.
func (s *state) sweepOrphans(now, maxAge uint64) {
	if s.c.pendMap == nil {
		return
	}
	var (
		k     dnsPendingKey
		v     dnsPendingVal
		stale []dnsPendingKey
	)
	it := s.c.pendMap.Iterate()
	for it.Next(&k, &v) {
		if now > v.TsNs && now-v.TsNs > maxAge {
			if _, ok := s.pending[pendKey{cookie: k.Cookie, id: k.Id}]; !ok {
				stale = append(stale, k)
			}
		}
	}
	for _, k := range stale {
		if s.c.pendMap.Delete(k) == nil {
			s.c.stats.orphans.Add(1)
		}
	}
}

// retire forgets the cached series of processes gone for RetireAfter.
func (s *state) retire() {
	now := time.Now()
	seen := map[uint32]bool{}
	for k := range s.series {
		if k.tgid == 0 || seen[k.tgid] {
			continue
		}
		seen[k.tgid] = true
		if !s.c.deps.Processes.Alive(k.tgid) {
			if _, ok := s.retired[k.tgid]; !ok {
				s.retired[k.tgid] = now
			}
		}
	}
	// Processes with per-process drop counters in the kernel, too.
	if s.c.drops != nil {
		var tgid uint32
		it := s.c.drops.Iterate()
		var perCPU []dnsProcDrops
		for it.Next(&tgid, &perCPU) {
			if tgid == 0 || seen[tgid] {
				continue
			}
			seen[tgid] = true
			if _, ok := s.retired[tgid]; !ok && !s.c.deps.Processes.Alive(tgid) {
				s.retired[tgid] = now
			}
		}
	}
	s.c.seriesMu.Lock()
	defer s.c.seriesMu.Unlock()
	for tgid, since := range s.retired {
		if now.Sub(since) < s.c.cfg.RetireAfter {
			continue
		}
		for k := range s.series {
			if k.tgid == tgid {
				delete(s.series, k)
			}
		}
		if s.c.drops != nil {
			s.c.drops.Delete(tgid)
		}
		delete(s.retired, tgid)
	}
}

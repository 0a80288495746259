package dns

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors/aggregate"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/collectors/series"
	"github.com/otelbee/otelbee/exporters/spans"
	"github.com/otelbee/otelbee/process/identity"
)

// OverflowName is the dns.question.name of lookups whose name is beyond the
// service's budget of distinct names.
const OverflowName = "_OTHER"

// Outcomes that are not response codes (those are 0..4095).
const (
	outcomeTimeout   = 0xffff // no answer: the agent's timeout, or the client gave up first
	outcomeMalformed = 0xfffe
	// The client's socket reported an error (an ICMP error for UDP, a
	// reset for TCP) while the query waited: the lookup failed then.
	outcomeRefused         = 0xfffd
	outcomeHostUnreachable = 0xfffc
	outcomeNetUnreachable  = 0xfffb
	outcomeReset           = 0xfffa
	outcomeSocketError     = 0xfff9 // any other socket error
)

// errorType is the error.type of a lookup's outcome, "" when it succeeded.
// The conventions define no DNS values but _OTHER and ask for the
// resolver's error codes; the agent sees the wire, so a response code other
// than NOERROR is its RFC mnemonic (NXDOMAIN, SERVFAIL, REFUSED, ...), a
// lookup without an answer is "timeout" (as error.type's own examples), and
// a socket error is named after it ("connection_refused" for an ICMP port
// unreachable, lower case so that it never reads as the REFUSED code).
func errorType(outcome uint16) string {
	switch outcome {
	case 0:
		return ""
	case outcomeTimeout:
		return "timeout"
	case outcomeMalformed:
		return "malformed_response"
	case outcomeRefused:
		return "connection_refused"
	case outcomeHostUnreachable:
		return "host_unreachable"
	case outcomeNetUnreachable:
		return "network_unreachable"
	case outcomeReset:
		return "connection_reset"
	case outcomeSocketError:
		return "_OTHER"
	}
	return rcodeName(dnsmessage.RCode(outcome))
}

// isRCode tells a response code from the outcomes above.
func isRCode(outcome uint16) bool { return outcome < outcomeSocketError }

// maxSpellings bounds the spellings kept per name and service: a resolver
// that randomises case (DNS 0x20) would otherwise make a series per
// spelling. Further spellings are recorded with the first one.
const maxSpellings = 4

// spellings are the forms of one name (equal but for case) as asked.
type spellings struct {
	s [maxSpellings]string
	n int
}

// Attribute keys.
const (
	keyQuestionName = attribute.Key("dns.question.name")
	keyQuestionType = attribute.Key("otelbee.dns.question.type")
	keyResponseCode = attribute.Key("otelbee.dns.response.code")
	keyErrorType    = attribute.Key("error.type")
	keyServerAddr   = attribute.Key("server.address")
	keyServerPort   = attribute.Key("server.port")
	keyTransport    = attribute.Key("network.transport")
	keyAnswerCount  = attribute.Key("otelbee.dns.answer.count")
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

// histograms are one series' histograms, guarded by the series table's
// lock.
type histograms struct {
	duration aggregate.Histogram[float64]
	answers  aggregate.Histogram[float64]
}

// dnsSeries is one series of the table (package series): its point
// attributes, its spans' (identity included), its histograms (its own, or
// the overflow ones past Config.MaxSeries) and its span name (Name).
type dnsSeries = series.Series[seriesKey, histograms]

// state is the Run goroutine's: no lock.
type state struct {
	c       *Collector
	pending map[pendKey]pendEntry
	// byCookie lists the DNS ids of each socket's pending queries, so that
	// a socket's error or close ends them without a scan; freeIDs keeps
	// emptied lists for reuse (no allocation per query once warm).
	byCookie map[uint64][]uint16
	freeIDs  [][]uint16
	names    map[string]map[string]*spellings // service.name -> case-folded name -> as asked
	series   *series.Table[seriesKey, histograms]
	retired  map[uint32]time.Time // tgid -> when seen gone (kernel drop counters)
	spanKVs  []attribute.KeyValue // a span's own attributes, reused
	msg      message
	sweeps   int
	// wallOffset converts CLOCK_MONOTONIC nanoseconds to wall time.
	wallOffset time.Duration
}

func newState(c *Collector) *state {
	return &state{
		c:        c,
		pending:  map[pendKey]pendEntry{},
		byCookie: map[uint64][]uint16{},
		names:    map[string]map[string]*spellings{},
		series: series.New[seriesKey, histograms](series.Config{
			Name: "dns", MaxSeries: c.cfg.MaxSeries, Processes: c.deps.Processes,
			Budget: c.deps.SeriesBudget, RetainDead: c.cfg.RetireAfter,
		}),
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
	case dnsDnsKindKIND_SOCK_ERROR:
		s.c.stats.socketErrors.Add(1)
		s.endSocket(ctx, ev.cookie, socketOutcome(ev.errno), ev.tsNs, &s.c.stats.failed)
	case dnsDnsKindKIND_CLOSE:
		s.c.stats.closes.Add(1)
		s.endSocket(ctx, ev.cookie, outcomeTimeout, ev.tsNs, &s.c.stats.clientGaveUp)
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
	if _, dup := s.pending[k]; !dup {
		s.indexAdd(k)
	}
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
	s.drop(k)
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

// drop forgets a pending query.
func (s *state) drop(k pendKey) {
	delete(s.pending, k)
	ids := s.byCookie[k.cookie]
	for i, id := range ids {
		if id == k.id {
			ids[i] = ids[len(ids)-1]
			ids = ids[:len(ids)-1]
			break
		}
	}
	if len(ids) > 0 {
		s.byCookie[k.cookie] = ids
		return
	}
	delete(s.byCookie, k.cookie)
	if ids != nil && cap(ids) <= 16 && len(s.freeIDs) < 1024 {
		s.freeIDs = append(s.freeIDs, ids)
	}
}

func (s *state) indexAdd(k pendKey) {
	ids, ok := s.byCookie[k.cookie]
	if !ok && len(s.freeIDs) > 0 {
		ids = s.freeIDs[len(s.freeIDs)-1][:0]
		s.freeIDs = s.freeIDs[:len(s.freeIDs)-1]
	}
	s.byCookie[k.cookie] = append(ids, k.id)
}

// socketOutcome is the outcome of a lookup whose socket reported errno.
func socketOutcome(errno int32) uint16 {
	switch unix.Errno(errno) {
	case unix.ECONNREFUSED:
		return outcomeRefused
	case unix.EHOSTUNREACH:
		return outcomeHostUnreachable
	case unix.ENETUNREACH:
		return outcomeNetUnreachable
	case unix.ECONNRESET:
		return outcomeReset
	case unix.ETIMEDOUT:
		return outcomeTimeout
	}
	return outcomeSocketError
}

// endSocket ends the pending queries of a socket at atNs: it reported an
// error (the client's receive fails then), or it closed (the client stopped
// waiting) before the answer and before the agent's timeout. Their duration
// is what the client saw. Whoever deletes the kernel's entry owns the
// lookup, as for timeouts: an entry already gone was answered, and that
// answer's record is lost (the kernel counted it) or yet to come.
func (s *state) endSocket(ctx context.Context, cookie uint64, outcome uint16, atNs uint64, ended *atomic.Uint64) {
	ids := s.byCookie[cookie]
	if len(ids) == 0 {
		return
	}
	// drop edits the list: work on a copy (a DNS socket has few queries).
	var buf [16]uint16
	todo := append(buf[:0], ids...)
	for _, id := range todo {
		k := pendKey{cookie: cookie, id: id}
		e, ok := s.pending[k]
		if !ok || e.goneAtNs != 0 {
			continue
		}
		var err error
		if s.c.pendMap != nil { // nil only in unit tests
			err = s.c.pendMap.Delete(dnsPendingKey{Cookie: k.cookie, Id: k.id})
		}
		switch {
		case err == nil:
			ended.Add(1)
			s.drop(k)
			var dur uint64
			if atNs > e.tsNs {
				dur = atNs - e.tsNs
			}
			s.record(ctx, &e, outcome, dur, -1, atNs)
		case errors.Is(err, ebpf.ErrKeyNotExist):
			e.goneAtNs = monotonicNow()
			s.pending[k] = e
		default:
			s.c.log.Warn("deleting an ended dns query from the kernel", "error", err)
		}
	}
	s.c.stats.pendingAgentCount.Store(int64(len(s.pending)))
}

// record puts one finished lookup on the instruments.
// A lookup that became a sampled span is its duration bucket's exemplar.
func (s *state) record(ctx context.Context, e *pendEntry, outcome uint16, durNs uint64, answers int64, endNs uint64) {
	sr := s.seriesFor(e, outcome)
	var sc trace.SpanContext
	if s.c.emitter != nil {
		sc = s.span(e, sr, outcome, answers, endNs)
	}
	d := float64(durNs) / 1e9
	if sr.Overflowed {
		s.c.stats.seriesOverflow.Add(1)
	}
	h := sr.M
	s.series.Lock()
	if sc.IsSampled() {
		h.duration.RecordSampled(s.c.cfg.DurationBuckets, d, s.wall(endNs), sc)
	} else {
		h.duration.Record(s.c.cfg.DurationBuckets, d)
	}
	if answers >= 0 {
		h.answers.Record(answerBuckets[:], float64(answers))
	}
	s.series.Unlock()
	if e.folded {
		s.c.stats.folded.Add(1)
	}
}

// span emits the lookup's span if it is sampled, and returns its context.
// Its attributes are its series' (prepared once) and its own, from a
// buffer reused from span to span (Emit reads them, keeps none).
func (s *state) span(e *pendEntry, sr *dnsSeries, outcome uint16, answers int64, endNs uint64) trace.SpanContext {
	name := sr.Name
	// Unsampled lookups cost only the decision (package sampling).
	tid, sampled := sampling.Decide(s.c.deps.Sampler, trace.SpanContext{}, name, trace.SpanKindClient)
	if !sampled {
		return trace.SpanContext{}
	}
	kvs := s.spanKVs[:0]
	if answers >= 0 {
		kvs = append(kvs, keyAnswerCount.Int64(answers))
	}
	if sr.Folded && e.tgid != 0 {
		// Per-process detail stays on spans.
		kvs = append(kvs, identity.KeyProcessPID.Int64(int64(e.tgid)))
	}
	f := spans.Finished{Name: name, Kind: trace.SpanKindClient, Start: s.wall(e.tsNs), End: s.wall(endNs),
		TraceID: tid, Series: sr.SpanAttributes(s.c.emitter), Attrs: kvs}
	if et := errorType(outcome); et != "" {
		f.Status, f.Description = codes.Error, et
	}
	sc := s.c.emitter.Emit(f)
	s.spanKVs = kvs[:0]
	return sc
}

// wall turns a kernel monotonic timestamp into wall-clock time.
func (s *state) wall(mono uint64) time.Time {
	return time.Unix(0, int64(mono)+int64(s.wallOffset))
}

// intern returns the kept copy of name (as asked) for service, or
// OverflowName once the service has MaxNamesPerService names. Names that
// differ only in case are one name for the budget (RFC 4343) and keep up to
// maxSpellings spellings. A name already kept costs two map lookups and no
// allocation.
func (s *state) intern(service string, name []byte) (string, bool) {
	set, ok := s.names[service]
	if !ok {
		set = map[string]*spellings{}
		s.names[service] = set
	}
	var buf [maxNameLen]byte
	folded := foldCase(buf[:], name)
	if sp, ok := set[string(folded)]; ok {
		for _, v := range sp.s[:sp.n] {
			if v == string(name) {
				return v, false
			}
		}
		if sp.n == maxSpellings {
			return sp.s[0], false
		}
		v := string(name)
		sp.s[sp.n] = v
		sp.n++
		return v, false
	}
	if len(set) >= s.c.cfg.MaxNamesPerService {
		return OverflowName, true
	}
	v := string(name)
	key := v
	if string(folded) != v {
		key = string(folded)
	}
	set[key] = &spellings{s: [maxSpellings]string{v}, n: 1}
	return v, false
}

func (s *state) seriesFor(e *pendEntry, outcome uint16) *dnsSeries {
	// Keyed by the process's instance (its owner), so that the processes
	// of one instance share one series: retiring one of them drops nothing
	// the others still count.
	owner := s.c.deps.Processes.Owner(e.tgid)
	key := seriesKey{tgid: owner, name: e.name, qtype: e.qtype, outcome: outcome,
		server: e.server, port: e.port, transport: e.transport}
	if sr := s.series.Get(key); sr != nil {
		return sr
	}
	proc := e.proc
	if owner != e.tgid {
		proc = nil // the table looks the instance up
	}
	kv := make([]attribute.KeyValue, 0, 8)
	kv = append(kv,
		keyQuestionName.String(e.name),
		keyQuestionType.String(typeName(e.qtype)),
	)
	if isRCode(outcome) {
		kv = append(kv, keyResponseCode.String(rcodeName(dnsmessage.RCode(outcome))))
	}
	if et := errorType(outcome); et != "" {
		kv = append(kv, keyErrorType.String(et))
	}
	kv = append(kv,
		keyServerAddr.String(netip.AddrFrom16(e.server).Unmap().String()),
		keyServerPort.Int(int(e.port)),
		keyTransport.String(transportName(e.transport)),
	)
	// Past Config.MaxSeries not kept: recorded in the overflow histograms;
	// the span of the lookup still carries its attributes.
	sr := s.series.Add(key, owner, 0, series.Attrs{Ident: proc, Point: kv, Span: kv})
	sr.Name = "DNS " + typeName(e.qtype)
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
				s.drop(k)
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
			s.drop(k)
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

// retire forgets the series of processes gone for RetireAfter (the series
// table's retirement), and the kernel's drop counters of processes gone as
// long.
func (s *state) retire() {
	now := time.Now()
	alive := s.c.deps.Processes.Alive
	s.series.Housekeep(func(tgid uint32) bool { return !alive(tgid) }, now)
	if s.c.drops == nil {
		return
	}
	seen := map[uint32]bool{}
	var tgid uint32
	it := s.c.drops.Iterate()
	var perCPU []dnsProcDrops
	for it.Next(&tgid, &perCPU) {
		if tgid == 0 || seen[tgid] {
			continue
		}
		seen[tgid] = true
		if !alive(tgid) {
			if _, ok := s.retired[tgid]; !ok {
				s.retired[tgid] = now
			}
		} else {
			delete(s.retired, tgid) // a reused pid
		}
	}
	for tgid, since := range s.retired {
		if now.Sub(since) < s.c.cfg.RetireAfter {
			continue
		}
		s.c.drops.Delete(tgid)
		delete(s.retired, tgid)
	}
}

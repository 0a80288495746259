package httpc

import (
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/process/identity"
)

// procStats is what one process lost or could not parse (the parser's
// Stats are shared by its connections). It is reported summed into its
// service (svcStats): a drop counter per process would make series for every
// short-lived process, nearly all of them zero.
type procStats struct {
	Stats
	routeOverflow atomic.Uint64 // server requests whose route became _OTHER
	spanDrops     atomic.Uint64 // spans not queued: the span queue was full
	// client requests whose server.address on metrics became _OTHER: their
	// service had called http.max_routes other Host names
	addressOverflow atomic.Uint64
	refunds         uint64 // dropped request starts cut off by the process's exit (housekeeping)
	deadSince       time.Time
	svc             *svcStats
}

// Per-service counters, in the order of svcCounters.
const (
	cDroppedRing = iota
	cDroppedLost
	cDroppedOverflow
	cIncomplete
	cMalformed
	cRouteOverflow
	cSpansDropped
	cAddressOverflow
	nSvcCounters
)

// svcStats are one service's counters: the sums over its processes, plus
// what processes forgotten since (retireProcs) had counted, so each stays
// monotonic after its processes are gone.
type svcStats struct {
	key     string
	opts    [nSvcCounters]metric.ObserveOption
	retired [nSvcCounters]uint64
	procs   int
	sum     [nSvcCounters]uint64 // scratch of observeProcs
}

// retainDead is how long the counters of an exited process keep being
// reported before they are folded into their service's.
const retainDead = 5 * time.Minute

// statsFor returns the counters of a process, creating them with its
// service (read now, while it runs).
func (c *Collector) statsFor(tgid uint32) *procStats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	return c.statsForLocked(tgid)
}

func (c *Collector) statsForLocked(tgid uint32) *procStats {
	if ps := c.procs[tgid]; ps != nil {
		return ps
	}
	ps := &procStats{svc: c.svcStatsLocked(tgid)}
	ps.svc.procs++
	c.procs[tgid] = ps
	return ps
}

// svcStatsLocked returns the counters of the service of tgid. They carry
// the service's name and namespace only: no process attribute, so one
// series per service and reason.
func (c *Collector) svcStatsLocked(tgid uint32) *svcStats {
	var kv []attribute.KeyValue
	key := ""
	if c.deps.Processes != nil {
		p := c.deps.Processes.Lookup(tgid)
		key = p.ServiceNamespace + "/" + p.ServiceName
		kv = append(kv, identity.KeyServiceName.String(p.ServiceName))
		if p.ServiceNamespace != "" {
			kv = append(kv, identity.KeyServiceNamespace.String(p.ServiceNamespace))
		}
	}
	if c.svcs == nil {
		c.svcs = map[string]*svcStats{}
	}
	if s := c.svcs[key]; s != nil {
		return s
	}
	with := func(extra ...attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(append(kv[:len(kv):len(kv)], extra...)...))
	}
	reason := attribute.Key("reason")
	s := &svcStats{key: key}
	s.opts[cDroppedRing] = with(reason.String("ringbuf_full"))
	s.opts[cDroppedLost] = with(reason.String("records_lost"))
	s.opts[cDroppedOverflow] = with(reason.String("pipeline_overflow"))
	base := with()
	for _, i := range []int{cIncomplete, cMalformed, cRouteOverflow, cSpansDropped, cAddressOverflow} {
		s.opts[i] = base
	}
	c.svcs[key] = s
	return s
}

// kernelDrops sums the kernel's per-process drop counters.
func (c *Collector) kernelDrops() map[uint32]httpTgidDrops {
	out := map[uint32]httpTgidDrops{}
	if c.loader == nil { // unit tests: no kernel side
		return out
	}
	m := c.loader.Map(httpMapDrops)
	var (
		tgid   uint32
		perCPU []httpTgidDrops
	)
	it := m.Iterate()
	for it.Next(&tgid, &perCPU) {
		var sum httpTgidDrops
		for _, d := range perCPU {
			sum.Starts += d.Starts
			sum.Refunds += d.Refunds
		}
		out[tgid] = sum
	}
	return out
}

// values are a process's counters now, k its kernel drop counts.
func (ps *procStats) values(k httpTgidDrops) [nSvcCounters]uint64 {
	var v [nSvcCounters]uint64
	if refunds := k.Refunds + ps.refunds; k.Starts > refunds {
		v[cDroppedRing] = k.Starts - refunds
	}
	v[cDroppedLost] = ps.Lost.Load()
	v[cDroppedOverflow] = ps.Overflow.Load()
	v[cIncomplete] = ps.Incomplete.Load()
	v[cMalformed] = ps.Malformed.Load() + ps.Unpaired.Load()
	v[cRouteOverflow] = ps.routeOverflow.Load()
	v[cSpansDropped] = ps.spanDrops.Load()
	v[cAddressOverflow] = ps.addressOverflow.Load()
	return v
}

// procTotals are the sums over every service.
type procTotals struct {
	droppedStarts, lost, overflow, incomplete, malformed, routeOverflow, spansDropped uint64
}

// observeProcs reports each service's counters that are not zero (nothing
// is said about a service that lost nothing), ins in the order of the
// c* constants, and returns the sums over every service. o nil only sums.
func (c *Collector) observeProcs(o metric.Observer, ins ...metric.Int64Observable) procTotals {
	kd := c.kernelDrops()
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	for tgid := range kd {
		c.statsForLocked(tgid)
	}
	for _, s := range c.svcs {
		s.sum = s.retired
	}
	for tgid, ps := range c.procs {
		v := ps.values(kd[tgid])
		for i := range v {
			ps.svc.sum[i] += v[i]
		}
	}
	var total [nSvcCounters]uint64
	for _, s := range c.svcs {
		for i, v := range s.sum {
			total[i] += v
			if o != nil && v > 0 && i < len(ins) {
				o.ObserveInt64(ins[i], int64(v), s.opts[i])
			}
		}
	}
	return procTotals{
		droppedStarts: total[cDroppedRing], lost: total[cDroppedLost], overflow: total[cDroppedOverflow],
		incomplete: total[cIncomplete], malformed: total[cMalformed],
		routeOverflow: total[cRouteOverflow], spansDropped: total[cSpansDropped],
	}
}

// retireProcs forgets the processes gone for retainDead, their counts
// folded into their service's; a service with no process left and nothing
// counted is forgotten too.
func (c *Collector) retireProcs(isDead func(uint32) bool, now time.Time) {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	for tgid, ps := range c.procs {
		if !isDead(tgid) {
			ps.deadSince = time.Time{}
			continue
		}
		if ps.deadSince.IsZero() {
			ps.deadSince = now
			continue
		}
		if now.Sub(ps.deadSince) < retainDead {
			continue
		}
		var k httpTgidDrops
		if c.loader != nil {
			var perCPU []httpTgidDrops
			if err := c.loader.Map(httpMapDrops).Lookup(tgid, &perCPU); err == nil {
				for _, d := range perCPU {
					k.Starts += d.Starts
					k.Refunds += d.Refunds
				}
			}
			c.loader.Map(httpMapDrops).Delete(tgid)
		}
		v := ps.values(k)
		s := ps.svc
		for i := range v {
			s.retired[i] += v[i]
		}
		s.procs--
		delete(c.procs, tgid)
		if s.procs == 0 && s.retired == ([nSvcCounters]uint64{}) {
			delete(c.svcs, s.key)
		}
	}
}

package httpc

import (
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// procStats is what one process lost or could not parse; the drop
// counters are reported with its identity, so they land on its service.
type procStats struct {
	Stats
	refunds   uint64 // dropped request starts cut off by the process's exit (housekeeping)
	deadSince time.Time
	ring      metric.ObserveOption
	lost      metric.ObserveOption
	over      metric.ObserveOption
	base      metric.ObserveOption
}

// retainDead is how long the counters of an exited process keep being
// reported before they are forgotten.
const retainDead = 5 * time.Minute

// statsFor returns the counters of a process, creating them with its
// identity (read now, while it runs).
func (c *Collector) statsFor(tgid uint32) *procStats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	return c.statsForLocked(tgid)
}

func (c *Collector) statsForLocked(tgid uint32) *procStats {
	if ps := c.procs[tgid]; ps != nil {
		return ps
	}
	var kv []attribute.KeyValue
	if c.deps.Processes != nil {
		kv = append(kv, c.deps.Processes.Lookup(tgid).Attributes()...)
	}
	with := func(extra ...attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(append(kv[:len(kv):len(kv)], extra...)...))
	}
	reason := attribute.Key("reason")
	ps := &procStats{
		ring: with(reason.String("ringbuf_full")),
		lost: with(reason.String("records_lost")),
		over: with(reason.String("pipeline_overflow")),
		base: with(),
	}
	c.procs[tgid] = ps
	return ps
}

// kernelDrops sums the kernel's per-process drop counters.
func (c *Collector) kernelDrops() map[uint32]httpTgidDrops {
	out := map[uint32]httpTgidDrops{}
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

// procTotals are the sums over every process.
type procTotals struct {
	droppedStarts, lost, overflow, incomplete, malformed uint64
}

// observeProcs reports the per-process counters and returns their sums.
func (c *Collector) observeProcs(o metric.Observer, dropped, incomplete, malformed metric.Int64Observable) procTotals {
	kd := c.kernelDrops()
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	for tgid := range kd {
		c.statsForLocked(tgid)
	}
	var t procTotals
	for tgid, ps := range c.procs {
		k := kd[tgid]
		ring := uint64(0)
		if refunds := k.Refunds + ps.refunds; k.Starts > refunds {
			ring = k.Starts - refunds
		}
		lost, over, inc := ps.Lost.Load(), ps.Overflow.Load(), ps.Incomplete.Load()
		mal := ps.Malformed.Load() + ps.Unpaired.Load()
		t.droppedStarts += ring
		t.lost += lost
		t.overflow += over
		t.incomplete += inc
		t.malformed += mal
		if o == nil {
			continue
		}
		o.ObserveInt64(dropped, int64(ring), ps.ring)
		o.ObserveInt64(dropped, int64(lost), ps.lost)
		o.ObserveInt64(dropped, int64(over), ps.over)
		o.ObserveInt64(incomplete, int64(inc), ps.base)
		o.ObserveInt64(malformed, int64(mal), ps.base)
	}
	return t
}

// retireProcs forgets the counters of processes gone for retainDead.
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
		if now.Sub(ps.deadSince) >= retainDead {
			delete(c.procs, tgid)
			c.loader.Map(httpMapDrops).Delete(tgid)
		}
	}
}

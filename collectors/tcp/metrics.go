package tcp

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/metric"
)

type observables struct {
	opened, closed, failed, io, retransmits, resets, folded metric.Int64ObservableCounter
	active                                                  metric.Int64ObservableUpDownCounter
}

func (c *Collector) instruments() error {
	m := c.deps.Meter
	var (
		o   observables
		err error
	)
	counter := func(dst *metric.Int64ObservableCounter, name, unit, desc string) {
		if err != nil {
			return
		}
		*dst, err = m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	}
	counter(&o.opened, "otelbee.tcp.connection.opened", "{connection}", "TCP connections established (outbound: connect completed; inbound: handshake completed).")
	counter(&o.closed, "otelbee.tcp.connection.closed", "{connection}", "Established TCP connections that closed.")
	counter(&o.failed, "otelbee.tcp.connection.failed", "{connection}", "Outbound connects that failed before being established, by error.type.")
	counter(&o.io, "otelbee.tcp.connection.io", "By", "TCP payload bytes transmitted and received by the process.")
	counter(&o.retransmits, "otelbee.tcp.retransmits", "{segment}", "Retransmitted TCP segments.")
	counter(&o.resets, "otelbee.tcp.resets", "{reset}", "TCP resets sent (transmit) and received (receive).")
	counter(&o.folded, "otelbee.tcp.peers.folded", "{connection}", "Connections whose peer address was folded into network.peer.address=_OTHER because their process had tcp.max_peers_per_process peers already.")
	if err != nil {
		return fmt.Errorf("creating tcp instruments: %w", err)
	}
	o.active, err = m.Int64ObservableUpDownCounter("otelbee.tcp.connection.active", metric.WithUnit("{connection}"),
		metric.WithDescription("Established TCP connections open now (among those set up while the agent ran)."))
	if err != nil {
		return fmt.Errorf("creating tcp instruments: %w", err)
	}
	c.reg, err = m.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		return c.observe(obs, o)
	}, o.opened, o.closed, o.failed, o.io, o.retransmits, o.resets, o.active, o.folded)
	if err != nil {
		return fmt.Errorf("registering tcp callback: %w", err)
	}
	return nil
}

// observe reports the kernel's cumulative per-CPU sums. It runs once per
// collection (scrape or export), not per event.
func (c *Collector) observe(obs metric.Observer, o observables) error {
	var (
		retire []retiring
		totals = map[*seriesAttrs]*tcpConnCounters{}
		order  []*seriesAttrs
	)
	c.mu.Lock()
	// Every exit on the host is reported, most of them by processes without
	// TCP series: only pids met in the stats map below cost kernel work.
	retired := make(map[uint32]retireState, len(c.retired))
	now := time.Now()
	for pid, since := range c.retired {
		if now.Sub(since) >= c.cfg.RetireAfter {
			retired[pid] = retireUnseen
		}
	}
	// Series that only retired kernel series fed: their carried values.
	for a := range c.idle {
		t := a.carried
		totals[a] = &t
		order = append(order, a)
	}
	c.mu.Unlock()

	err := c.statsReader.each(func(key *tcpConnKey, perCPU []tcpConnCounters) {
		var sum tcpConnCounters
		for i := range perCPU {
			addCounters(&sum, &perCPU[i])
		}
		a := c.attrsFor(*key)
		t, ok := totals[a]
		if !ok {
			c.mu.Lock()
			carried := a.carried
			c.mu.Unlock()
			t = &carried
			totals[a] = t
			order = append(order, a)
		}
		addCounters(t, &sum)
		if st, ok := retired[key.Tgid]; ok && st != retireKeep {
			if sum.Opened == sum.Closed {
				retire = append(retire, retiring{*key, sum})
				retired[key.Tgid] = retireDone
			} else {
				// A connection outlived its process (passed to a child):
				// keep the pid's series until it closes.
				retired[key.Tgid] = retireKeep
			}
		}
	})
	if err != nil {
		return fmt.Errorf("reading conn_stats: %w", err)
	}
	// Kernel series folded into one series (_OTHER peer, one instance's
	// processes) are observed once, summed.
	for _, a := range order {
		t := totals[a]
		obs.ObserveInt64(o.opened, int64(t.Opened), a.obsBase)
		obs.ObserveInt64(o.closed, int64(t.Closed), a.obsBase)
		obs.ObserveInt64(o.active, int64(t.Opened)-int64(t.Closed), a.obsBase)
		for f, n := range t.Failed {
			if n > 0 {
				obs.ObserveInt64(o.failed, int64(n), a.failed[f])
			}
		}
		obs.ObserveInt64(o.io, int64(t.BytesSent), a.sent)
		obs.ObserveInt64(o.io, int64(t.BytesReceived), a.received)
		obs.ObserveInt64(o.retransmits, int64(t.Retransmits), a.obsBase)
		obs.ObserveInt64(o.resets, int64(t.ResetsSent), a.sent)
		obs.ObserveInt64(o.resets, int64(t.ResetsReceived), a.received)
	}
	k := c.kernelCounters()
	obs.ObserveInt64(o.folded, int64(k[tcpTcpCounterCOUNTER_PEERS_FOLDED]+c.folded.Load()))
	// The exited process's last values were just reported; now its kernel
	// series go, their values staying in the instance's series.
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range retire {
		r := &retire[i]
		var h tcpConnHist
		hp := &h
		if c.hists.Lookup(r.key, &h) != nil {
			hp = nil
		}
		c.unref(r.key, &r.sum, hp)
		c.stats.Delete(r.key)
		c.hists.Delete(r.key)
		c.peerSet.Delete(tcpPeerKey{Peer: r.key.Peer, Tgid: r.key.Tgid})
	}
	for pid, st := range retired {
		switch st {
		case retireKeep:
			continue
		case retireDone:
			// Its kernel budget entry exists only if it had series.
			c.peerCounts.Delete(pid)
		}
		delete(c.retired, pid)
		delete(c.peers, pid)
	}
	c.forgetIdle()
	return nil
}

// retiring is a kernel series to delete, with its last values.
type retiring struct {
	key tcpConnKey
	sum tcpConnCounters
}

// retireState is what one collection found of an exited process's series.
type retireState uint8

const (
	retireUnseen retireState = iota // no series in the kernel: nothing to delete there
	retireDone                      // every series closed: deleted this collection
	retireKeep                      // a connection outlived the process: kept
)

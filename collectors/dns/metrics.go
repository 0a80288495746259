package dns

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/collectors/hook"
)

type instruments struct {
	packets, retransmits, unanswered, unmatched, folded, dropped, seriesOverflow metric.Int64ObservableCounter
	pending                                                                      metric.Int64ObservableGauge
}

var (
	keyMessageType = attribute.Key("otelbee.dns.message.type")
	keyOutcome     = attribute.Key("outcome")
	keyStage       = attribute.Key("stage")
)

// The self-metric attribute sets, built once.
var (
	attrQuerySeen         = metric.WithAttributes(keyMessageType.String("query"), keyOutcome.String("seen"))
	attrQueryParsed       = metric.WithAttributes(keyMessageType.String("query"), keyOutcome.String("parsed"))
	attrQueryUnparseable  = metric.WithAttributes(keyMessageType.String("query"), keyOutcome.String("unparseable"))
	attrAnswerSeen        = metric.WithAttributes(keyMessageType.String("response"), keyOutcome.String("seen"))
	attrAnswerParsed      = metric.WithAttributes(keyMessageType.String("response"), keyOutcome.String("parsed"))
	attrAnswerUnparseable = metric.WithAttributes(keyMessageType.String("response"), keyOutcome.String("unparseable"))
	attrLocationKernel    = metric.WithAttributes(attribute.String("location", "kernel"))
	attrLocationAgent     = metric.WithAttributes(attribute.String("location", "agent"))
	attrReasonTimeout     = metric.WithAttributes(attribute.String("reason", "timeout"))
	attrReasonClosed      = metric.WithAttributes(attribute.String("reason", "client_closed"))
	stageRingbuf          = keyStage.String("ringbuf")
	stagePendingMap       = keyStage.String("pending_map")
)

func (c *Collector) createInstruments() error {
	m := c.deps.Meter
	var err error
	counter := func(dst *metric.Int64ObservableCounter, name, unit, desc string) {
		if err != nil {
			return
		}
		*dst, err = m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	}
	counter(&c.inst.packets, "otelbee.dns.packets", "{packet}", "DNS client packets: seen in the kernel, then parsed or unparseable in the agent, by otelbee.dns.message.type (query, response).")
	counter(&c.inst.retransmits, "otelbee.dns.queries.retransmitted", "{query}", "Queries sent again on the same socket with the same id while the first was pending (counted once as a lookup).")
	counter(&c.inst.unanswered, "otelbee.dns.queries.unanswered", "{query}", "Queries without an answer (recorded with error.type=timeout), by reason: the client closed its socket first (client_closed, recorded when it did), or dns.timeout passed (timeout).")
	counter(&c.inst.unmatched, "otelbee.dns.responses.unmatched", "{response}", "Answers with no pending query: late (after the timeout), to unparseable queries, or to queries sent before the agent started.")
	counter(&c.inst.folded, "otelbee.dns.question.names.folded", "{lookup}", "Lookups whose question name was folded into "+OverflowName+" because the service had used its budget of distinct names.")
	counter(&c.inst.seriesOverflow, "otelbee.dns.series.overflow", "{lookup}", "Lookups recorded in the series marked otel.metric.overflow=true, because their own series would have passed dns.max_series.")
	counter(&c.inst.dropped, "otelbee.dns.lookups.dropped", "{lookup}", "Lookups of a process lost before the agent could record them, by stage (ring buffer full, pending map full).")
	if err != nil {
		return fmt.Errorf("creating dns instruments: %w", err)
	}
	c.inst.pending, err = m.Int64ObservableGauge("otelbee.dns.queries.pending", metric.WithUnit("{query}"),
		metric.WithDescription("Queries waiting for an answer, in the kernel map and in the agent."))
	if err != nil {
		return fmt.Errorf("creating dns instruments: %w", err)
	}
	c.reg, err = m.RegisterCallback(c.observe,
		c.inst.packets, c.inst.retransmits, c.inst.unanswered, c.inst.unmatched, c.inst.folded, c.inst.dropped, c.inst.seriesOverflow, c.inst.pending)
	if err != nil {
		return fmt.Errorf("registering dns callback: %w", err)
	}
	return nil
}

// observe reports the kernel's and the agent's counters, once per collection.
func (c *Collector) observe(_ context.Context, o metric.Observer) error {
	k := hook.SumCounters(c.counters, int(dnsDnsCounterCOUNTER_MAX))
	st := &c.stats
	i := &c.inst
	o.ObserveInt64(i.packets, int64(k[dnsDnsCounterCOUNTER_QUERIES]), attrQuerySeen)
	o.ObserveInt64(i.packets, int64(st.queriesParsed.Load()), attrQueryParsed)
	o.ObserveInt64(i.packets, int64(st.queriesBad.Load()), attrQueryUnparseable)
	o.ObserveInt64(i.packets, int64(k[dnsDnsCounterCOUNTER_RESPONSES]), attrAnswerSeen)
	o.ObserveInt64(i.packets, int64(st.responsesParsed.Load()), attrAnswerParsed)
	o.ObserveInt64(i.packets, int64(st.responsesBad.Load()), attrAnswerUnparseable)
	o.ObserveInt64(i.retransmits, int64(k[dnsDnsCounterCOUNTER_RETRANSMITS]))
	o.ObserveInt64(i.unanswered, int64(st.timeouts.Load()), attrReasonTimeout)
	o.ObserveInt64(i.unanswered, int64(st.clientGaveUp.Load()), attrReasonClosed)
	o.ObserveInt64(i.unmatched, int64(k[dnsDnsCounterCOUNTER_UNMATCHED]), attrLocationKernel)
	o.ObserveInt64(i.unmatched, int64(st.unmatched.Load()), attrLocationAgent)
	o.ObserveInt64(i.folded, int64(st.folded.Load()))
	o.ObserveInt64(i.seriesOverflow, int64(st.seriesOverflow.Load()))
	if n, err := c.PendingInKernel(); err == nil {
		o.ObserveInt64(i.pending, int64(n), attrLocationKernel)
	}
	o.ObserveInt64(i.pending, st.pendingAgentCount.Load(), attrLocationAgent)

	if c.drops == nil {
		return nil
	}
	var (
		tgid   uint32
		perCPU []dnsProcDrops
	)
	it := c.drops.Iterate()
	for it.Next(&tgid, &perCPU) {
		var sum dnsProcDrops
		for _, v := range perCPU {
			sum.Ringbuf += v.Ringbuf
			sum.PendingFull += v.PendingFull
		}
		proc := c.deps.Processes.Lookup(tgid).Attributes()
		with := func(stage attribute.KeyValue) metric.ObserveOption {
			return metric.WithAttributes(append(proc[:len(proc):len(proc)], stage)...)
		}
		o.ObserveInt64(i.dropped, int64(sum.Ringbuf), with(stageRingbuf))
		if sum.PendingFull > 0 {
			o.ObserveInt64(i.dropped, int64(sum.PendingFull), with(stagePendingMap))
		}
	}
	return it.Err()
}

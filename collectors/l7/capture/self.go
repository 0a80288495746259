package capture

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/collectors/hook"
)

// selfMetrics registers the layer's own counters, by protocol: connections
// the kernel decided, records received, records dropped in the kernel.
func (e *Engine) selfMetrics(m metric.Meter) (metric.Registration, error) {
	conns, err := m.Int64ObservableCounter("otelbee.l7.connections", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections the L7 capture classified, by protocol (an enabled protocol's start seen on them)."))
	if err != nil {
		return nil, err
	}
	records, err := m.Int64ObservableCounter("otelbee.l7.records", metric.WithUnit("{record}"),
		metric.WithDescription("Records (one per read or write) of classified connections received by the agent, by protocol."))
	if err != nil {
		return nil, err
	}
	dropped, err := m.Int64ObservableCounter("otelbee.l7.records.dropped", metric.WithUnit("{record}"),
		metric.WithDescription("Records of classified connections the kernel could not send, by protocol and reason (ringbuf_full)."))
	if err != nil {
		return nil, err
	}
	clientSide, err := m.Int64ObservableCounter("otelbee.l7.connections.client_side", metric.WithUnit("{connection}"),
		metric.WithDescription("Server-side connections of a protocol recorded from the client's side (databases, caches, Kafka) that the kernel gave up because their client end is tracked on this host, by protocol: their exchanges are counted under the client."))
	if err != nil {
		return nil, err
	}
	var protos []Proto
	for p := ProtoHTTP1; p < protoMax; p++ {
		if e.enabled&(1<<p) != 0 {
			protos = append(protos, p)
		}
	}
	opts := make([]metric.ObserveOption, protoMax)
	dropOpts := make([]metric.ObserveOption, protoMax)
	for _, p := range protos {
		a := attribute.String("protocol", p.String())
		opts[p] = metric.WithAttributeSet(attribute.NewSet(a))
		dropOpts[p] = metric.WithAttributeSet(attribute.NewSet(a, attribute.String("reason", "ringbuf_full")))
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		k := hook.SumCounters(e.counters, CounterSlots)
		for _, p := range protos {
			o.ObserveInt64(conns, int64(k[protoConnsSlot(p)]), opts[p])
			o.ObserveInt64(records, int64(e.records[p].Load()), opts[p])
			o.ObserveInt64(dropped, int64(k[protoDropsSlot(p)]), dropOpts[p])
			if e.clientSide.Load()&(1<<p) != 0 {
				o.ObserveInt64(clientSide, int64(k[protoClientSideSlot(p)]), opts[p])
			}
		}
		return nil
	}, conns, records, dropped, clientSide)
}

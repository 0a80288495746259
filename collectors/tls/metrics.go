package tls

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/process/identity"
)

// RegisterMetrics exports the attacher's counts as self-metrics (see
// docs/tls.md).
func (a *Attacher) RegisterMetrics(m metric.Meter) (metric.Registration, error) {
	files, err := m.Int64ObservableGauge("otelbee.tls.files", metric.WithUnit("{file}"),
		metric.WithDescription("Files (TLS libraries and executables) with a TLS uprobe set attached now."))
	if err != nil {
		return nil, err
	}
	probes, err := m.Int64ObservableGauge("otelbee.tls.probes", metric.WithUnit("{probe}"),
		metric.WithDescription("TLS uprobes attached now, over all files."))
	if err != nil {
		return nil, err
	}
	unobserved, err := m.Int64ObservableCounter("otelbee.tls.processes.unobserved", metric.WithUnit("{process}"),
		metric.WithDescription("Processes found using TLS whose plaintext cannot be read, per service, TLS stack and reason."))
	if err != nil {
		return nil, err
	}
	dropped, err := m.Int64ObservableCounter("otelbee.tls.events.dropped", metric.WithUnit("{event}"),
		metric.WithDescription("Process exec and exit events the TLS attacher had no room for (the periodic rescan repairs them)."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := a.Stats()
		o.ObserveInt64(files, int64(s.Files))
		o.ObserveInt64(probes, int64(s.Probes))
		o.ObserveInt64(dropped, int64(s.EventsDropped))
		for k, v := range s.Unobserved {
			kv := []attribute.KeyValue{identity.KeyServiceName.String(k.Service),
				attribute.String("otelbee.tls.stack", string(k.Stack)), attribute.String("reason", string(k.Reason))}
			if k.Namespace != "" {
				kv = append(kv, identity.KeyServiceNamespace.String(k.Namespace))
			}
			o.ObserveInt64(unobserved, int64(v), metric.WithAttributes(kv...))
		}
		return nil
	}, files, probes, unobserved, dropped)
}

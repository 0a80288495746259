package tcp

import (
	"context"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/otelbee/otelbee/collectors/aggregate"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Histogram bucket upper bounds, in seconds, for the kernel-side histograms
// (bpf/tcp.c reads them as ns and µs). RTT buckets are dense around the
// 1-50 ms of real networks so that quantile estimates land within a few
// percent.
var (
	durationBounds = [tcpDurationBounds]float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	rttBounds      = [tcpRttBounds]float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.0225, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5}
)

// The sizes bpf/tcp.c compiles with (DURATION_BOUNDS, RTT_BOUNDS); a
// mismatch with the generated struct fails to compile here.
const (
	tcpDurationBounds = len(tcpConnHist{}.Duration) - 1
	tcpRttBounds      = len(tcpConnHist{}.Rtt) - 1
)

// setBounds writes the bounds into the object's read-only data.
func setBounds(spec *ebpf.CollectionSpec) error {
	var dur [tcpDurationBounds]uint64
	for i, s := range durationBounds {
		dur[i] = uint64(s * 1e9)
	}
	var rtt [tcpRttBounds]uint64
	for i, s := range rttBounds {
		rtt[i] = uint64(s * 1e6)
	}
	if err := spec.Variables[tcpVarDurationBoundsNs].Set(dur); err != nil {
		return fmt.Errorf("setting duration bounds: %w", err)
	}
	if err := spec.Variables[tcpVarRttBoundsUs].Set(rtt); err != nil {
		return fmt.Errorf("setting rtt bounds: %w", err)
	}
	return nil
}

// Produce implements sdkmetric.Producer: the kernel's histograms as
// cumulative OpenTelemetry histograms, one data point per series.
func (c *Collector) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	var (
		dur  []metricdata.HistogramDataPoint[float64]
		rtts []metricdata.HistogramDataPoint[float64]
	)
	// The kernel series of a histogram series (histGroup: its instance's
	// processes, peers and ports, or with PeerHistograms one counter
	// series' processes) are summed, with what their retired kernel
	// series left (histGroup.carried).
	totals := map[*histGroup]*tcpConnHist{}
	c.mu.Lock()
	order := make([]*histGroup, 0, len(c.groups)+1)
	for _, g := range c.groups {
		t := g.carried
		totals[g] = &t
		order = append(order, g)
	}
	c.mu.Unlock()
	err := c.histsReader.each(func(key *tcpConnKey, h []tcpConnHist) {
		g := c.attrsFor(*key).group
		t, ok := totals[g]
		if !ok {
			// Made since the snapshot above: nothing carried yet.
			t = &tcpConnHist{}
			totals[g] = t
			order = append(order, g)
		}
		addHist(t, &h[0])
	})
	if err != nil {
		return nil, fmt.Errorf("reading conn_hists: %w", err)
	}
	for _, g := range order {
		h := totals[g]
		if p, ok := histPoint(h.Duration[:], durationBounds[:], float64(h.DurationSumNs)/1e9); ok {
			p.Attributes, p.StartTime, p.Time = g.set, c.start, now
			dur = append(dur, p)
		}
		if p, ok := histPoint(h.Rtt[:], rttBounds[:], float64(h.RttSumUs)/1e6); ok {
			p.Attributes, p.StartTime, p.Time = g.set, c.start, now
			rtts = append(rtts, p)
		}
	}
	return []metricdata.ScopeMetrics{{
		Scope: instrumentation.Scope{Name: "github.com/otelbee/otelbee/collectors/tcp"},
		Metrics: []metricdata.Metrics{
			aggregate.Metric("otelbee.tcp.connection.duration", "s", "Time from establishment to close of TCP connections.", dur),
			aggregate.Metric("otelbee.tcp.connection.rtt", "s", "Smoothed round-trip time of each TCP connection when it closes.", rtts),
		},
	}}, nil
}

// histPoint turns kernel bucket counts (the last one +Inf) into a data
// point; ok is false for an empty histogram.
func histPoint(counts []uint64, bounds []float64, sum float64) (metricdata.HistogramDataPoint[float64], bool) {
	var total uint64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return metricdata.HistogramDataPoint[float64]{}, false
	}
	return metricdata.HistogramDataPoint[float64]{
		Count:        total,
		Bounds:       bounds,
		BucketCounts: append([]uint64(nil), counts...),
		Sum:          sum,
	}, true
}

func addHist(dst, src *tcpConnHist) {
	for i := range dst.Duration {
		dst.Duration[i] += src.Duration[i]
	}
	for i := range dst.Rtt {
		dst.Rtt[i] += src.Rtt[i]
	}
	dst.DurationSumNs += src.DurationSumNs
	dst.RttSumUs += src.RttSumUs
}

package capture

import (
	"context"
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors/aggregate"
	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/collectors/series"
	"github.com/otelbee/otelbee/exporters/spans"
	"github.com/otelbee/otelbee/process/identity"
)

// defaultDurationBuckets are the conventions' advice for durations in
// seconds (as HTTP's).
var defaultDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// retainDead is how long the series of an exited process keep being
// reported (the series table's).
const retainDead = series.DefaultRetainDead

var (
	keyServerAddress = attribute.Key("server.address")
	keyServerPort    = attribute.Key("server.port")
	keyErrorType     = attribute.Key("error.type")
	keyTransport     = attribute.Key("network.transport")
)

// seriesKey names one series: the process's instance, its role, the
// metric, the peer (a client's server.address/.port), error.type and the
// exchange's attributes by hash and count (compared in full on a hit).
type seriesKey struct {
	pid    uint32
	role   l7.Role
	metric int
	peer   netip.AddrPort
	err    string
	hash   uint64
	nattr  int
}

// sinkMetrics are one series' points: a Duration metric's histogram or a
// MessageCount metric's sum.
type sinkMetrics struct {
	dur aggregate.Histogram[float64]
	sum int64
}

type sinkSeries = series.Series[seriesKey, sinkMetrics]

// Sink records one protocol's exchanges on the metrics it declares, in one
// series table for all of them (package series: attribute sets per
// process, role, metric; a cap past which exchanges go to one overflow
// series per metric, marked otel.metric.overflow=true; retirement of exited
// processes; exemplars of sampled spans), starts a span per sampled
// exchange with the series' cached attributes, and counts the drops its
// parsers report, per service.
type Sink struct {
	proto     l7.Protocol
	eng       *Engine
	processes *identity.Resolver
	sampler   sdktrace.Sampler
	emitter   spans.Emitter // nil: no spans
	specs     map[l7.Role][]l7.MetricSpec
	groups    map[metricKey]int // a metric's overflow group in the table
	seed      maphash.Seed

	series *series.Table[seriesKey, sinkMetrics]

	mu    sync.Mutex // drops
	drops map[dropKey]uint64

	recorded       atomic.Uint64
	seriesOverflow atomic.Uint64
}

type metricKey struct {
	role   l7.Role
	metric int
}

type dropKey struct {
	svc, ns, reason string
}

// NewSink returns the sink of protocol p on engine e.
func NewSink(e *Engine, p l7.Protocol) *Sink {
	s := &Sink{
		proto:     p,
		eng:       e,
		processes: e.deps.Processes,
		specs:     map[l7.Role][]l7.MetricSpec{l7.RoleClient: p.Metrics(l7.RoleClient), l7.RoleServer: p.Metrics(l7.RoleServer)},
		groups:    map[metricKey]int{},
		seed:      maphash.MakeSeed(),
		drops:     map[dropKey]uint64{},
	}
	for _, role := range []l7.Role{l7.RoleServer, l7.RoleClient} {
		for _, spec := range s.specs[role] {
			s.groups[metricKey{role, spec.Index}] = len(s.groups)
		}
	}
	maxSeries := e.cfg.MaxSeries
	if maxSeries <= 0 {
		maxSeries = DefaultConfig().MaxSeries
	}
	s.series = series.New[seriesKey, sinkMetrics](series.Config{
		Name: p.Name(), MaxSeries: maxSeries, Groups: len(s.groups),
		Processes: e.deps.Processes, Budget: e.deps.SeriesBudget, RetainDead: retainDead,
	})
	if tp := e.deps.TracerProvider; tp != nil && e.cfg.Spans {
		s.emitter = spans.EmitterOf(tp.Tracer("github.com/otelbee/otelbee/collectors/l7/" + p.Name()))
		s.sampler = e.deps.Sampler
	}
	return s
}

// spec returns the metric an exchange names, or nil (a parser bug, dropped).
func (s *Sink) spec(role l7.Role, i int) *l7.MetricSpec {
	specs := s.specs[role]
	for j := range specs {
		if specs[j].Index == i {
			return &specs[j]
		}
	}
	return nil
}

func (s *Sink) hashAttrs(x *l7.Exchange) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	for i := 0; i < x.NAttr; i++ {
		kv := x.Attrs[i]
		h.WriteString(string(kv.Key))
		h.WriteByte(0)
		switch kv.Value.Type() {
		case attribute.STRING:
			h.WriteString(kv.Value.AsString())
		case attribute.INT64:
			var b [8]byte
			v := uint64(kv.Value.AsInt64())
			for j := range b {
				b[j] = byte(v >> (8 * j))
			}
			h.Write(b[:])
		case attribute.BOOL:
			if kv.Value.AsBool() {
				h.WriteByte(1)
			} else {
				h.WriteByte(2)
			}
		case attribute.FLOAT64:
			v := math.Float64bits(kv.Value.AsFloat64())
			var b [8]byte
			for j := range b {
				b[j] = byte(v >> (8 * j))
			}
			h.Write(b[:])
		default:
			h.WriteString(kv.Value.Emit())
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}

// sameAttrs compares a series' own attributes (its span attributes begin
// with the exchange's, after the identity) with an exchange's.
func sameAttrs(ser *sinkSeries, x *l7.Exchange) bool {
	a := ser.Span[ser.IdentLen:]
	if len(a) < x.NAttr {
		return false
	}
	for i := 0; i < x.NAttr; i++ {
		if a[i] != x.Attrs[i] {
			return false
		}
	}
	return true
}

// Exchange implements l7.Sink.
func (s *Sink) Exchange(c *l7.Conn, x *l7.Exchange) {
	spec := s.spec(c.Role, x.Metric)
	if spec == nil {
		s.Drop(c, "malformed", 1)
		return
	}
	ser := s.seriesOf(c, x)
	if ser.Overflowed {
		s.seriesOverflow.Add(1)
	}
	var sc trace.SpanContext
	if s.emitter != nil {
		sc = s.span(c, x, ser)
	}
	s.series.Lock()
	m := ser.M
	switch spec.Kind {
	case l7.Duration:
		d := float64(0)
		if x.End > x.Start {
			d = float64(x.End-x.Start) / 1e9
		}
		b := spec.Buckets
		if b == nil {
			b = defaultDurationBuckets
		}
		if sc.IsSampled() {
			m.dur.RecordSampled(b, d, s.eng.Wall(x.End), sc)
		} else {
			m.dur.Record(b, d)
		}
	case l7.MessageCount:
		m.sum += x.Messages
	}
	s.series.Unlock()
	s.recorded.Add(1)
}

// seriesOf returns the series of x on c: the table's, or a new one.
func (s *Sink) seriesOf(c *l7.Conn, x *l7.Exchange) *sinkSeries {
	// one series per instance (a worker pool's server, a service's
	// short-lived processes folded), not per process: process/identity.Owner
	k := seriesKey{pid: s.processes.Owner(c.PID), role: c.Role, metric: x.Metric, err: x.Error, hash: s.hashAttrs(x), nattr: x.NAttr}
	if c.Role == l7.RoleClient {
		k.peer = c.Peer
	}
	ser := s.series.Get(k)
	if ser == nil || !sameAttrs(ser, x) {
		ser = s.newSeries(k, c, x)
	}
	return ser
}

// newSeries renders the attributes of k's series once: kept unless the
// table is full (then the metric's overflow series records it; its spans
// keep their attributes).
func (s *Sink) newSeries(k seriesKey, c *l7.Conn, x *l7.Exchange) *sinkSeries {
	own := x.Attrs[:x.NAttr]
	n := x.NAttr + 4
	point := append(make([]attribute.KeyValue, 0, n), own...)
	span := append(make([]attribute.KeyValue, 0, n), own...)
	if c.Role == l7.RoleClient && c.Peer.IsValid() && !hasKey(own, keyServerAddress) {
		addr := []attribute.KeyValue{keyServerAddress.String(c.Peer.Addr().String()), keyServerPort.Int(int(c.Peer.Port()))}
		point = append(point, addr...)
		span = append(span, addr...)
	}
	if !c.Peer.IsValid() {
		point = append(point, keyTransport.String("unix"))
	}
	if k.err != "" {
		point = append(point, keyErrorType.String(k.err))
		span = append(span, keyErrorType.String(k.err))
	}
	return s.series.Add(k, k.pid, s.groups[metricKey{k.role, k.metric}], series.Attrs{Point: point, Span: span})
}

// span emits the span of a sampled exchange (unsampled: only the decision
// is paid) and returns its context, for the exemplar. Its attributes are
// its series' (identity included, prepared once) and the exchange's
// span-only ones.
func (s *Sink) span(c *l7.Conn, x *l7.Exchange, ser *sinkSeries) trace.SpanContext {
	kind := trace.SpanKindClient
	if c.Role == l7.RoleServer {
		kind = trace.SpanKindServer
	}
	var parent trace.SpanContext
	if x.HasParent {
		parent = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: x.TraceID, SpanID: x.ParentSpanID, TraceFlags: trace.TraceFlags(x.TraceFlags), Remote: true,
		})
	}
	name := x.SpanName
	if name == "" {
		name = s.proto.Name()
	}
	tid, sampled := sampling.Decide(s.sampler, parent, name, kind)
	if !sampled {
		return trace.SpanContext{}
	}
	f := spans.Finished{Name: name, Kind: kind, Start: s.eng.Wall(x.Start), End: s.eng.Wall(x.End),
		Parent: parent, TraceID: tid, Series: ser.SpanAttributes(s.emitter), Attrs: x.SpanAttrs[:x.NSpanAttr]}
	if x.StatusError {
		f.Status = codes.Error
	}
	return s.emitter.Emit(f)
}

// Drop implements l7.Sink: counted per service and reason.
func (s *Sink) Drop(c *l7.Conn, reason string, n int) {
	if n <= 0 {
		return
	}
	var k dropKey
	k.reason = reason
	if s.processes != nil {
		p := s.processes.Lookup(c.PID)
		k.svc, k.ns = p.ServiceName, p.ServiceNamespace
	}
	s.mu.Lock()
	s.drops[k] += uint64(n)
	s.mu.Unlock()
}

// Housekeep forgets the series of processes gone for retainDead.
func (s *Sink) Housekeep(isDead func(uint32) bool, now time.Time) {
	s.series.Housekeep(isDead, now)
}

// Produce implements sdkmetric.Producer: every declared metric, one point
// per series, cumulative.
func (s *Sink) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	start := s.eng.Start()
	type metricPoints struct {
		spec *l7.MetricSpec
		dur  *aggregate.Collection[float64]
		sum  metricdata.Sum[int64]
	}
	byGroup := make([]metricPoints, len(s.groups))
	var order []int
	for _, role := range []l7.Role{l7.RoleServer, l7.RoleClient} {
		for i := range s.specs[role] {
			spec := &s.specs[role][i]
			g := s.groups[metricKey{role, spec.Index}]
			mp := &byGroup[g]
			mp.spec = spec
			switch spec.Kind {
			case l7.Duration:
				b := spec.Buckets
				if b == nil {
					b = defaultDurationBuckets
				}
				mp.dur = aggregate.Collect[float64](ctx, b, start, now)
			case l7.MessageCount:
				mp.sum = metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
			}
			order = append(order, g)
		}
	}
	s.series.Each(func(ser *sinkSeries) {
		mp := &byGroup[ser.Group]
		if mp.spec == nil {
			return
		}
		switch mp.spec.Kind {
		case l7.Duration:
			if ser.M.dur.Count() > 0 {
				mp.dur.Add(&ser.M.dur, ser.Set)
			}
		case l7.MessageCount:
			if ser.M.sum > 0 {
				mp.sum.DataPoints = append(mp.sum.DataPoints, metricdata.DataPoint[int64]{
					Attributes: ser.Set, StartTime: start, Time: now, Value: ser.M.sum})
			}
		}
	})
	var ms []metricdata.Metrics
	for _, g := range order {
		mp := &byGroup[g]
		switch mp.spec.Kind {
		case l7.Duration:
			if mp.dur.Len() > 0 {
				ms = append(ms, mp.dur.Metric(mp.spec.Name, mp.spec.Unit, mp.spec.Description))
			}
		case l7.MessageCount:
			if len(mp.sum.DataPoints) > 0 {
				ms = append(ms, metricdata.Metrics{Name: mp.spec.Name, Unit: mp.spec.Unit, Description: mp.spec.Description, Data: mp.sum})
			}
		}
	}
	if len(ms) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{{
		Scope:   instrumentation.Scope{Name: "github.com/otelbee/otelbee/collectors/l7/" + s.proto.Name()},
		Metrics: ms,
	}}, nil
}

// selfMetrics registers the protocol's own counters: exchanges recorded,
// series past the cap, and exchanges its parsers gave up, per service.
func (s *Sink) selfMetrics(m metric.Meter) (metric.Registration, error) {
	proto := attribute.String("protocol", s.proto.Name())
	recorded, err := m.Int64ObservableCounter("otelbee.l7.exchanges", metric.WithUnit("{exchange}"),
		metric.WithDescription("Exchanges (requests with their responses, one-way messages) recorded, by protocol."))
	if err != nil {
		return nil, err
	}
	dropped, err := m.Int64ObservableCounter("otelbee.l7.exchanges.dropped", metric.WithUnit("{exchange}"),
		metric.WithDescription("Exchanges a protocol's parser gave up, per service, by protocol and reason (lost, incomplete, malformed, overflow, unpaired, undecodable)."))
	if err != nil {
		return nil, err
	}
	overflow, err := m.Int64ObservableCounter("otelbee.l7.series.overflow", metric.WithUnit("{exchange}"),
		metric.WithDescription("Exchanges recorded on a protocol's overflow series (otel.metric.overflow=true): past its series cap."))
	if err != nil {
		return nil, err
	}
	base := metric.WithAttributeSet(attribute.NewSet(proto))
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(recorded, int64(s.recorded.Load()), base)
		o.ObserveInt64(overflow, int64(s.seriesOverflow.Load()), base)
		s.mu.Lock()
		defer s.mu.Unlock()
		for k, n := range s.drops {
			kv := []attribute.KeyValue{proto, attribute.String("reason", k.reason)}
			if k.svc != "" {
				kv = append(kv, identity.KeyServiceName.String(k.svc))
			}
			if k.ns != "" {
				kv = append(kv, identity.KeyServiceNamespace.String(k.ns))
			}
			o.ObserveInt64(dropped, int64(n), metric.WithAttributeSet(attribute.NewSet(kv...)))
		}
		return nil
	}, recorded, dropped, overflow)
}

// hasKey reports whether a protocol set k itself (a client's server.address
// from :authority or Host wins over the peer's address).
func hasKey(kv []attribute.KeyValue, k attribute.Key) bool {
	for _, a := range kv {
		if a.Key == k {
			return true
		}
	}
	return false
}

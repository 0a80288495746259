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
	"go.opentelemetry.io/otel/trace"

	"github.com/otelbee/otelbee/collectors/aggregate"
	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/process/identity"
)

// defaultDurationBuckets are the conventions' advice for durations in
// seconds (as HTTP's).
var defaultDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// retainDead is how long the series of an exited process keep being
// reported: a short-lived client's exchanges are exported even if it exits
// before the next collection.
const retainDead = 5 * time.Minute

var (
	keyServerAddress = attribute.Key("server.address")
	keyServerPort    = attribute.Key("server.port")
	keyErrorType     = attribute.Key("error.type")
	keyTransport     = attribute.Key("network.transport")
)

// seriesKey names one series: the process, its role, the metric, the peer
// (a client's server.address/.port), error.type and the exchange's
// attributes by hash (compared in full on a hit).
type seriesKey struct {
	pid    uint32
	role   l7.Role
	metric int
	peer   netip.AddrPort
	err    string
	hash   uint64
}

type series struct {
	attrs []attribute.KeyValue // the exchange's, compared on a hash hit
	set   attribute.Set        // everything the points carry
	dur   aggregate.Histogram[float64]
	sum   int64 // MessageCount
}

type metricKey struct {
	role   l7.Role
	metric int
}

// Sink records one protocol's exchanges on the metrics it declares, one
// series table for all of them (attribute sets per process, role, metric;
// a cap past which exchanges go to one overflow series per metric, marked
// otel.metric.overflow=true; retirement of exited processes; exemplars of
// sampled spans), starts a span per sampled exchange, and counts the drops
// its parsers report, per service.
type Sink struct {
	proto     l7.Protocol
	eng       *Engine
	processes *identity.Resolver
	sampler   samplerFunc
	tracer    trace.Tracer
	maxSeries int
	specs     map[l7.Role][]l7.MetricSpec
	seed      maphash.Seed

	mu       sync.Mutex // series, overflow, dead, drops
	series   map[seriesKey]*series
	overflow map[metricKey]*series
	dead     map[uint32]time.Time
	drops    map[dropKey]uint64

	recorded       atomic.Uint64
	seriesOverflow atomic.Uint64
}

type samplerFunc func(ctx context.Context, name string, kind trace.SpanKind) (context.Context, bool)

type dropKey struct {
	svc, ns, reason string
}

var overflowSet = attribute.NewSet(attribute.Bool("otel.metric.overflow", true))

// NewSink returns the sink of protocol p on engine e.
func NewSink(e *Engine, p l7.Protocol) *Sink {
	s := &Sink{
		proto:     p,
		eng:       e,
		processes: e.deps.Processes,
		maxSeries: e.cfg.MaxSeries,
		specs:     map[l7.Role][]l7.MetricSpec{l7.RoleClient: p.Metrics(l7.RoleClient), l7.RoleServer: p.Metrics(l7.RoleServer)},
		seed:      maphash.MakeSeed(),
		series:    map[seriesKey]*series{},
		overflow:  map[metricKey]*series{},
		dead:      map[uint32]time.Time{},
		drops:     map[dropKey]uint64{},
	}
	if s.maxSeries <= 0 {
		s.maxSeries = DefaultConfig().MaxSeries
	}
	if tp := e.deps.TracerProvider; tp != nil && e.cfg.Spans {
		s.tracer = tp.Tracer("github.com/otelbee/otelbee/collectors/l7/" + p.Name())
		sampler := e.deps.Sampler
		s.sampler = func(ctx context.Context, name string, kind trace.SpanKind) (context.Context, bool) {
			return sampling.Decide(sampler, ctx, name, kind)
		}
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

func sameAttrs(a []attribute.KeyValue, x *l7.Exchange) bool {
	if len(a) != x.NAttr {
		return false
	}
	for i := range a {
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
	// one series per instance (a worker pool's server, a service's
	// short-lived processes folded), not per process: process/identity.Owner
	k := seriesKey{pid: s.processes.Owner(c.PID), role: c.Role, metric: x.Metric, err: x.Error, hash: s.hashAttrs(x)}
	if c.Role == l7.RoleClient {
		k.peer = c.Peer
	}
	var sc trace.SpanContext
	if s.tracer != nil {
		sc = s.span(c, x)
	}
	s.mu.Lock()
	ser := s.series[k]
	if ser == nil || !sameAttrs(ser.attrs, x) {
		ser = s.newSeries(k, c, x)
	}
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
			ser.dur.RecordSampled(b, d, s.eng.Wall(x.End), sc)
		} else {
			ser.dur.Record(b, d)
		}
	case l7.MessageCount:
		ser.sum += x.Messages
	}
	s.mu.Unlock()
	s.recorded.Add(1)
}

// newSeries makes the series of k (s.mu held): kept unless the table is
// full, then the metric's overflow series.
func (s *Sink) newSeries(k seriesKey, c *l7.Conn, x *l7.Exchange) *series {
	if len(s.series) >= s.maxSeries {
		// Not kept (nothing is built for it: an exchange past the cap costs
		// no allocation); its points go to the metric's overflow series,
		// its spans keep their attributes.
		s.seriesOverflow.Add(1)
		mk := metricKey{k.role, k.metric}
		o := s.overflow[mk]
		if o == nil {
			o = &series{set: overflowSet}
			s.overflow[mk] = o
		}
		return o
	}
	ser := &series{attrs: append([]attribute.KeyValue(nil), x.Attrs[:x.NAttr]...)}
	var kv []attribute.KeyValue
	if s.processes != nil {
		kv = append(kv, s.processes.Lookup(k.pid).Attributes()...)
	}
	kv = append(kv, ser.attrs...)
	if c.Role == l7.RoleClient && c.Peer.IsValid() && !hasKey(x.Attrs[:x.NAttr], keyServerAddress) {
		kv = append(kv, keyServerAddress.String(c.Peer.Addr().String()), keyServerPort.Int(int(c.Peer.Port())))
	}
	if !c.Peer.IsValid() {
		kv = append(kv, keyTransport.String("unix"))
	}
	if k.err != "" {
		kv = append(kv, keyErrorType.String(k.err))
	}
	ser.set = attribute.NewSet(kv...)
	s.series[k] = ser
	return ser
}

// span starts and ends the span of a sampled exchange (unsampled: only the
// decision is paid) and returns its context, for the exemplar.
func (s *Sink) span(c *l7.Conn, x *l7.Exchange) trace.SpanContext {
	kind := trace.SpanKindClient
	ctx := context.Background()
	if c.Role == l7.RoleServer {
		kind = trace.SpanKindServer
	}
	if x.HasParent {
		psc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: x.TraceID, SpanID: x.ParentSpanID, TraceFlags: trace.TraceFlags(x.TraceFlags), Remote: true,
		})
		ctx = trace.ContextWithRemoteSpanContext(ctx, psc)
	}
	name := x.SpanName
	if name == "" {
		name = s.proto.Name()
	}
	ctx, sampled := s.sampler(ctx, name, kind)
	if !sampled {
		return trace.SpanContext{}
	}
	_, sp := s.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithTimestamp(s.eng.Wall(x.Start)))
	var ident []attribute.KeyValue
	if s.processes != nil {
		// the service's identity: the span path takes its resource from it
		ident = s.processes.Lookup(s.processes.Owner(c.PID)).Attributes()
	}
	kv := make([]attribute.KeyValue, 0, len(ident)+x.NAttr+x.NSpanAttr+4)
	kv = append(kv, ident...)
	kv = append(kv, x.Attrs[:x.NAttr]...)
	kv = append(kv, x.SpanAttrs[:x.NSpanAttr]...)
	if c.Role == l7.RoleClient && c.Peer.IsValid() && !hasKey(x.Attrs[:x.NAttr], keyServerAddress) {
		kv = append(kv, keyServerAddress.String(c.Peer.Addr().String()), keyServerPort.Int(int(c.Peer.Port())))
	}
	if x.Error != "" {
		kv = append(kv, keyErrorType.String(x.Error))
	}
	sp.SetAttributes(kv...)
	if x.StatusError {
		sp.SetStatus(codes.Error, "")
	}
	sp.End(trace.WithTimestamp(s.eng.Wall(x.End)))
	return sp.SpanContext()
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
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.series {
		if !isDead(k.pid) {
			delete(s.dead, k.pid) // a reused pid starts anew
			continue
		}
		since, ok := s.dead[k.pid]
		if !ok {
			s.dead[k.pid] = now
		} else if now.Sub(since) >= retainDead {
			delete(s.series, k)
		}
	}
	for pid, since := range s.dead {
		if now.Sub(since) >= retainDead {
			delete(s.dead, pid)
		}
	}
}

// Produce implements sdkmetric.Producer: every declared metric, one point
// per series, cumulative.
func (s *Sink) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	start := s.eng.Start()
	var ms []metricdata.Metrics
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, role := range []l7.Role{l7.RoleServer, l7.RoleClient} {
		for _, spec := range s.specs[role] {
			mk := metricKey{role, spec.Index}
			var sers []*series
			for k, ser := range s.series {
				if k.role == role && k.metric == spec.Index {
					sers = append(sers, ser)
				}
			}
			if o := s.overflow[mk]; o != nil {
				sers = append(sers, o)
			}
			if len(sers) == 0 {
				continue
			}
			switch spec.Kind {
			case l7.Duration:
				b := spec.Buckets
				if b == nil {
					b = defaultDurationBuckets
				}
				col := aggregate.Collect[float64](ctx, b, start, now)
				for _, ser := range sers {
					if ser.dur.Count() > 0 {
						col.Add(&ser.dur, ser.set)
					}
				}
				if col.Len() > 0 {
					ms = append(ms, col.Metric(spec.Name, spec.Unit, spec.Description))
				}
			case l7.MessageCount:
				sum := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
				for _, ser := range sers {
					if ser.sum > 0 {
						sum.DataPoints = append(sum.DataPoints, metricdata.DataPoint[int64]{
							Attributes: ser.set, StartTime: start, Time: now, Value: ser.sum})
					}
				}
				if len(sum.DataPoints) > 0 {
					ms = append(ms, metricdata.Metrics{Name: spec.Name, Unit: spec.Unit, Description: spec.Description, Data: sum})
				}
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

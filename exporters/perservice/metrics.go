package perservice

import (
	"cmp"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
)

// SplitMetrics regroups rm into one ResourceMetrics per observed service.
//
// Data points carrying service.name are grouped by their set of resource-key
// attributes (IsResourceKey). Each group becomes a ResourceMetrics whose
// resource is the group's identity attributes merged over the
// non-service-specific attributes of rm.Resource (host.*, os.*, cloud.*,
// telemetry.sdk.*, k8s.node.*, k8s.cluster.*, ...), and whose data points no
// longer carry the identity attributes. Data points without service.name stay
// with rm.Resource, unchanged. Scopes, metric names, units, descriptions,
// temporality and monotonicity are preserved.
//
// Order is deterministic: the original resource first (if any of its data
// points remain), then the services sorted by service.name,
// service.namespace, service.instance.id and the remaining identity
// attributes. Within a group, scopes, metrics and data points keep their
// input order; metrics with no data points for a group are left out of it.
//
// The input is not modified. If no data point carries service.name, the
// result is []{rm} itself. Otherwise the result shares read-only slices
// (histogram bounds and bucket counts, exemplars) with rm, so it must not
// outlive the next reuse of rm's buffers (the SDK reuses them after Export
// returns).
func SplitMetrics(rm *metricdata.ResourceMetrics) []*metricdata.ResourceMetrics {
	if rm == nil {
		return nil
	}
	if !metricsHaveIdentity(rm) {
		return []*metricdata.ResourceMetrics{rm}
	}

	s := newSplitter(rm.Resource)
	own := newBuilder(rm.Resource)
	for si := range rm.ScopeMetrics {
		sm := &rm.ScopeMetrics[si]
		for mi := range sm.Metrics {
			splitMetric(s, own, si, sm, &sm.Metrics[mi])
		}
	}

	out := make([]*metricdata.ResourceMetrics, 0, len(s.groups)+1)
	if len(own.rm.ScopeMetrics) > 0 {
		out = append(out, &own.rm)
	}
	for _, g := range s.sorted() {
		g.b.rm.Resource = g.resource(s)
		out = append(out, &g.b.rm)
	}
	return out
}

// CountDataPoints returns the number of data points in rm (histogram and
// summary points count once). Exporters use it for their delivered/dropped
// self-metrics.
func CountDataPoints(rm *metricdata.ResourceMetrics) int {
	if rm == nil {
		return 0
	}
	n := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			n += DataPointCount(m.Data)
		}
	}
	return n
}

// DataPointCount is the number of points an aggregation holds.
func DataPointCount(a metricdata.Aggregation) int {
	switch d := a.(type) {
	case metricdata.Sum[int64]:
		return len(d.DataPoints)
	case metricdata.Sum[float64]:
		return len(d.DataPoints)
	case metricdata.Gauge[int64]:
		return len(d.DataPoints)
	case metricdata.Gauge[float64]:
		return len(d.DataPoints)
	case metricdata.Histogram[int64]:
		return len(d.DataPoints)
	case metricdata.Histogram[float64]:
		return len(d.DataPoints)
	case metricdata.ExponentialHistogram[int64]:
		return len(d.DataPoints)
	case metricdata.ExponentialHistogram[float64]:
		return len(d.DataPoints)
	case metricdata.Summary:
		return len(d.DataPoints)
	}
	return 0
}

// metricsHaveIdentity is the fast path: most exports from an agent with no
// observed services (or only self metrics) need no copying at all.
func metricsHaveIdentity(rm *metricdata.ResourceMetrics) bool {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if aggregationHasIdentity(m.Data) {
				return true
			}
		}
	}
	return false
}

func aggregationHasIdentity(a metricdata.Aggregation) bool {
	switch d := a.(type) {
	case metricdata.Sum[int64]:
		return anyIdentity(d.DataPoints, dpAttrs[int64])
	case metricdata.Sum[float64]:
		return anyIdentity(d.DataPoints, dpAttrs[float64])
	case metricdata.Gauge[int64]:
		return anyIdentity(d.DataPoints, dpAttrs[int64])
	case metricdata.Gauge[float64]:
		return anyIdentity(d.DataPoints, dpAttrs[float64])
	case metricdata.Histogram[int64]:
		return anyIdentity(d.DataPoints, histAttrs[int64])
	case metricdata.Histogram[float64]:
		return anyIdentity(d.DataPoints, histAttrs[float64])
	case metricdata.ExponentialHistogram[int64]:
		return anyIdentity(d.DataPoints, expAttrs[int64])
	case metricdata.ExponentialHistogram[float64]:
		return anyIdentity(d.DataPoints, expAttrs[float64])
	case metricdata.Summary:
		return anyIdentity(d.DataPoints, summaryAttrs)
	}
	return false
}

func anyIdentity[P any](pts []P, attrs func(*P) *attribute.Set) bool {
	for i := range pts {
		if attrs(&pts[i]).HasValue(ServiceName) {
			return true
		}
	}
	return false
}

// Attribute accessors: the data point types share no interface, so the
// generic helpers below reach their Attributes field through these.
func dpAttrs[N int64 | float64](p *metricdata.DataPoint[N]) *attribute.Set { return &p.Attributes }
func histAttrs[N int64 | float64](p *metricdata.HistogramDataPoint[N]) *attribute.Set {
	return &p.Attributes
}
func expAttrs[N int64 | float64](p *metricdata.ExponentialHistogramDataPoint[N]) *attribute.Set {
	return &p.Attributes
}
func summaryAttrs(p *metricdata.SummaryDataPoint) *attribute.Set { return &p.Attributes }

// splitMetric distributes one metric's data points over own and the service
// groups, copying the aggregation's metadata into every part.
func splitMetric(s *splitter, own *builder, si int, sm *metricdata.ScopeMetrics, m *metricdata.Metrics) {
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		splitTyped(s, own, si, sm, m, d.DataPoints, dpAttrs[int64], func(p []metricdata.DataPoint[int64]) metricdata.Aggregation {
			return metricdata.Sum[int64]{DataPoints: p, Temporality: d.Temporality, IsMonotonic: d.IsMonotonic}
		})
	case metricdata.Sum[float64]:
		splitTyped(s, own, si, sm, m, d.DataPoints, dpAttrs[float64], func(p []metricdata.DataPoint[float64]) metricdata.Aggregation {
			return metricdata.Sum[float64]{DataPoints: p, Temporality: d.Temporality, IsMonotonic: d.IsMonotonic}
		})
	case metricdata.Gauge[int64]:
		splitTyped(s, own, si, sm, m, d.DataPoints, dpAttrs[int64], func(p []metricdata.DataPoint[int64]) metricdata.Aggregation {
			return metricdata.Gauge[int64]{DataPoints: p}
		})
	case metricdata.Gauge[float64]:
		splitTyped(s, own, si, sm, m, d.DataPoints, dpAttrs[float64], func(p []metricdata.DataPoint[float64]) metricdata.Aggregation {
			return metricdata.Gauge[float64]{DataPoints: p}
		})
	case metricdata.Histogram[int64]:
		splitTyped(s, own, si, sm, m, d.DataPoints, histAttrs[int64], func(p []metricdata.HistogramDataPoint[int64]) metricdata.Aggregation {
			return metricdata.Histogram[int64]{DataPoints: p, Temporality: d.Temporality}
		})
	case metricdata.Histogram[float64]:
		splitTyped(s, own, si, sm, m, d.DataPoints, histAttrs[float64], func(p []metricdata.HistogramDataPoint[float64]) metricdata.Aggregation {
			return metricdata.Histogram[float64]{DataPoints: p, Temporality: d.Temporality}
		})
	case metricdata.ExponentialHistogram[int64]:
		splitTyped(s, own, si, sm, m, d.DataPoints, expAttrs[int64], func(p []metricdata.ExponentialHistogramDataPoint[int64]) metricdata.Aggregation {
			return metricdata.ExponentialHistogram[int64]{DataPoints: p, Temporality: d.Temporality}
		})
	case metricdata.ExponentialHistogram[float64]:
		splitTyped(s, own, si, sm, m, d.DataPoints, expAttrs[float64], func(p []metricdata.ExponentialHistogramDataPoint[float64]) metricdata.Aggregation {
			return metricdata.ExponentialHistogram[float64]{DataPoints: p, Temporality: d.Temporality}
		})
	case metricdata.Summary:
		splitTyped(s, own, si, sm, m, d.DataPoints, summaryAttrs, func(p []metricdata.SummaryDataPoint) metricdata.Aggregation {
			return metricdata.Summary{DataPoints: p}
		})
	default:
		// Unknown or nil aggregation: nothing to attribute, keep it as is.
		own.add(si, sm, *m)
	}
}

// splitTyped does the work of splitMetric for one data point type. rebuild
// wraps a data point slice back into the metric's aggregation type.
func splitTyped[P any](
	s *splitter, own *builder, si int, sm *metricdata.ScopeMetrics, m *metricdata.Metrics,
	pts []P, attrs func(*P) *attribute.Set, rebuild func([]P) metricdata.Aggregation,
) {
	if !anyIdentity(pts, attrs) {
		// Whole metric stays (this includes metrics with no points); share
		// the input's aggregation value as is.
		own.add(si, sm, *m)
		return
	}

	// Pass 1: find each point's group and its remaining attributes, and
	// count points per group, so pass 2 can place every point with one
	// allocation per metric instead of growing a slice per group.
	s.pointGroup = s.pointGroup[:0]
	s.pointAttrs = s.pointAttrs[:0]
	clear(s.counts)
	var touched []int // groups in order of first appearance in this metric
	nRest := 0
	for i := range pts {
		set := attrs(&pts[i])
		if !set.HasValue(ServiceName) {
			s.pointGroup = append(s.pointGroup, -1)
			s.pointAttrs = append(s.pointAttrs, attribute.Set{})
			nRest++
			continue
		}
		g, kept := s.split(set)
		for g.idx >= len(s.counts) {
			s.counts = append(s.counts, 0)
		}
		if s.counts[g.idx] == 0 {
			touched = append(touched, g.idx)
		}
		s.counts[g.idx]++
		s.pointGroup = append(s.pointGroup, int32(g.idx))
		s.pointAttrs = append(s.pointAttrs, kept)
	}

	// Pass 2: carve one backing array into per-group slices with exact
	// capacity (appending to one can never overwrite its neighbour).
	backing := make([]P, len(pts)-nRest)
	parts := make([][]P, len(s.groups)) // indexed by group; nil if untouched
	off := 0
	for _, gi := range touched {
		n := s.counts[gi]
		parts[gi] = backing[off : off : off+n]
		off += n
	}
	var rest []P
	if nRest > 0 {
		rest = make([]P, 0, nRest)
	}
	for i := range pts {
		gi := s.pointGroup[i]
		if gi < 0 {
			rest = append(rest, pts[i])
			continue
		}
		p := pts[i] // copy: the input must not change
		*attrs(&p) = s.pointAttrs[i]
		parts[gi] = append(parts[gi], p)
	}

	if len(rest) > 0 {
		own.add(si, sm, metricdata.Metrics{Name: m.Name, Description: m.Description, Unit: m.Unit, Data: rebuild(rest)})
	}
	for _, gi := range touched {
		s.groups[gi].b.add(si, sm, metricdata.Metrics{Name: m.Name, Description: m.Description, Unit: m.Unit, Data: rebuild(parts[gi])})
	}
}

// builder accumulates one output ResourceMetrics.
type builder struct {
	rm metricdata.ResourceMetrics
	// lastScope is the input scope index of rm's last ScopeMetrics. Metrics
	// are visited in input order, so a scope is "open" exactly when it came
	// from the same input index; comparing indices rather than scopes keeps
	// two equal input scopes apart, as they were in the input.
	lastScope int
}

func newBuilder(res *resource.Resource) *builder {
	return &builder{rm: metricdata.ResourceMetrics{Resource: res}, lastScope: -1}
}

// add appends m under the input scope sm (index si).
func (b *builder) add(si int, sm *metricdata.ScopeMetrics, m metricdata.Metrics) {
	if b.lastScope != si {
		b.rm.ScopeMetrics = append(b.rm.ScopeMetrics, metricdata.ScopeMetrics{Scope: sm.Scope})
		b.lastScope = si
	}
	last := &b.rm.ScopeMetrics[len(b.rm.ScopeMetrics)-1]
	last.Metrics = append(last.Metrics, m)
}

// splitter holds the state of one SplitMetrics/SplitSpans call.
type splitter struct {
	schemaURL string
	base      []attribute.KeyValue // agent attributes kept on every service resource
	agent     *resource.Resource   // the agent's own resource
	agentPID  attribute.Value      // its process.pid, if any
	groups    []*group
	byKey     map[attribute.Distinct][]*group

	memo map[attribute.Distinct][]memoEntry // see split

	// Scratch space reused across points and metrics of one call.
	hasher     *attribute.Hasher
	identBuf   []attribute.KeyValue
	keptBuf    []attribute.KeyValue
	pointGroup []int32
	pointAttrs []attribute.Set
	counts     []int
}

type memoEntry struct {
	set  attribute.Set
	g    *group
	kept attribute.Set
}

type group struct {
	idx      int
	ident    attribute.Set        // the identity attributes (resource keys)
	identKVs []attribute.KeyValue // the same, sorted, for cheap comparison
	b        *builder             // used by SplitMetrics only
	res      *resource.Resource
}

func newSplitter(agent *resource.Resource) *splitter {
	s := &splitter{
		byKey:  make(map[attribute.Distinct][]*group),
		memo:   make(map[attribute.Distinct][]memoEntry),
		hasher: attribute.NewHasher(),
	}
	if agent != nil {
		s.agent = agent
		s.agentPID, _ = agent.Set().Value(ProcessPID)
		s.schemaURL = agent.SchemaURL()
		for _, kv := range agent.Attributes() {
			if keepFromAgent(kv.Key) {
				s.base = append(s.base, kv)
			}
		}
	}
	return s
}

// split separates set into its identity attributes, which select (or
// create) the group, and the remaining measurement attributes. It hashes the
// identity incrementally and compares it with the known groups' attributes,
// so an existing group is found without building an attribute.Set; only the
// kept attributes become a new Set (the output needs one anyway).
func (s *splitter) split(set *attribute.Set) (*group, attribute.Set) {
	// Metrics of one collector usually share attribute sets (opened,
	// closed, bytes... for the same connection key), so remember each set's
	// result. Equivalent is precomputed; Equals guards against collisions.
	key := set.Equivalent()
	for _, c := range s.memo[key] {
		if c.set.Equals(set) {
			return c.g, c.kept
		}
	}
	g, kept := s.splitSlow(set)
	s.memo[key] = append(s.memo[key], memoEntry{set: *set, g: g, kept: kept})
	return g, kept
}

func (s *splitter) splitSlow(set *attribute.Set) (*group, attribute.Set) {
	s.hasher.Reset()
	s.identBuf = s.identBuf[:0]
	s.keptBuf = s.keptBuf[:0]
	for it := set.Iter(); it.Next(); {
		kv := it.Attribute()
		if IsResourceKey(kv.Key) {
			s.identBuf = append(s.identBuf, kv)
			s.hasher.Write(kv) // Set iteration is in key order, as Write requires
		} else {
			s.keptBuf = append(s.keptBuf, kv)
		}
	}
	g := s.lookup(s.hasher.Distinct(), s.identBuf)
	// NewSet copies the attributes, so keptBuf can be reused.
	return g, attribute.NewSet(s.keptBuf...)
}

// group returns the group for the identity attributes ident (any order,
// duplicates resolved last-wins as attribute.NewSet does).
func (s *splitter) group(ident []attribute.KeyValue) *group {
	set := attribute.NewSet(ident...)
	return s.lookup(set.Equivalent(), set.ToSlice())
}

// lookup finds or creates the group for the sorted, de-duplicated identity
// attributes ident, whose hash is key. Distinct is only a 64-bit hash, so
// candidates are confirmed attribute by attribute: a hash collision must
// never merge two services. ident is copied when a group is created.
func (s *splitter) lookup(key attribute.Distinct, ident []attribute.KeyValue) *group {
	for _, g := range s.byKey[key] {
		if slices.Equal(g.identKVs, ident) {
			return g
		}
	}
	kvs := slices.Clone(ident)
	g := &group{idx: len(s.groups), identKVs: kvs, ident: attribute.NewSet(kvs...), b: newBuilder(nil)}
	s.groups = append(s.groups, g)
	s.byKey[key] = append(s.byKey[key], g)
	return g
}

// resource builds (once) the group's resource: agent base attributes, the
// identity attributes, then the program's own resource attributes
// (ProgramResource); later ones win on a key clash. A program's own values
// win over what the agent found out about it (a Kubernetes label's
// service.version, say), except for what the agent measures itself: the
// service name and instance, process.* and container.*.
//
// The agent observing itself (its own export connections, say) is no other
// service: a group whose process.pid is the agent's gets the agent's own
// resource, so that the agent's telemetry has one resource.
func (g *group) resource(s *splitter) *resource.Resource {
	if g.res == nil && s.agentPID.Type() != attribute.INVALID {
		if pid, ok := g.ident.Value(ProcessPID); ok && pid == s.agentPID {
			g.res = s.agent
		}
	}
	if g.res == nil {
		kvs := make([]attribute.KeyValue, 0, len(s.base)+g.ident.Len()+8)
		kvs = append(kvs, s.base...)
		for _, kv := range g.identKVs {
			if kv.Key != ProgramResource {
				kvs = append(kvs, kv)
			}
		}
		if v, ok := g.ident.Value(ProgramResource); ok {
			for _, pair := range v.AsStringSlice() {
				if k, val, ok := strings.Cut(pair, "="); ok && k != "" && !measuredKey(k) {
					kvs = append(kvs, attribute.String(k, val))
				}
			}
		}
		// attribute.NewSet keeps the last value of a duplicated key.
		g.res = resource.NewWithAttributes(s.schemaURL, kvs...)
	}
	return g.res
}

// measuredKey reports the resource attributes the agent knows better than
// a program's environment can say: who it is and where it runs.
func measuredKey(k string) bool {
	switch attribute.Key(k) {
	case ServiceName, ServiceNamespace, ServiceInstanceID:
		return true
	}
	return strings.HasPrefix(k, "process.") || strings.HasPrefix(k, "container.")
}

// sorted returns the groups in a stable, data-derived order, independent of
// the order in which the SDK happened to emit data points: by service.name,
// service.namespace, service.instance.id, then all identity attributes.
func (s *splitter) sorted() []*group {
	type keyed struct {
		g    *group
		keys [4]string
	}
	ks := make([]keyed, len(s.groups))
	enc := attribute.DefaultEncoder()
	for i, g := range s.groups {
		ks[i].g = g
		for j, k := range []attribute.Key{ServiceName, ServiceNamespace, ServiceInstanceID} {
			if v, ok := g.ident.Value(k); ok {
				ks[i].keys[j] = v.Emit()
			}
		}
		ks[i].keys[3] = g.ident.Encoded(enc)
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		for j := range a.keys {
			if c := cmp.Compare(a.keys[j], b.keys[j]); c != 0 {
				return c
			}
		}
		return 0
	})
	gs := make([]*group, len(ks))
	for i := range ks {
		gs[i] = ks[i].g
	}
	return gs
}

// Resolver maps a data point's attribute set to the resource of the
// observed service it belongs to and its remaining measurement
// attributes, as SplitMetrics groups them, for exporters that keep the
// answer per series across collections instead of splitting every
// collection anew. It is not safe for concurrent use; its memory grows
// with the services it has seen, so a caller that forgets series makes a
// new Resolver now and then.
type Resolver struct{ s *splitter }

// NewResolver returns a Resolver for the agent's own resource (the
// resource of data points without service.name).
func NewResolver(agent *resource.Resource) *Resolver { return &Resolver{s: newSplitter(agent)} }

// Resolve returns the resource of the data point whose attributes are set
// and the attributes left on the point. A point without service.name
// keeps all its attributes and the agent's resource. The returned resource
// is the same pointer for every point of one service.
func (r *Resolver) Resolve(set *attribute.Set) (*resource.Resource, attribute.Set) {
	if !set.HasValue(ServiceName) {
		return r.s.agent, *set
	}
	g, kept := r.s.splitSlow(set)
	return g.resource(r.s), kept
}

package otlp

import (
	"math"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/otelbee/otelbee/exporters/perservice"
)

// metricEncoder writes an export's ResourceMetrics (one per observed
// service, as perservice.SplitMetrics groups them) as protobuf straight
// from the SDK's collected data, into buffers kept from one export to the
// next. What a series needs beyond its values (its service, its attributes
// without the identity, encoded) is worked out the first time the series
// is seen and kept while it keeps coming, so that an export at the series
// budget builds no protobuf objects and no attribute sets: the SDK's
// exporters, and this package before, made a message per point, per
// attribute and per value (metricpb_test.go, kept as the reference
// the encoder's test compares with). Not safe for concurrent use; the SDK
// does not call Export concurrently.
type metricEncoder struct {
	agent    *resource.Resource
	resolver *perservice.Resolver
	gen      uint64 // exports so far
	series   map[attribute.Distinct]*seriesEnc
	nseries  int
	services map[*resource.Resource]*serviceEnc
	scopes   map[instrumentation.Scope][]byte // InstrumentationScope, tagged

	// One export's, reused.
	points []byte        // every point's encoded body, in input order
	out    []byte        // every service's ResourceMetrics body, in order
	active []*serviceEnc // services with points in this export
	spans  []int         // out's boundaries: service i is out[spans[i]:spans[i+1]]
	runs   []run
}

// seriesEnc is what a data point's attribute set resolves to.
type seriesEnc struct {
	set     attribute.Set
	service *serviceEnc
	kept    attribute.Set // the attributes left on the point
	// The kept attributes encoded as the repeated KeyValue field of each
	// kind of point (attrNumber, attrHist, attrExp), made when needed.
	attrs [3][]byte
	gen   uint64
	next  *seriesEnc // same Distinct
}

// The attribute fields of the kinds of data points.
const (
	attrNumber = iota // NumberDataPoint and SummaryDataPoint: field 7
	attrHist          // HistogramDataPoint: field 9
	attrExp           // ExponentialHistogramDataPoint: field 1
)

var attrFields = [3]protowire.Number{7, 9, 1}

// serviceEnc is one resource of the request.
type serviceEnc struct {
	resource []byte // the Resource field and schema_url, encoded
	order    string // SplitMetrics' order: the agent's own first ("")
	gen      uint64
	refs     []pointRef // this export's points of the service
}

// pointRef is one encoded point of a service: its scope and metric (input
// indices) and its body in metricEncoder.points.
type pointRef struct {
	scope, metric int32
	off, n        int32
}

// run is a scope's or a metric's points within a service: refs[from:to],
// and its encoded body size.
type run struct {
	from, to int
	size     int
}

func newMetricEncoder() *metricEncoder {
	e := &metricEncoder{}
	e.reset(nil)
	return e
}

// reset forgets every series and service.
func (e *metricEncoder) reset(agent *resource.Resource) {
	e.agent = agent
	e.resolver = perservice.NewResolver(agent)
	e.series = map[attribute.Distinct]*seriesEnc{}
	e.nseries = 0
	e.services = map[*resource.Resource]*serviceEnc{}
	e.scopes = map[instrumentation.Scope][]byte{}
}

// encode encodes rm: afterwards service i's ResourceMetrics body is
// e.out[e.spans[i]:e.spans[i+1]]. It returns the data points encoded.
func (e *metricEncoder) encode(rm *metricdata.ResourceMetrics) int {
	e.gen++
	if rm.Resource != e.agent {
		e.reset(rm.Resource)
	}
	for _, s := range e.active {
		s.refs = s.refs[:0]
	}
	e.active = e.active[:0]
	e.points = e.points[:0]
	n := 0
	for si := range rm.ScopeMetrics {
		sm := &rm.ScopeMetrics[si]
		for mi := range sm.Metrics {
			n += e.addMetric(int32(si), int32(mi), &sm.Metrics[mi])
		}
	}
	slices.SortStableFunc(e.active, func(a, b *serviceEnc) int { return strings.Compare(a.order, b.order) })
	e.out = e.out[:0]
	e.spans = append(e.spans[:0], 0)
	for _, s := range e.active {
		e.appendService(rm, s)
		e.spans = append(e.spans, len(e.out))
	}
	e.sweep()
	return n
}

// addMetric encodes m's points, each with its service.
func (e *metricEncoder) addMetric(si, mi int32, m *metricdata.Metrics) int {
	switch d := m.Data.(type) {
	case metricdata.Gauge[int64]:
		return addPoints(e, si, mi, d.DataPoints, numberAttrs[int64], appendNumberPoint[int64])
	case metricdata.Gauge[float64]:
		return addPoints(e, si, mi, d.DataPoints, numberAttrs[float64], appendNumberPoint[float64])
	case metricdata.Sum[int64]:
		return addPoints(e, si, mi, d.DataPoints, numberAttrs[int64], appendNumberPoint[int64])
	case metricdata.Sum[float64]:
		return addPoints(e, si, mi, d.DataPoints, numberAttrs[float64], appendNumberPoint[float64])
	case metricdata.Histogram[int64]:
		return addPoints(e, si, mi, d.DataPoints, histAttrs[int64], appendHistPoint[int64])
	case metricdata.Histogram[float64]:
		return addPoints(e, si, mi, d.DataPoints, histAttrs[float64], appendHistPoint[float64])
	case metricdata.ExponentialHistogram[int64]:
		return addPoints(e, si, mi, d.DataPoints, expAttrs[int64], appendExpPoint[int64])
	case metricdata.ExponentialHistogram[float64]:
		return addPoints(e, si, mi, d.DataPoints, expAttrs[float64], appendExpPoint[float64])
	case metricdata.Summary:
		return addPoints(e, si, mi, d.DataPoints, summaryAttrs, appendSummaryPoint)
	}
	return 0 // unknown aggregation: as the SDK's exporter, leave it out
}

func numberAttrs[N int64 | float64](p *metricdata.DataPoint[N]) *attribute.Set { return &p.Attributes }
func histAttrs[N int64 | float64](p *metricdata.HistogramDataPoint[N]) *attribute.Set {
	return &p.Attributes
}
func expAttrs[N int64 | float64](p *metricdata.ExponentialHistogramDataPoint[N]) *attribute.Set {
	return &p.Attributes
}
func summaryAttrs(p *metricdata.SummaryDataPoint) *attribute.Set { return &p.Attributes }

// addPoints encodes pts into e.points and files each under its service.
func addPoints[P any](e *metricEncoder, si, mi int32, pts []P, attrs func(*P) *attribute.Set, appendPoint func([]byte, *seriesEnc, *P) []byte) int {
	for i := range pts {
		p := &pts[i]
		s := e.resolve(attrs(p))
		off := len(e.points)
		e.points = appendPoint(e.points, s, p)
		svc := s.service
		if len(svc.refs) == 0 {
			e.active = append(e.active, svc)
		}
		svc.refs = append(svc.refs, pointRef{scope: si, metric: mi, off: int32(off), n: int32(len(e.points) - off)})
	}
	return len(pts)
}

// resolve returns the series of attribute set set, made on first sight.
func (e *metricEncoder) resolve(set *attribute.Set) *seriesEnc {
	k := set.Equivalent()
	head := e.series[k]
	for s := head; s != nil; s = s.next {
		if s.set.Equals(set) {
			s.gen, s.service.gen = e.gen, e.gen
			return s
		}
	}
	res, kept := e.resolver.Resolve(set)
	s := &seriesEnc{set: *set, service: e.service(res, set), kept: kept, gen: e.gen, next: head}
	s.service.gen = e.gen
	e.series[k] = s
	e.nseries++
	return s
}

// encoded returns the series' attributes encoded as field kind.
func (s *seriesEnc) encoded(kind int) []byte {
	if s.attrs[kind] == nil {
		b := []byte{}
		for it := s.kept.Iter(); it.Next(); {
			b = appendKeyValue(b, attrFields[kind], it.Attribute())
		}
		s.attrs[kind] = b
	}
	return s.attrs[kind]
}

// service returns the entry of resource res, which a point with
// attributes set belongs to.
func (e *metricEncoder) service(res *resource.Resource, set *attribute.Set) *serviceEnc {
	if s, ok := e.services[res]; ok {
		return s
	}
	s := &serviceEnc{}
	if res != nil {
		var body []byte
		for _, kv := range res.Attributes() {
			body = appendKeyValue(body, 1, kv)
		}
		s.resource = appendMessage(nil, 1, body)
		s.resource = appendString(s.resource, 3, res.SchemaURL())
	}
	if set.HasValue(perservice.ServiceName) && res != e.agent {
		s.order = serviceOrder(set)
	}
	e.services[res] = s
	return s
}

// serviceOrder is the sort key SplitMetrics gives the service of a data
// point with attributes set: after the agent's own resource (""), by
// service name, namespace, instance and then the whole identity.
func serviceOrder(set *attribute.Set) string {
	var b strings.Builder
	b.WriteByte(1)
	for _, k := range []attribute.Key{perservice.ServiceName, perservice.ServiceNamespace, perservice.ServiceInstanceID} {
		if v, ok := set.Value(k); ok {
			b.WriteString(v.Emit())
		}
		b.WriteByte(0)
	}
	ident, _ := set.Filter(func(kv attribute.KeyValue) bool { return perservice.IsResourceKey(kv.Key) })
	b.WriteString(ident.Encoded(attribute.DefaultEncoder()))
	return b.String()
}

// sweep forgets the series and services no export has seen for a while,
// once they are more than the live ones (as the Prometheus exporter's
// cache does), and the resolver's services with them.
func (e *metricEncoder) sweep() {
	live := 0
	for _, s := range e.active {
		live += len(s.refs)
	}
	if e.nseries <= 2*live+1024 {
		return
	}
	for k, head := range e.series {
		var kept *seriesEnc
		for s := head; s != nil; {
			next := s.next
			if s.gen == e.gen {
				s.next, kept = kept, s
			} else {
				e.nseries--
			}
			s = next
		}
		if kept == nil {
			delete(e.series, k)
		} else {
			e.series[k] = kept
		}
	}
	for r, s := range e.services {
		if s.gen != e.gen {
			delete(e.services, r)
		}
	}
	e.resolver = perservice.NewResolver(e.agent)
}

// appendService appends s's ResourceMetrics body: its resource, then its
// points by scope and metric, in input order (refs are in input order).
func (e *metricEncoder) appendService(rm *metricdata.ResourceMetrics, s *serviceEnc) {
	// Sizes first, bottom up: a metric run's body, then a scope run's.
	e.runs = e.runs[:0]
	refs := s.refs
	for from := 0; from < len(refs); {
		si := refs[from].scope
		sm := &rm.ScopeMetrics[si]
		scopeRun := len(e.runs)
		e.runs = append(e.runs, run{from: from})
		size := len(e.scope(sm.Scope)) + stringField(3, sm.Scope.SchemaURL)
		for from < len(refs) && refs[from].scope == si {
			mi := refs[from].metric
			r := run{from: from}
			points := 0
			for ; from < len(refs) && refs[from].scope == si && refs[from].metric == mi; from++ {
				points += messageField(int(refs[from].n))
			}
			r.to = from
			r.size = metricSize(&sm.Metrics[mi], points)
			size += messageField(r.size)
			e.runs = append(e.runs, r)
		}
		e.runs[scopeRun].to = from
		e.runs[scopeRun].size = size
	}
	// s.resource ends with ResourceMetrics' schema_url (field 3): fields
	// may come in any order.
	b := append(e.out, s.resource...)
	for i := 0; i < len(e.runs); {
		sr := e.runs[i]
		sm := &rm.ScopeMetrics[refs[sr.from].scope]
		b = appendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sr.size))
		b = append(b, e.scope(sm.Scope)...)
		for i++; i < len(e.runs) && e.runs[i].from < sr.to; i++ {
			mr := e.runs[i]
			m := &sm.Metrics[refs[mr.from].metric]
			b = appendTag(b, 2, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(mr.size))
			b = e.appendMetric(b, m, refs[mr.from:mr.to])
		}
		b = appendString(b, 3, sm.Scope.SchemaURL)
	}
	e.out = b
}

// scope returns scope s's InstrumentationScope field, encoded once.
func (e *metricEncoder) scope(s instrumentation.Scope) []byte {
	if b, ok := e.scopes[s]; ok {
		return b
	}
	var body []byte
	body = appendString(body, 1, s.Name)
	body = appendString(body, 2, s.Version)
	for it := s.Attributes.Iter(); it.Next(); {
		body = appendKeyValue(body, 3, it.Attribute())
	}
	b := appendMessage(nil, 1, body)
	e.scopes[s] = b
	return b
}

// The fields of a Metric: name, description, unit, then the data.
const (
	fieldGauge       protowire.Number = 5
	fieldSum         protowire.Number = 7
	fieldHistogram   protowire.Number = 9
	fieldExponential protowire.Number = 10
	fieldSummary     protowire.Number = 11
)

// dataOf returns m's data field and the size of its fields other than the
// points (temporality, monotonicity).
func dataOf(m *metricdata.Metrics) (f protowire.Number, temporality metricdata.Temporality, monotonic bool) {
	switch d := m.Data.(type) {
	case metricdata.Gauge[int64], metricdata.Gauge[float64]:
		return fieldGauge, 0, false
	case metricdata.Sum[int64]:
		return fieldSum, d.Temporality, d.IsMonotonic
	case metricdata.Sum[float64]:
		return fieldSum, d.Temporality, d.IsMonotonic
	case metricdata.Histogram[int64]:
		return fieldHistogram, d.Temporality, false
	case metricdata.Histogram[float64]:
		return fieldHistogram, d.Temporality, false
	case metricdata.ExponentialHistogram[int64]:
		return fieldExponential, d.Temporality, false
	case metricdata.ExponentialHistogram[float64]:
		return fieldExponential, d.Temporality, false
	}
	return fieldSummary, 0, false
}

// metricSize is the size of m's Metric body with points bytes of points.
func metricSize(m *metricdata.Metrics, points int) int {
	_, t, mono := dataOf(m)
	data := points + varintField(uint64(temporalityPB(t)))
	if mono {
		data += 2
	}
	return stringField(1, m.Name) + stringField(2, m.Description) + stringField(3, m.Unit) + messageField(data)
}

func (e *metricEncoder) appendMetric(b []byte, m *metricdata.Metrics, refs []pointRef) []byte {
	f, t, mono := dataOf(m)
	b = appendString(b, 1, m.Name)
	b = appendString(b, 2, m.Description)
	b = appendString(b, 3, m.Unit)
	points := 0
	for _, r := range refs {
		points += messageField(int(r.n))
	}
	data := points + varintField(uint64(temporalityPB(t)))
	if mono {
		data += 2
	}
	b = appendTag(b, f, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(data))
	for _, r := range refs {
		b = appendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(r.n))
		b = append(b, e.points[r.off:r.off+r.n]...)
	}
	if v := uint64(temporalityPB(t)); v != 0 {
		b = appendVarint(b, 2, v)
	}
	if mono {
		b = appendVarint(b, 3, 1)
	}
	return b
}

// The points, as metricpb_test.go builds them (the reference): the value's
// oneof and a histogram's sum always set, min and max when recorded,
// zero scalars left out as proto3 does.

func appendNumberPoint[N int64 | float64](b []byte, s *seriesEnc, p *metricdata.DataPoint[N]) []byte {
	b = appendTimes(b, p.StartTime.IsZero(), p.StartTime.UnixNano(), p.Time.IsZero(), p.Time.UnixNano())
	// A pointer in the interface: boxing the value would allocate.
	switch v := any(&p.Value).(type) {
	case *int64:
		b = appendTag(b, 6, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, uint64(*v))
	case *float64:
		b = appendTag(b, 4, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(*v))
	}
	b = appendExemplars(b, 5, p.Exemplars)
	return append(b, s.encoded(attrNumber)...)
}

func appendHistPoint[N int64 | float64](b []byte, s *seriesEnc, p *metricdata.HistogramDataPoint[N]) []byte {
	b = appendTimes(b, p.StartTime.IsZero(), p.StartTime.UnixNano(), p.Time.IsZero(), p.Time.UnixNano())
	b = appendFixed64(b, 4, p.Count)
	b = appendTag(b, 5, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(float64(p.Sum)))
	if len(p.BucketCounts) > 0 {
		b = appendTag(b, 6, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(8*len(p.BucketCounts)))
		for _, c := range p.BucketCounts {
			b = protowire.AppendFixed64(b, c)
		}
	}
	if len(p.Bounds) > 0 {
		b = appendTag(b, 7, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(8*len(p.Bounds)))
		for _, x := range p.Bounds {
			b = protowire.AppendFixed64(b, math.Float64bits(x))
		}
	}
	b = appendExemplars(b, 8, p.Exemplars)
	b = append(b, s.encoded(attrHist)...)
	return appendMinMax(b, 11, p.Min, p.Max)
}

func appendExpPoint[N int64 | float64](b []byte, s *seriesEnc, p *metricdata.ExponentialHistogramDataPoint[N]) []byte {
	b = append(b, s.encoded(attrExp)...)
	b = appendTimes(b, p.StartTime.IsZero(), p.StartTime.UnixNano(), p.Time.IsZero(), p.Time.UnixNano())
	b = appendFixed64(b, 4, p.Count)
	b = appendTag(b, 5, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(float64(p.Sum)))
	if p.Scale != 0 {
		b = appendVarint(b, 6, protowire.EncodeZigZag(int64(p.Scale)))
	}
	b = appendFixed64(b, 7, p.ZeroCount)
	b = appendBuckets(b, 8, p.PositiveBucket)
	b = appendBuckets(b, 9, p.NegativeBucket)
	b = appendExemplars(b, 11, p.Exemplars)
	b = appendMinMax(b, 12, p.Min, p.Max)
	if p.ZeroThreshold != 0 {
		b = appendTag(b, 14, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(p.ZeroThreshold))
	}
	return b
}

func appendSummaryPoint(b []byte, s *seriesEnc, p *metricdata.SummaryDataPoint) []byte {
	b = appendTimes(b, p.StartTime.IsZero(), p.StartTime.UnixNano(), p.Time.IsZero(), p.Time.UnixNano())
	b = appendFixed64(b, 4, p.Count)
	if p.Sum != 0 {
		b = appendTag(b, 5, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(p.Sum))
	}
	for _, q := range p.QuantileValues {
		var body []byte
		if q.Quantile != 0 {
			body = appendTag(body, 1, protowire.Fixed64Type)
			body = protowire.AppendFixed64(body, math.Float64bits(q.Quantile))
		}
		if q.Value != 0 {
			body = appendTag(body, 2, protowire.Fixed64Type)
			body = protowire.AppendFixed64(body, math.Float64bits(q.Value))
		}
		b = appendMessage(b, 6, body)
	}
	return append(b, s.encoded(attrNumber)...)
}

func appendTimes(b []byte, startZero bool, start int64, zero bool, t int64) []byte {
	if !startZero && start != 0 {
		b = appendFixed64(b, 2, uint64(start))
	}
	if !zero && t != 0 {
		b = appendFixed64(b, 3, uint64(t))
	}
	return b
}

func appendMinMax[N int64 | float64](b []byte, f protowire.Number, min, max metricdata.Extrema[N]) []byte {
	if v, ok := min.Value(); ok {
		b = appendTag(b, f, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(float64(v)))
	}
	if v, ok := max.Value(); ok {
		b = appendTag(b, f+1, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(float64(v)))
	}
	return b
}

func appendBuckets(b []byte, f protowire.Number, bk metricdata.ExponentialBucket) []byte {
	size := 0
	if bk.Offset != 0 {
		size += varintField(protowire.EncodeZigZag(int64(bk.Offset)))
	}
	counts := 0
	for _, c := range bk.Counts {
		counts += protowire.SizeVarint(c)
	}
	if len(bk.Counts) > 0 {
		size += messageField(counts)
	}
	b = appendTag(b, f, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	if bk.Offset != 0 {
		b = appendVarint(b, 1, protowire.EncodeZigZag(int64(bk.Offset)))
	}
	if len(bk.Counts) > 0 {
		b = appendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(counts))
		for _, c := range bk.Counts {
			b = protowire.AppendVarint(b, c)
		}
	}
	return b
}

func appendExemplars[N int64 | float64](b []byte, f protowire.Number, es []metricdata.Exemplar[N]) []byte {
	for _, x := range es {
		var body []byte
		if !x.Time.IsZero() && x.Time.UnixNano() != 0 {
			body = appendFixed64(body, 2, uint64(x.Time.UnixNano()))
		}
		switch v := any(&x.Value).(type) {
		case *int64:
			body = appendTag(body, 6, protowire.Fixed64Type)
			body = protowire.AppendFixed64(body, uint64(*v))
		case *float64:
			body = appendTag(body, 3, protowire.Fixed64Type)
			body = protowire.AppendFixed64(body, math.Float64bits(*v))
		}
		if len(x.SpanID) > 0 {
			body = appendMessage(body, 4, x.SpanID)
		}
		if len(x.TraceID) > 0 {
			body = appendMessage(body, 5, x.TraceID)
		}
		for _, kv := range x.FilteredAttributes {
			body = appendKeyValue(body, 7, kv)
		}
		b = appendMessage(b, f, body)
	}
	return b
}

// Protobuf wire helpers. A proto3 scalar at its zero value is left out,
// as proto.Marshal does.

func appendTag(b []byte, f protowire.Number, t protowire.Type) []byte {
	return protowire.AppendTag(b, f, t)
}

func appendVarint(b []byte, f protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(appendTag(b, f, protowire.VarintType), v)
}

func appendFixed64(b []byte, f protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendFixed64(appendTag(b, f, protowire.Fixed64Type), v)
}

func appendString(b []byte, f protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(appendTag(b, f, protowire.BytesType), s)
}

func appendMessage(b []byte, f protowire.Number, body []byte) []byte {
	return protowire.AppendBytes(appendTag(b, f, protowire.BytesType), body)
}

// stringField is the size of string field f holding s (0 when empty).
func stringField(f protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(f) + protowire.SizeBytes(len(s))
}

// messageField is the size of a field (number below 16) holding n bytes.
func messageField(n int) int { return 1 + protowire.SizeBytes(n) }

// varintField is the size of a varint field (number below 16) holding v
// (0 when v is 0).
func varintField(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

// appendKeyValue appends kv as a KeyValue in field f, as keyValuesPB and
// anyValuePB build it: the value always set, an empty AnyValue for an
// invalid one.
func appendKeyValue(b []byte, f protowire.Number, kv attribute.KeyValue) []byte {
	var val []byte
	val = appendAnyValue(val, kv.Value)
	body := appendString(nil, 1, string(kv.Key))
	body = appendMessage(body, 2, val)
	return appendMessage(b, f, body)
}

func appendAnyValue(b []byte, v attribute.Value) []byte {
	switch v.Type() {
	case attribute.BOOL:
		x := uint64(0)
		if v.AsBool() {
			x = 1
		}
		return appendVarint(b, 2, x)
	case attribute.INT64:
		return appendVarint(b, 3, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		return protowire.AppendFixed64(appendTag(b, 4, protowire.Fixed64Type), math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		return protowire.AppendString(appendTag(b, 1, protowire.BytesType), v.AsString())
	case attribute.BOOLSLICE:
		var arr []byte
		for _, x := range v.AsBoolSlice() {
			arr = appendMessage(arr, 1, appendAnyValue(nil, attribute.BoolValue(x)))
		}
		return appendMessage(b, 5, arr)
	case attribute.INT64SLICE:
		var arr []byte
		for _, x := range v.AsInt64Slice() {
			arr = appendMessage(arr, 1, appendAnyValue(nil, attribute.Int64Value(x)))
		}
		return appendMessage(b, 5, arr)
	case attribute.FLOAT64SLICE:
		var arr []byte
		for _, x := range v.AsFloat64Slice() {
			arr = appendMessage(arr, 1, appendAnyValue(nil, attribute.Float64Value(x)))
		}
		return appendMessage(b, 5, arr)
	case attribute.STRINGSLICE:
		var arr []byte
		for _, x := range v.AsStringSlice() {
			arr = appendMessage(arr, 1, appendAnyValue(nil, attribute.StringValue(x)))
		}
		return appendMessage(b, 5, arr)
	}
	return b
}

func temporalityPB(t metricdata.Temporality) metricpb.AggregationTemporality {
	switch t {
	case metricdata.DeltaTemporality:
		return metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	case metricdata.CumulativeTemporality:
		return metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	}
	return metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_UNSPECIFIED
}

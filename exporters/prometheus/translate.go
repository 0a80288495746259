package prometheus

import (
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/otelbee/otelbee/exporters/perservice"
)

// The identity labels, as the OpenTelemetry Collector's Prometheus exporter
// and the specification's compatibility rules put them on every series of a
// resource: job is service.namespace/service.name (service.name alone
// without a namespace), instance is service.instance.id. Those three
// attributes are on no target_info; the scrape config needs
// honor_labels: true, or Prometheus replaces them with the scrape target's.
const (
	jobLabel      = "job"
	instanceLabel = "instance"
)

const (
	targetInfoName = "target_info"
	targetInfoHelp = "Target metadata"

	scopeNameLabel    = "otel_scope_name"
	scopeVersionLabel = "otel_scope_version"

	// nativeZeroThreshold is the specification's default for exponential
	// histograms without a zero threshold.
	nativeZeroThreshold = 1e-128
)

type label struct{ name, value string }

// family is one Prometheus metric family (name, type, HELP, UNIT).
type family struct {
	name, help, unit string
	kind             kind
	used             bool  // has points in this scrape (text path)
	rank             int32 // place in the answer (text path)
}

// series is one exposed series, possibly the merge of several data points
// that translate to the same labels (see translator.add).
type series struct {
	fam      *family
	labels   []label // sorted by name
	additive bool    // may be summed with a colliding series
	created  time.Time

	value float64 // counter, gauge

	// Classic histogram: bounds and per-bucket (non-cumulative) counts.
	count   uint64
	sum     float64
	bounds  []float64
	buckets []uint64
	// exemplars link buckets to sampled spans (OpenMetrics exposition).
	exemplars []prometheus.Exemplar

	native *nativeHist
}

type nativeHist struct {
	schema        int32
	zeroThreshold float64
	zeroCount     uint64
	pos, neg      map[int]int64
}

// translator converts one collection into Prometheus metrics. It lives for
// one scrape, so concurrent scrapes share nothing but the Exporter's
// reporting hooks.
type translator struct {
	scopeLabels bool
	// resourceLabels are resource attributes copied onto every series
	// (WithResourceLabels); all when allResourceLabels.
	resourceLabels    []attribute.Key
	allResourceLabels bool

	families map[string]*family
	series   map[string]*series
	order    []*series
	descs    map[string]*prometheus.Desc
	labelFor map[attribute.Key]string // sanitized attribute keys

	// problem reports a skipped data point (or series); key identifies
	// the cause so the exporter can log each cause once.
	problem func(key, msg string, n int)

	keyBuf strings.Builder
}

func newTranslator(scopeLabels bool, resourceLabels []attribute.Key, problem func(key, msg string, n int)) *translator {
	t := &translator{
		scopeLabels: scopeLabels,
		families:    make(map[string]*family),
		series:      make(map[string]*series),
		descs:       make(map[string]*prometheus.Desc),
		labelFor:    make(map[attribute.Key]string),
		problem:     problem,
	}
	for _, k := range resourceLabels {
		if k == "*" {
			t.allResourceLabels = true
			continue
		}
		t.resourceLabels = append(t.resourceLabels, k)
	}
	return t
}

// translate converts rm (the agent's collection, one resource) into
// Prometheus metrics.
func (t *translator) translate(rm *metricdata.ResourceMetrics) []prometheus.Metric {
	parts := perservice.SplitMetrics(rm)

	// target_info first: it claims its name before any metric can.
	t.families[targetInfoName] = &family{name: targetInfoName, help: targetInfoHelp, kind: kindGauge}
	resources := make([]*resource.Resource, 0, len(parts)+1)
	if rm.Resource != nil {
		// The agent's own resource always gets its target_info, even
		// when it has no self metrics in this collection.
		resources = append(resources, rm.Resource)
	}
	for _, p := range parts {
		if p.Resource != rm.Resource {
			resources = append(resources, p.Resource)
		}
	}
	t.targetInfo(resources)

	for _, p := range parts {
		ident := append(resourceIdentity(p.Resource), t.copiedResourceLabels(p.Resource)...)
		for si := range p.ScopeMetrics {
			sm := &p.ScopeMetrics[si]
			extra := slices.Clone(ident)
			if t.scopeLabels {
				extra = append(extra, scopeLabelsOf(sm.Scope)...)
			}
			for mi := range sm.Metrics {
				t.metric(&sm.Metrics[mi], extra)
			}
		}
	}
	return t.emit()
}

// resourceIdentity returns the job and instance labels of a resource.
func resourceIdentity(res *resource.Resource) []label {
	if res == nil {
		return nil
	}
	set := res.Set()
	var out []label
	if v, ok := set.Value(perservice.ServiceName); ok {
		job := labelValue(v.Emit())
		if ns, ok := set.Value(perservice.ServiceNamespace); ok && ns.Emit() != "" {
			job = labelValue(ns.Emit()) + "/" + job
		}
		if job != "" {
			out = append(out, label{jobLabel, job})
		}
	}
	if v, ok := set.Value(perservice.ServiceInstanceID); ok {
		if s := labelValue(v.Emit()); s != "" {
			out = append(out, label{instanceLabel, s})
		}
	}
	return out
}

// isIdentityKey reports the resource attributes that make job and instance,
// which target_info does not repeat.
func isIdentityKey(k attribute.Key) bool {
	return k == perservice.ServiceName || k == perservice.ServiceNamespace || k == perservice.ServiceInstanceID
}

// copiedResourceLabels are the resource attributes WithResourceLabels asks
// for on every series (service.name as service_name, say), for queries
// written before job and instance.
func (t *translator) copiedResourceLabels(res *resource.Resource) []label {
	if res == nil || (len(t.resourceLabels) == 0 && !t.allResourceLabels) {
		return nil
	}
	set := res.Set()
	var out []label
	add := func(kv attribute.KeyValue) {
		v := labelValue(kv.Value.Emit())
		name := labelName(string(kv.Key))
		if v == "" || name == jobLabel || name == instanceLabel {
			return
		}
		for i := range out {
			if out[i].name == name {
				out[i].value += ";" + v
				return
			}
		}
		out = append(out, label{name, v})
	}
	if t.allResourceLabels {
		for it := set.Iter(); it.Next(); {
			add(it.Attribute())
		}
		return out
	}
	for _, k := range t.resourceLabels {
		if v, ok := set.Value(k); ok {
			add(attribute.KeyValue{Key: k, Value: v})
		}
	}
	return out
}

func scopeLabelsOf(s instrumentation.Scope) []label {
	var out []label
	if s.Name != "" {
		out = append(out, label{scopeNameLabel, labelValue(s.Name)})
	}
	if s.Version != "" {
		out = append(out, label{scopeVersionLabel, labelValue(s.Version)})
	}
	return out
}

// targetInfo adds one target_info series per distinct identity (job,
// instance) with the other resource attributes as labels. Usually that is
// one per resource. Resources that share an identity have their series
// merged (see add), so they also share one target_info, holding the
// attributes they agree on: two target_info series for one identity would
// make every "* on (job, instance) group_left target_info" join fail.
func (t *translator) targetInfo(resources []*resource.Resource) {
	fam := t.families[targetInfoName]
	type info struct {
		labels []label
	}
	byIdentity := make(map[string]*info)
	var order []string
	for _, res := range resources {
		if res == nil || res.Len() == 0 {
			continue // the specification: no target_info for an empty resource
		}
		ident := resourceIdentity(res)
		attrs := attribute.NewSet(slices.DeleteFunc(res.Attributes(), func(kv attribute.KeyValue) bool { return isIdentityKey(kv.Key) })...)
		labels := t.attrLabels(&attrs, ident)
		key := t.seriesKey(targetInfoName, ident)
		in, ok := byIdentity[key]
		if !ok {
			byIdentity[key] = &info{labels: labels}
			order = append(order, key)
			continue
		}
		in.labels = intersect(in.labels, labels)
	}
	for _, key := range order {
		s := &series{fam: fam, labels: byIdentity[key].labels, value: 1}
		t.series[t.seriesKey(targetInfoName, s.labels)] = s
		t.order = append(t.order, s)
	}
}

// intersect keeps the labels of a that b has with the same value.
func intersect(a, b []label) []label {
	out := a[:0]
	for _, l := range a {
		for _, m := range b {
			if l == m {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// metric translates one OpenTelemetry metric. extra holds the identity and
// scope labels of its resource and scope.
func (t *translator) metric(m *metricdata.Metrics, extra []label) {
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		sumPoints(t, m, d.DataPoints, d.Temporality, d.IsMonotonic, extra)
	case metricdata.Sum[float64]:
		sumPoints(t, m, d.DataPoints, d.Temporality, d.IsMonotonic, extra)
	case metricdata.Gauge[int64]:
		gaugePoints(t, m, d.DataPoints, extra)
	case metricdata.Gauge[float64]:
		gaugePoints(t, m, d.DataPoints, extra)
	case metricdata.Histogram[int64]:
		histogramPoints(t, m, d.DataPoints, d.Temporality, extra)
	case metricdata.Histogram[float64]:
		histogramPoints(t, m, d.DataPoints, d.Temporality, extra)
	case metricdata.ExponentialHistogram[int64]:
		nativePoints(t, m, d.DataPoints, d.Temporality, extra)
	case metricdata.ExponentialHistogram[float64]:
		nativePoints(t, m, d.DataPoints, d.Temporality, extra)
	default:
		// Summaries (never produced by the Go SDK) and unknown types.
		t.problem("type:"+m.Name, fmt.Sprintf("metric %q: aggregation %T is not exported to Prometheus", m.Name, m.Data), 1)
	}
}

func sumPoints[N int64 | float64](t *translator, m *metricdata.Metrics, pts []metricdata.DataPoint[N], temp metricdata.Temporality, monotonic bool, extra []label) {
	if temp != metricdata.CumulativeTemporality {
		// The reader is cumulative; a delta sum can only come from a
		// misconfigured producer. The specification says drop it.
		t.problem("delta:"+m.Name, fmt.Sprintf("metric %q: delta sums cannot be exposed to Prometheus", m.Name), len(pts))
		return
	}
	k := kindGauge
	if monotonic {
		k = kindCounter
	}
	fam := t.family(m, k, false, len(pts))
	if fam == nil {
		return
	}
	for i := range pts {
		p := &pts[i]
		// Sums are additive, monotonic or not: colliding series add up.
		t.add(&series{fam: fam, additive: true, created: p.StartTime, value: float64(p.Value)}, &p.Attributes, extra, "")
	}
}

func gaugePoints[N int64 | float64](t *translator, m *metricdata.Metrics, pts []metricdata.DataPoint[N], extra []label) {
	fam := t.family(m, kindGauge, true, len(pts))
	if fam == nil {
		return
	}
	for i := range pts {
		p := &pts[i]
		// A gauge is not additive: two colliding values cannot be summed.
		t.add(&series{fam: fam, value: float64(p.Value)}, &p.Attributes, extra, "")
	}
}

func histogramPoints[N int64 | float64](t *translator, m *metricdata.Metrics, pts []metricdata.HistogramDataPoint[N], temp metricdata.Temporality, extra []label) {
	if temp != metricdata.CumulativeTemporality {
		t.problem("delta:"+m.Name, fmt.Sprintf("metric %q: delta histograms cannot be exposed to Prometheus", m.Name), len(pts))
		return
	}
	fam := t.family(m, kindHistogram, false, len(pts))
	if fam == nil {
		return
	}
	for i := range pts {
		p := &pts[i]
		if len(p.BucketCounts) != len(p.Bounds)+1 {
			t.problem("buckets:"+m.Name, fmt.Sprintf("metric %q: %d bucket counts for %d bounds", m.Name, len(p.BucketCounts), len(p.Bounds)), 1)
			continue
		}
		t.add(&series{
			fam: fam, additive: true, created: p.StartTime,
			count: p.Count, sum: float64(p.Sum), bounds: p.Bounds, buckets: p.BucketCounts,
			exemplars: exemplarsOf(p.Exemplars),
		}, &p.Attributes, extra, "le")
	}
}

func nativePoints[N int64 | float64](t *translator, m *metricdata.Metrics, pts []metricdata.ExponentialHistogramDataPoint[N], temp metricdata.Temporality, extra []label) {
	if temp != metricdata.CumulativeTemporality {
		t.problem("delta:"+m.Name, fmt.Sprintf("metric %q: delta histograms cannot be exposed to Prometheus", m.Name), len(pts))
		return
	}
	fam := t.family(m, kindHistogram, false, len(pts))
	if fam == nil {
		return
	}
	for i := range pts {
		p := &pts[i]
		nh, ok := toNative(p)
		if !ok {
			t.problem("scale:"+m.Name, fmt.Sprintf("metric %q: exponential histogram scale %d is below the Prometheus minimum -4", m.Name, p.Scale), 1)
			continue
		}
		// Merging native histograms of different schemas is possible but
		// not worth it here: colliding native series keep the first.
		t.add(&series{fam: fam, created: p.StartTime, count: p.Count, sum: float64(p.Sum), native: nh}, &p.Attributes, extra, "le")
	}
}

// toNative converts an exponential histogram point to a Prometheus native
// histogram: schema = scale (downscaled to at most 8); OpenTelemetry buckets
// are indexed by lower bound and Prometheus buckets by upper bound, hence
// the +1 on every index.
func toNative[N int64 | float64](p *metricdata.ExponentialHistogramDataPoint[N]) (*nativeHist, bool) {
	const maxSchema, minSchema = 8, -4
	if p.Scale < minSchema {
		return nil, false
	}
	shift := int32(0)
	schema := p.Scale
	if schema > maxSchema {
		shift = schema - maxSchema
		schema = maxSchema
	}
	convert := func(b metricdata.ExponentialBucket) map[int]int64 {
		out := make(map[int]int64, len(b.Counts))
		for i, c := range b.Counts {
			if c == 0 {
				continue
			}
			idx := (b.Offset + int32(i)) >> shift // arithmetic shift: floor, also for negative indices
			out[int(idx)+1] += int64(c)
		}
		return out
	}
	zt := p.ZeroThreshold
	if zt == 0 {
		zt = nativeZeroThreshold
	}
	return &nativeHist{
		schema:        schema,
		zeroThreshold: zt,
		zeroCount:     p.ZeroCount,
		pos:           convert(p.PositiveBucket),
		neg:           convert(p.NegativeBucket),
	}, true
}

// family returns the family for metric m translated as kind k, creating it
// on first use, or nil if the name is taken by a family of another type (or
// would collide with a histogram's _bucket/_sum/_count series). The first
// metric to claim a name wins; the loser's n points are reported skipped.
func (t *translator) family(m *metricdata.Metrics, k kind, isGauge bool, n int) *family {
	name, unit := promName(m, k, isGauge)
	if f, ok := t.families[name]; ok {
		if name == targetInfoName {
			t.problem("clash:"+name, fmt.Sprintf("metric %q translates to %q, which is reserved for resource attributes; skipping it", m.Name, name), n)
			return nil
		}
		if f.kind != k {
			t.problem("clash:"+name+":"+k.String(), fmt.Sprintf(
				"metric %q translates to %s %q, already exposed as a %s; skipping it", m.Name, k, name, f.kind), n)
			return nil
		}
		if f.help == "" {
			f.help = m.Description // the first non-empty HELP wins
		}
		return f
	}
	if clash := t.suffixClash(name, k); clash != "" {
		t.problem("clash:"+name+":"+k.String(), fmt.Sprintf(
			"metric %q translates to %s %q, which collides with %s; skipping it", m.Name, k, name, clash), n)
		return nil
	}
	f := &family{name: name, help: m.Description, unit: unit, kind: k}
	if unit != "" && !strings.HasSuffix(strings.TrimSuffix(name, "_total"), "_"+unit) {
		f.unit = "" // OpenMetrics requires the UNIT to be the name's suffix
	}
	t.families[name] = f
	return f
}

// suffixClash reports a family that a new family (name, k) would collide
// with through histogram series names; client_golang rejects such a scrape.
func (t *translator) suffixClash(name string, k kind) string {
	for _, suf := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if f, ok := t.families[base]; ok && f.kind == kindHistogram {
				return fmt.Sprintf("histogram %q", base)
			}
		}
		if k == kindHistogram {
			if f, ok := t.families[name+suf]; ok {
				return fmt.Sprintf("%s %q", f.kind, f.name)
			}
		}
	}
	return ""
}

// add labels s from the data point attributes attrs plus extra and records
// it. A series whose labels are already taken is merged into the existing
// one when both are additive (sums; histograms with equal bounds): that
// happens when several resources share one identity (two processes of the
// same service without service.instance.id), and the sum is exactly what
// sum by (service_name) would return. Otherwise the first series stays and
// the newcomer is reported.
func (t *translator) add(s *series, attrs *attribute.Set, extra []label, reserved string) {
	s.labels = t.attrLabels(attrs, extra)
	if reserved != "" {
		for i := range s.labels {
			if s.labels[i].name == reserved {
				s.labels[i].name = "exported_" + reserved
			}
		}
		sortLabels(s.labels)
	}
	key := t.seriesKey(s.fam.name, s.labels)
	prev, ok := t.series[key]
	if !ok {
		t.series[key] = s
		t.order = append(t.order, s)
		return
	}
	if !prev.additive || !s.additive || !slices.Equal(prev.bounds, s.bounds) {
		t.problem("dup:"+s.fam.name, fmt.Sprintf("%s %q: more than one value for series %s; keeping the first", s.fam.kind, s.fam.name, key), 1)
		return
	}
	prev.value += s.value
	prev.exemplars = append(prev.exemplars, s.exemplars...)
	prev.count += s.count
	prev.sum += s.sum
	if s.buckets != nil {
		merged := slices.Clone(prev.buckets) // prev.buckets may be the SDK's slice
		for i, c := range s.buckets {
			merged[i] += c
		}
		prev.buckets = merged
	}
	if !s.created.IsZero() && (prev.created.IsZero() || s.created.Before(prev.created)) {
		prev.created = s.created
	}
}

// attrLabels converts attributes to labels, adds extra, and sorts by name.
// Attribute keys that sanitize to the same label have their values joined
// with ';' in the order of the original keys (a Set iterates in key order),
// as the specification requires; a key that sanitizes to one of the extra
// labels' names is renamed "exported_<name>" (Prometheus' own convention)
// so that the identity and scope labels stay authoritative.
func (t *translator) attrLabels(attrs *attribute.Set, extra []label) []label {
	out := make([]label, 0, attrs.Len()+len(extra))
	for it := attrs.Iter(); it.Next(); {
		kv := it.Attribute()
		v := labelValue(kv.Value.Emit())
		if v == "" {
			continue // Prometheus treats an empty label as an absent one
		}
		name, ok := t.labelFor[kv.Key]
		if !ok {
			name = labelName(string(kv.Key))
			t.labelFor[kv.Key] = name
		}
		for _, e := range extra {
			if e.name == name {
				name = "exported_" + name
				break
			}
		}
		merged := false
		for i := range out {
			if out[i].name == name {
				out[i].value += ";" + v
				merged = true
				break
			}
		}
		if !merged {
			out = append(out, label{name, v})
		}
	}
	out = append(out, extra...)
	sortLabels(out)
	return out
}

func sortLabels(ls []label) {
	slices.SortFunc(ls, func(a, b label) int { return strings.Compare(a.name, b.name) })
}

// seriesKey identifies a series: family name and sorted labels. The
// separators 0xff and 0xfe never occur in valid UTF-8 (names and values are
// valid UTF-8 by now), so distinct label sets cannot produce the same key.
func (t *translator) seriesKey(name string, labels []label) string {
	b := &t.keyBuf
	b.Reset()
	b.WriteString(name)
	for _, l := range labels {
		b.WriteByte(0xff)
		b.WriteString(l.name)
		b.WriteByte(0xfe)
		b.WriteString(l.value)
	}
	return b.String()
}

// emit builds the client_golang metrics.
func (t *translator) emit() []prometheus.Metric {
	out := make([]prometheus.Metric, 0, len(t.order))
	for _, s := range t.order {
		names := make([]string, len(s.labels))
		values := make([]string, len(s.labels))
		for i, l := range s.labels {
			names[i], values[i] = l.name, l.value
		}
		desc := t.desc(s.fam, names)
		var (
			m   prometheus.Metric
			err error
		)
		switch {
		case s.fam.kind == kindCounter:
			if s.created.IsZero() {
				m, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, s.value, values...)
			} else {
				m, err = prometheus.NewConstMetricWithCreatedTimestamp(desc, prometheus.CounterValue, s.value, s.created, values...)
			}
		case s.fam.kind == kindGauge:
			m, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.value, values...)
		case s.native != nil:
			n := s.native
			m, err = prometheus.NewConstNativeHistogram(desc, s.count, s.sum, n.pos, n.neg, n.zeroCount, n.schema, n.zeroThreshold, s.created, values...)
		default:
			m, err = prometheus.NewConstHistogramWithCreatedTimestamp(desc, s.count, s.sum, cumulative(s.bounds, s.buckets), s.created, values...)
		}
		if err != nil {
			t.problem("invalid:"+s.fam.name, fmt.Sprintf("%s %q: %v", s.fam.kind, s.fam.name, err), 1)
			continue
		}
		if len(s.exemplars) > 0 {
			if withEx, err := prometheus.NewMetricWithExemplars(m, s.exemplars...); err == nil {
				m = withEx
			} else {
				t.problem("exemplar:"+s.fam.name, fmt.Sprintf("%s %q: exemplars left out: %v", s.fam.kind, s.fam.name, err), 1)
			}
		}
		out = append(out, m)
	}
	return out
}

// desc returns the Desc for a family with the given label names, shared by
// all series with the same label names.
func (t *translator) desc(f *family, names []string) *prometheus.Desc {
	key := f.name + "\xff" + strings.Join(names, "\xff")
	if d, ok := t.descs[key]; ok {
		return d
	}
	var opts []prometheus.DescOpt
	if f.unit != "" {
		opts = append(opts, prometheus.WithUnit(f.unit))
	}
	d := prometheus.V2.NewDesc(f.name, f.help, prometheus.UnconstrainedLabels(names), nil, opts...)
	t.descs[key] = d
	return d
}

// cumulative converts OpenTelemetry per-bucket counts to Prometheus
// cumulative "le" buckets. The +Inf bucket is implied by the total count.
func cumulative(bounds []float64, counts []uint64) map[float64]uint64 {
	out := make(map[float64]uint64, len(bounds))
	var acc uint64
	for i, b := range bounds {
		acc += counts[i]
		if math.IsInf(b, +1) {
			continue
		}
		out[b] = acc
	}
	return out
}

// exemplarsOf turns OpenTelemetry exemplars into Prometheus ones labelled
// trace_id and span_id, as the OpenTelemetry Prometheus exporter does; the
// client library files each under the bucket its value falls in. Exemplars
// without a span are left out: they would link nowhere.
func exemplarsOf[N int64 | float64](exs []metricdata.Exemplar[N]) []prometheus.Exemplar {
	var out []prometheus.Exemplar
	for _, e := range exs {
		if len(e.TraceID) != 16 || len(e.SpanID) != 8 {
			continue
		}
		out = append(out, prometheus.Exemplar{
			Value:     float64(e.Value),
			Timestamp: e.Time,
			Labels: prometheus.Labels{
				"trace_id": hex.EncodeToString(e.TraceID),
				"span_id":  hex.EncodeToString(e.SpanID),
			},
		})
	}
	return out
}

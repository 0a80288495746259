package prometheus

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/otelbee/otelbee/exporters/perservice"
)

// The text exposition (Prometheus text 0.0.4 and OpenMetrics 1.0) is
// written straight from the SDK's collection. What a series' labels are
// (its service's job and instance, its own attributes sanitized, its scope)
// depends only on its attribute set, so that is worked out and rendered
// once, when the series is first seen, and kept: a scrape then costs one
// map lookup per data point plus formatting its numbers, and nothing of the
// answer is built in memory (it is written out in chunks as it goes). The
// output is byte for byte what client_golang's encoders make of the same
// data through translator (TestExpositionMatchesClientGolang); the
// protobuf format, which only a scraper asking for native histograms
// negotiates, still goes through translator and client_golang.

// labelCache holds the rendered labels of every series seen recently. It is
// shared by concurrent scrapes; mu is held only while a scrape resolves its
// data points, not while it writes.
type labelCache struct {
	mu sync.Mutex

	scopeLabels       bool
	resourceLabels    []attribute.Key
	allResourceLabels bool

	gen      uint64 // scrapes so far
	agent    *resource.Resource
	resolver *perservice.Resolver
	scopes   map[instrumentation.Scope]*scopeEntry
	points   map[pointKey]*pointEntry
	npoints  int
	rendered map[string]*seriesLabels
	byRes    map[*resource.Resource]*resEntry
	// ranked: rendered in client_golang's order; stale until re-ranked
	// after new series.
	ranked   []*seriesLabels
	unranked bool
	seq      uint64
	labelFor map[attribute.Key]string
	scratch  []label
}

// scopeEntry is one instrumentation scope's labels.
type scopeEntry struct{ labels []label }

// pointKey identifies a data point's series across collections: its scope,
// whether "le" is reserved (histograms), and its attributes (by hash,
// confirmed with Equals).
type pointKey struct {
	scope *scopeEntry
	hist  bool
	set   attribute.Distinct
}

// pointEntry is what a data point's attribute set resolves to.
type pointEntry struct {
	set    attribute.Set
	series *seriesLabels
	res    *resEntry
	own    bool   // no service.name: the agent's own resource
	seq    uint64 // creation order
	gen    uint64 // last scrape that saw it
	next   *pointEntry
}

// seriesLabels is one rendered label set, shared by every data point that
// translates to it (several processes of one instance, say): such points
// are one series, merged when written.
type seriesLabels struct {
	text   string   // `a="x",b="y"`: escaped, sorted by name, no braces
	values []string // the label values in name order: client_golang sorts series by them
	rank   int32
	gen    uint64 // last scrape that saw it
}

// resEntry is one service's resource: its identity labels and target_info.
type resEntry struct {
	ident    []label // job, instance
	extra    []label // ident plus the copied resource labels
	info     []label // target_info's labels; nil for an empty resource
	identKey string
	// order sorts the resources as SplitMetrics does (the agent's own
	// first, then by service name, namespace, instance and identity), so
	// that of colliding gauges the same one is kept.
	order    string
	infoText string   // info rendered
	infoVals []string // info's values
	gen      uint64   // last scrape that saw it
	listed   uint64   // last scrape that listed it for target_info
}

func newLabelCache(scopeLabels bool, resourceLabels []attribute.Key) *labelCache {
	c := &labelCache{scopeLabels: scopeLabels, labelFor: make(map[attribute.Key]string)}
	for _, k := range resourceLabels {
		if k == "*" {
			c.allResourceLabels = true
			continue
		}
		c.resourceLabels = append(c.resourceLabels, k)
	}
	c.reset(nil)
	return c
}

// reset forgets every series (and the resolver's services).
func (c *labelCache) reset(agent *resource.Resource) {
	c.agent = agent
	c.resolver = perservice.NewResolver(agent)
	c.scopes = make(map[instrumentation.Scope]*scopeEntry)
	c.points = make(map[pointKey]*pointEntry)
	c.npoints = 0
	c.rendered = make(map[string]*seriesLabels)
	c.byRes = make(map[*resource.Resource]*resEntry)
	c.ranked = c.ranked[:0]
	c.unranked = false
}

// translator returns a translator sharing the cache's settings, for the
// label rules (attrLabels, resourceIdentity, ...).
func (c *labelCache) translator() *translator {
	t := &translator{scopeLabels: c.scopeLabels, resourceLabels: c.resourceLabels,
		allResourceLabels: c.allResourceLabels, labelFor: c.labelFor}
	return t
}

func (c *labelCache) scope(s instrumentation.Scope) *scopeEntry {
	if e, ok := c.scopes[s]; ok {
		return e
	}
	e := &scopeEntry{}
	if c.scopeLabels {
		e.labels = scopeLabelsOf(s)
	}
	c.scopes[s] = e
	return e
}

// resolve returns the entry of a data point with attributes set. The
// caller holds mu.
func (c *labelCache) resolve(sc *scopeEntry, hist bool, set *attribute.Set) *pointEntry {
	k := pointKey{scope: sc, hist: hist, set: set.Equivalent()}
	head := c.points[k]
	for e := head; e != nil; e = e.next {
		if e.set.Equals(set) {
			e.gen, e.series.gen, e.res.gen = c.gen, c.gen, c.gen
			return e
		}
	}
	e := c.newPoint(sc, hist, set)
	e.series.gen, e.res.gen = c.gen, c.gen
	e.next = head
	c.points[k] = e
	c.npoints++
	return e
}

func (c *labelCache) newPoint(sc *scopeEntry, hist bool, set *attribute.Set) *pointEntry {
	res, kept := c.resolver.Resolve(set)
	re := c.res(res)
	own := !set.HasValue(perservice.ServiceName)
	if !own && re.order == "" {
		re.order = resourceOrder(set)
	}
	t := c.translator()
	extra := append(append(c.scratch[:0], re.extra...), sc.labels...)
	c.scratch = extra[:0]
	labels := t.attrLabels(&kept, extra)
	if hist {
		renamed := false
		for i := range labels {
			if labels[i].name == "le" {
				labels[i].name = "exported_le"
				renamed = true
			}
		}
		if renamed {
			sortLabels(labels)
		}
	}
	text := renderLabels(labels)
	sl, ok := c.rendered[text]
	if !ok {
		sl = &seriesLabels{text: text, values: make([]string, len(labels))}
		for i, l := range labels {
			sl.values[i] = l.value
		}
		c.rendered[text] = sl
		c.ranked = append(c.ranked, sl)
		c.unranked = true
	}
	c.seq++
	return &pointEntry{set: *set, series: sl, res: re, own: own, seq: c.seq, gen: c.gen}
}

// resourceOrder is the sort key SplitMetrics gives the service of a data
// point with attributes set.
func resourceOrder(set *attribute.Set) string {
	var b strings.Builder
	b.WriteByte(1) // after the agent's own resource ("")
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

// res returns the entry of a resource (nil: none).
func (c *labelCache) res(r *resource.Resource) *resEntry {
	if e, ok := c.byRes[r]; ok {
		return e
	}
	t := c.translator()
	e := &resEntry{ident: resourceIdentity(r)}
	e.extra = append(slices.Clone(e.ident), t.copiedResourceLabels(r)...)
	if r != nil && r.Len() > 0 {
		attrs := attribute.NewSet(slices.DeleteFunc(r.Attributes(), func(kv attribute.KeyValue) bool { return isIdentityKey(kv.Key) })...)
		e.info = t.attrLabels(&attrs, e.ident)
		e.infoText = renderLabels(e.info)
		e.infoVals = make([]string, len(e.info))
		for i, l := range e.info {
			e.infoVals[i] = l.value
		}
	}
	e.identKey = t.seriesKey(targetInfoName, e.ident)
	c.byRes[r] = e
	return e
}

// rank orders the rendered label sets as client_golang orders the series
// of a family: fewer labels first, then by label values in name order. The
// text breaks ties, so that points of one series are always adjacent.
func (c *labelCache) rank() {
	if !c.unranked {
		return
	}
	slices.SortFunc(c.ranked, compareSeries)
	for i, s := range c.ranked {
		s.rank = int32(i)
	}
	c.unranked = false
}

func compareSeries(a, b *seriesLabels) int {
	if len(a.values) != len(b.values) {
		return cmp.Compare(len(a.values), len(b.values))
	}
	for i := range a.values {
		if c := strings.Compare(a.values[i], b.values[i]); c != 0 {
			return c
		}
	}
	return strings.Compare(a.text, b.text)
}

// sweep forgets the series the latest scrape did not see when they
// outnumber the live ones: a node's processes and peers come and go, and
// the cache must not keep what the SDK has forgotten. The resolver starts
// afresh too (its services are looked up again on the next miss). The
// caller holds mu.
func (c *labelCache) sweep(live int) bool {
	if c.npoints <= 2*live+1024 {
		return false
	}
	for k, head := range c.points {
		var kept *pointEntry
		for e := head; e != nil; {
			next := e.next
			if e.gen == c.gen {
				e.next = kept
				kept = e
			} else {
				c.npoints--
			}
			e = next
		}
		if kept == nil {
			delete(c.points, k)
		} else {
			c.points[k] = kept
		}
	}
	for text, s := range c.rendered {
		if s.gen != c.gen {
			delete(c.rendered, text)
		}
	}
	// Deleting keeps the order, so the ranks stay valid.
	c.ranked = slices.DeleteFunc(c.ranked, func(s *seriesLabels) bool { return s.gen != c.gen })
	for r, e := range c.byRes {
		if e.gen != c.gen {
			delete(c.byRes, r)
		}
	}
	c.resolver = perservice.NewResolver(c.agent)
	return true
}

// renderLabels writes labels (sorted by name) as the inside of a series'
// braces, escaped as both text formats want.
func renderLabels(labels []label) string {
	var b strings.Builder
	for i, l := range labels {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.name)
		b.WriteString(`="`)
		_, _ = quotedEscaper.WriteString(&b, l.value)
		b.WriteByte('"')
	}
	return b.String()
}

var (
	escaper       = strings.NewReplacer("\\", `\\`, "\n", `\n`)
	quotedEscaper = strings.NewReplacer("\\", `\\`, "\n", `\n`, "\"", `\"`)
)

// appendFloat formats f as the text format does (strconv 'g', shortest).
// Integers below a million, most counters and bucket counts, print as
// integers, which is what 'g' gives them, without the float algorithm.
func appendFloat(b []byte, f float64) []byte {
	if f > -1e6 && f < 1e6 && f == math.Trunc(f) {
		return strconv.AppendInt(b, int64(f), 10)
	}
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, +1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// appendOMFloat formats f as OpenMetrics does: like appendFloat, with ".0"
// on what would otherwise read as an integer.
func appendOMFloat(b []byte, f float64) []byte {
	if f > -1e6 && f < 1e6 && f == math.Trunc(f) {
		return append(strconv.AppendInt(b, int64(f), 10), '.', '0')
	}
	start := len(b)
	b = appendFloat(b, f)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b
	}
	if !strings.ContainsAny(string(b[start:]), "e.") {
		b = append(b, '.', '0')
	}
	return b
}

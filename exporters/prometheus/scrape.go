package prometheus

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// chunkSize is how much of an answer is formatted before it is written
// out: the memory a scrape needs for its text, whatever its size.
const chunkSize = 32 << 10

// scrape is the state of one scrape, pooled: its collection, which data
// points make which series, and its write buffers. Nothing in it grows
// with the size of the answer, only with the number of series collected.
type scrapeState struct {
	rm      metricdata.ResourceMetrics
	mets    []*metricdata.Metrics
	fams    []*family // per mets
	refs    []ref
	res     []*resEntry
	claims  []pendingClaim
	targets []targetSeries
	byIdent map[string]int
	bw      *bufio.Writer
	num     []byte
	cum     []uint64
	ex      []exemplar
	exAt    []int
	now     time.Time
}

// ref is one data point of the collection: its series and where it is.
type ref struct {
	pe   *pointEntry
	fam  int32 // the family's place in the answer
	rank int32 // the series' place in its family
	mi   int32 // in scrape.mets
	pi   int32 // in that metric's data points
}

// getScrape returns a scrape's state from the free list: not a sync.Pool,
// which the garbage collector empties, since the SDK fills a collection it
// is handed again in place (data point, bucket and exemplar slices reused)
// only if it is the same one.
func (e *Exporter) getScrape() *scrapeState {
	select {
	case s := <-e.scrapes:
		return s
	default:
		return &scrapeState{bw: bufio.NewWriterSize(nil, chunkSize), num: make([]byte, 0, 64)}
	}
}

func (e *Exporter) putScrape(s *scrapeState) {
	s.bw.Reset(nil)
	clear(s.mets)
	clear(s.fams)
	clear(s.refs)
	clear(s.res)
	clear(s.targets)
	s.targets = s.targets[:0]
	s.mets, s.fams, s.refs, s.res, s.claims = s.mets[:0], s.fams[:0], s.refs[:0], s.res[:0], s.claims[:0]
	select {
	case e.scrapes <- s:
	default: // more scrapes at once than usual: let this one go
	}
}

// serveText answers a scrape in the text or OpenMetrics format.
func (e *Exporter) serveText(w http.ResponseWriter, r *http.Request, format expfmt.Format) {
	om := format.FormatType() == expfmt.TypeOpenMetrics
	s := e.getScrape()
	defer e.putScrape(s)

	// The slot bounds the collections running at once (each walks every
	// series); writing the answer out needs none, so a client that reads
	// slowly holds only its own connection and its collection.
	t := time.NewTimer(slotWait)
	select {
	case e.slots <- struct{}{}:
		t.Stop()
	case <-t.C:
		http.Error(w, "too many scrapes in progress", http.StatusServiceUnavailable)
		return
	case <-r.Context().Done():
		t.Stop()
		return
	}
	fams, targets := e.collectInto(r.Context(), s)
	<-e.slots
	if hook, ok := r.Context().Value(drainKey{}).(func()); ok {
		hook()
	}

	h := w.Header()
	h.Add("Vary", "Accept")
	h.Add("Vary", "Accept-Encoding")
	h.Set("Content-Type", string(format))
	var out io.Writer = &deadlineWriter{w: w, rc: http.NewResponseController(w)}
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		gz, _ := gzipPool.Get().(*gzip.Writer)
		if gz == nil {
			gz, _ = gzip.NewWriterLevel(nil, gzip.BestSpeed)
		}
		gz.Reset(out)
		defer func() { _ = gz.Close(); gzipPool.Put(gz) }()
		out = gz
	}
	s.bw.Reset(out)
	var filter map[string]bool
	if r.URL != nil {
		if names := r.URL.Query()["name[]"]; len(names) > 0 {
			filter = make(map[string]bool, len(names))
			for _, n := range names {
				filter[n] = true
			}
		}
	}
	e.write(s, fams, targets, om, filter)
	if om {
		_, _ = s.bw.WriteString("# EOF\n")
	}
	if err := s.bw.Flush(); err != nil {
		e.logger.Debug("prometheus: writing a scrape", "error", err)
	}
}

// gzipPool holds gzip writers at the fastest level: the text compresses
// well at any level, and a scrape should not cost more CPU to compress
// than to produce.
var gzipPool sync.Pool

// drainKey is the request context key of the hook telling the connection
// limit that a connection only writes an answer out from now on.
type drainKey struct{}

// deadlineWriter gives every chunk of an answer its own write deadline: a
// scraper that stops reading is cut off after writeStall, not after the
// connection's whole write timeout, and its collection is freed.
type deadlineWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	unset bool // the writer has no deadlines (a test recorder)
}

// writeStall is how long one chunk may take to be taken by the client.
const writeStall = 5 * time.Second

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if !d.unset && d.rc.SetWriteDeadline(time.Now().Add(writeStall)) != nil {
		d.unset = true
	}
	return d.w.Write(p)
}

// acceptsGzip reports whether the client takes a gzip answer.
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(enc), "gzip") {
			continue
		}
		if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				return false
			}
		}
		return true
	}
	return false
}

// collectInto collects and resolves every data point to its series. It
// returns the families to write in order, target_info among them, and the
// target_info series.
func (e *Exporter) collectInto(ctx context.Context, s *scrapeState) ([]*family, []targetSeries) {
	if err := e.reader.Collect(ctx, &s.rm); err != nil {
		if errors.Is(err, sdkmetric.ErrReaderNotRegistered) || errors.Is(err, sdkmetric.ErrReaderShutdown) {
			s.rm = metricdata.ResourceMetrics{}
			e.logger.Debug("prometheus: no metrics to scrape", "error", err)
		} else {
			e.logger.Warn("prometheus: collecting metrics", "error", err)
		}
	}
	s.now = time.Now()
	// A translator for this scrape's families: which metric claims which
	// name, clashes (the same rules as the protobuf path).
	t := newTranslator(e.scopeLabels, e.resourceLabels, e.problem)
	ti := &family{name: targetInfoName, help: targetInfoHelp, kind: kindGauge}
	t.families[targetInfoName] = ti

	c := e.cache
	c.mu.Lock()
	c.gen++
	if c.agent != s.rm.Resource {
		c.reset(s.rm.Resource)
	}
	if s.rm.Resource != nil {
		re := c.res(s.rm.Resource)
		re.gen, re.listed = c.gen, c.gen
		s.res = append(s.res, re)
	}
	for si := range s.rm.ScopeMetrics {
		sm := &s.rm.ScopeMetrics[si]
		sc := c.scope(sm.Scope)
		for mi := range sm.Metrics {
			e.resolveMetric(s, t, c, sc, &sm.Metrics[mi])
		}
	}
	s.claimFamilies(t)
	c.rank()
	live := len(s.refs)
	for i := range s.refs {
		s.refs[i].rank = s.refs[i].pe.series.rank
	}
	c.sweep(live)
	c.mu.Unlock()

	// The families in name order, as client_golang writes them.
	fams := make([]*family, 0, len(t.families))
	for _, f := range t.families {
		if f.used || f == ti {
			fams = append(fams, f)
		}
	}
	slices.SortFunc(fams, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	for i, f := range fams {
		f.rank = int32(i)
	}
	for i := range s.refs {
		s.refs[i].fam = s.fams[s.refs[i].mi].rank
	}
	slices.SortFunc(s.refs, func(a, b ref) int {
		if a.fam != b.fam {
			return int(a.fam - b.fam)
		}
		if a.rank != b.rank {
			return int(a.rank - b.rank)
		}
		// Points of one series: in translator's order of resources.
		if c := strings.Compare(a.pe.res.order, b.pe.res.order); c != 0 {
			return c
		}
		return cmpUint(a.pe.seq, b.pe.seq)
	})
	return fams, s.targetInfos()
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// resolveMetric adds the data points of m to the scrape.
func (e *Exporter) resolveMetric(s *scrapeState, t *translator, c *labelCache, sc *scopeEntry, m *metricdata.Metrics) {
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		resolveSum(s, t, c, sc, m, d.DataPoints, d.Temporality, d.IsMonotonic)
	case metricdata.Sum[float64]:
		resolveSum(s, t, c, sc, m, d.DataPoints, d.Temporality, d.IsMonotonic)
	case metricdata.Gauge[int64]:
		resolvePoints(s, c, sc, m, kindGauge, true, false, d.DataPoints, dpSet[int64])
	case metricdata.Gauge[float64]:
		resolvePoints(s, c, sc, m, kindGauge, true, false, d.DataPoints, dpSet[float64])
	case metricdata.Histogram[int64]:
		resolveHist(s, t, c, sc, m, d.DataPoints, d.Temporality)
	case metricdata.Histogram[float64]:
		resolveHist(s, t, c, sc, m, d.DataPoints, d.Temporality)
	case metricdata.ExponentialHistogram[int64]:
		resolveExp(s, t, c, sc, m, d.DataPoints, d.Temporality)
	case metricdata.ExponentialHistogram[float64]:
		resolveExp(s, t, c, sc, m, d.DataPoints, d.Temporality)
	default:
		t.metric(m, nil) // reports the unsupported type
	}
}

func dpSet[N int64 | float64](p *metricdata.DataPoint[N]) *attribute.Set { return &p.Attributes }
func histSet[N int64 | float64](p *metricdata.HistogramDataPoint[N]) *attribute.Set {
	return &p.Attributes
}
func expSet[N int64 | float64](p *metricdata.ExponentialHistogramDataPoint[N]) *attribute.Set {
	return &p.Attributes
}

func resolveSum[N int64 | float64](s *scrapeState, t *translator, c *labelCache, sc *scopeEntry, m *metricdata.Metrics, pts []metricdata.DataPoint[N], temp metricdata.Temporality, monotonic bool) {
	if temp != metricdata.CumulativeTemporality {
		t.problem("delta:"+m.Name, "metric \""+m.Name+"\": delta sums cannot be exposed to Prometheus", len(pts))
		return
	}
	k := kindGauge
	if monotonic {
		k = kindCounter
	}
	resolvePoints(s, c, sc, m, k, false, false, pts, dpSet[N])
}

func resolveHist[N int64 | float64](s *scrapeState, t *translator, c *labelCache, sc *scopeEntry, m *metricdata.Metrics, pts []metricdata.HistogramDataPoint[N], temp metricdata.Temporality) {
	if temp != metricdata.CumulativeTemporality {
		t.problem("delta:"+m.Name, "metric \""+m.Name+"\": delta histograms cannot be exposed to Prometheus", len(pts))
		return
	}
	// Malformed points are reported and left out here, so that writing
	// never meets one.
	n := 0
	for i := range pts {
		if len(pts[i].BucketCounts) != len(pts[i].Bounds)+1 {
			t.problem("buckets:"+m.Name, "metric \""+m.Name+"\": "+strconv.Itoa(len(pts[i].BucketCounts))+" bucket counts for "+strconv.Itoa(len(pts[i].Bounds))+" bounds", 1)
			continue
		}
		n++
	}
	if n < len(pts) {
		ok := make([]metricdata.HistogramDataPoint[N], 0, n)
		for i := range pts {
			if len(pts[i].BucketCounts) == len(pts[i].Bounds)+1 {
				ok = append(ok, pts[i])
			}
		}
		pts = ok
		m = &metricdata.Metrics{Name: m.Name, Description: m.Description, Unit: m.Unit,
			Data: metricdata.Histogram[N]{DataPoints: ok, Temporality: temp}}
	}
	resolvePoints(s, c, sc, m, kindHistogram, false, true, pts, histSet[N])
}

func resolveExp[N int64 | float64](s *scrapeState, t *translator, c *labelCache, sc *scopeEntry, m *metricdata.Metrics, pts []metricdata.ExponentialHistogramDataPoint[N], temp metricdata.Temporality) {
	if temp != metricdata.CumulativeTemporality {
		t.problem("delta:"+m.Name, "metric \""+m.Name+"\": delta histograms cannot be exposed to Prometheus", len(pts))
		return
	}
	const minSchema = -4
	n := 0
	for i := range pts {
		if pts[i].Scale < minSchema {
			t.problem("scale:"+m.Name, "metric \""+m.Name+"\": exponential histogram scale "+strconv.Itoa(int(pts[i].Scale))+" is below the Prometheus minimum -4", 1)
			continue
		}
		n++
	}
	if n < len(pts) {
		ok := make([]metricdata.ExponentialHistogramDataPoint[N], 0, n)
		for i := range pts {
			if pts[i].Scale >= minSchema {
				ok = append(ok, pts[i])
			}
		}
		pts = ok
		m = &metricdata.Metrics{Name: m.Name, Description: m.Description, Unit: m.Unit,
			Data: metricdata.ExponentialHistogram[N]{DataPoints: ok, Temporality: temp}}
	}
	resolvePoints(s, c, sc, m, kindHistogram, false, true, pts, expSet[N])
}

// resolvePoints adds the points of m (to be translated as kind k) to the
// scrape; its family is claimed once all metrics are in (claimFamilies).
// The caller holds c.mu.
func resolvePoints[P any](s *scrapeState, c *labelCache, sc *scopeEntry, m *metricdata.Metrics, k kind, isGauge, hist bool, pts []P, set func(*P) *attribute.Set) {
	if len(pts) == 0 {
		return // a metric without points claims no name
	}
	mi := int32(len(s.mets))
	s.mets = append(s.mets, m)
	s.fams = append(s.fams, nil)
	pc := pendingClaim{kind: k, isGauge: isGauge, n: len(pts)}
	for i := range pts {
		pe := c.resolve(sc, hist, set(&pts[i]))
		if pe.res.listed != c.gen {
			pe.res.listed = c.gen
			s.res = append(s.res, pe.res)
		}
		pc.own = pc.own || pe.own
		s.refs = append(s.refs, ref{pe: pe, mi: mi, pi: int32(i)})
	}
	s.claims = append(s.claims, pc)
}

// pendingClaim is a metric's claim on its family name.
type pendingClaim struct {
	kind    kind
	isGauge bool
	own     bool // has points of the agent's own resource
	n       int
}

// claimFamilies gives every metric its family. translator claims names in
// the order it translates: the agent's own resource's metrics first, then
// the services'; the first to claim a name wins it (the losers' points are
// reported). The refs of losers are dropped.
func (s *scrapeState) claimFamilies(t *translator) {
	for _, own := range []bool{true, false} {
		for mi, pc := range s.claims {
			if pc.own == own {
				if f := t.family(s.mets[mi], pc.kind, pc.isGauge, pc.n); f != nil {
					f.used = true
					s.fams[mi] = f
				}
			}
		}
	}
	s.refs = slices.DeleteFunc(s.refs, func(r ref) bool { return s.fams[r.mi] == nil })
}

// targetSeries is one target_info series.
type targetSeries struct {
	text   string
	values []string
	labels []label
	merged bool
}

// targetInfos returns the target_info series of the resources in a
// scrape: one per identity (job, instance), holding the labels its
// resources agree on (see translator.targetInfo), in client_golang's order.
func (s *scrapeState) targetInfos() []targetSeries {
	out := s.targets[:0]
	if s.byIdent == nil {
		s.byIdent = make(map[string]int)
	}
	clear(s.byIdent)
	for _, r := range s.res {
		if r.info == nil {
			continue
		}
		i, ok := s.byIdent[r.identKey]
		if !ok {
			s.byIdent[r.identKey] = len(out)
			out = append(out, targetSeries{text: r.infoText, values: r.infoVals, labels: r.info})
			continue
		}
		// Resources sharing an identity (rare): what they agree on.
		t := &out[i]
		if !t.merged {
			t.labels, t.merged = slices.Clone(t.labels), true
		}
		t.labels = intersect(t.labels, r.info)
	}
	for i := range out {
		if t := &out[i]; t.merged {
			t.text = renderLabels(t.labels)
			t.values = make([]string, len(t.labels))
			for j, l := range t.labels {
				t.values[j] = l.value
			}
		}
	}
	slices.SortFunc(out, func(a, b targetSeries) int {
		if len(a.values) != len(b.values) {
			return len(a.values) - len(b.values)
		}
		for i := range a.values {
			if c := strings.Compare(a.values[i], b.values[i]); c != 0 {
				return c
			}
		}
		return strings.Compare(a.text, b.text)
	})
	s.targets = out
	return out
}

// write writes the families.
func (e *Exporter) write(s *scrapeState, fams []*family, targets []targetSeries, om bool, filter map[string]bool) {
	refs := s.refs
	for _, f := range fams {
		// This family's refs are the next ones (sorted by family).
		n := 0
		for n < len(refs) && refs[n].fam == f.rank {
			n++
		}
		mine := refs[:n]
		refs = refs[n:]
		if filter != nil && !filter[f.name] {
			continue
		}
		if f.name == targetInfoName {
			if len(targets) == 0 {
				continue
			}
			e.header(s, f, om)
			for _, ts := range targets {
				s.sample(f.name, "", ts.text, "", 1, om)
			}
			continue
		}
		if len(mine) == 0 {
			continue
		}
		e.header(s, f, om)
		for len(mine) > 0 {
			// Points of one series are adjacent: merge them.
			n := 1
			for n < len(mine) && mine[n].pe.series == mine[0].pe.series {
				n++
			}
			e.series(s, f, mine[:n], om)
			mine = mine[n:]
		}
	}
}

// header writes a family's HELP, TYPE (and in OpenMetrics UNIT) lines.
func (e *Exporter) header(s *scrapeState, f *family, om bool) {
	w := s.bw
	name := f.name
	typ := f.kind.String()
	esc := escaper
	if om {
		esc = quotedEscaper
		if f.kind == kindCounter {
			name = strings.TrimSuffix(name, "_total")
		}
	}
	_, _ = w.WriteString("# HELP ")
	_, _ = w.WriteString(name)
	_ = w.WriteByte(' ')
	_, _ = esc.WriteString(w, f.help)
	_, _ = w.WriteString("\n# TYPE ")
	_, _ = w.WriteString(name)
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(typ)
	_ = w.WriteByte('\n')
	if om && f.unit != "" {
		_, _ = w.WriteString("# UNIT ")
		_, _ = w.WriteString(name)
		_ = w.WriteByte(' ')
		_, _ = quotedEscaper.WriteString(w, f.unit)
		_ = w.WriteByte('\n')
	}
}

// sample writes one line: name+suffix{labels} value.
func (s *scrapeState) sample(name, suffix, labels, extra string, v float64, om bool) {
	b := s.num[:0]
	b = append(b, name...)
	b = append(b, suffix...)
	if labels != "" {
		b = append(b, '{')
		b = append(b, labels...)
		b = append(b, '}')
	}
	b = append(b, extra...)
	b = append(b, ' ')
	if om {
		b = appendOMFloat(b, v)
	} else {
		b = appendFloat(b, v)
	}
	b = append(b, '\n')
	_, _ = s.bw.Write(b)
	s.num = b
}

// series writes one series from its points (more than one when several
// data points translate to the same labels: sums add up, other kinds keep
// the first and report the rest).
func (e *Exporter) series(s *scrapeState, f *family, pts []ref, om bool) {
	first := pts[0]
	m := s.mets[first.mi]
	sl := first.pe.series
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		e.writeSum(s, f, sl, pts, om)
	case metricdata.Sum[float64]:
		e.writeSum(s, f, sl, pts, om)
	case metricdata.Gauge[int64]:
		e.dups(f, sl, pts[1:])
		s.sample(f.name, "", sl.text, "", float64(d.DataPoints[first.pi].Value), om)
	case metricdata.Gauge[float64]:
		e.dups(f, sl, pts[1:])
		s.sample(f.name, "", sl.text, "", d.DataPoints[first.pi].Value, om)
	case metricdata.Histogram[int64], metricdata.Histogram[float64]:
		e.writeHist(s, f, sl, pts, om)
	case metricdata.ExponentialHistogram[int64]:
		e.dups(f, sl, pts[1:])
		p := &d.DataPoints[first.pi]
		s.histogram(f, sl, nil, nil, p.Count, float64(p.Sum), nil, om)
	case metricdata.ExponentialHistogram[float64]:
		e.dups(f, sl, pts[1:])
		p := &d.DataPoints[first.pi]
		s.histogram(f, sl, nil, nil, p.Count, p.Sum, nil, om)
	}
}

func (e *Exporter) dups(f *family, sl *seriesLabels, rest []ref) {
	if len(rest) > 0 {
		e.problem("dup:"+f.name, f.kind.String()+" \""+f.name+"\": more than one value for series {"+sl.text+"}; keeping the first", len(rest))
	}
}

// sumValue returns the value of the sum point a ref points at.
func sumValue(s *scrapeState, r ref) (float64, bool) {
	switch d := s.mets[r.mi].Data.(type) {
	case metricdata.Sum[int64]:
		return float64(d.DataPoints[r.pi].Value), true
	case metricdata.Sum[float64]:
		return d.DataPoints[r.pi].Value, true
	}
	return 0, false
}

func (e *Exporter) writeSum(s *scrapeState, f *family, sl *seriesLabels, pts []ref, om bool) {
	var v float64
	for i, r := range pts {
		if x, ok := sumValue(s, r); ok {
			v += x
		} else if i > 0 { // a gauge of the same family: not additive
			e.dups(f, sl, pts[i:i+1])
		}
	}
	s.sample(f.name, "", sl.text, "", v, om)
}

// histPoint is a classic histogram point, whatever its number type.
type histPoint struct {
	count   uint64
	sum     float64
	bounds  []float64
	buckets []uint64
	ex      []exemplar
}

type exemplar struct {
	value           float64
	at              time.Time
	traceID, spanID []byte
}

func histAt(s *scrapeState, r ref, withEx bool, ex []exemplar) (histPoint, []exemplar, bool) {
	switch d := s.mets[r.mi].Data.(type) {
	case metricdata.Histogram[int64]:
		p := &d.DataPoints[r.pi]
		if withEx {
			for _, x := range p.Exemplars {
				ex = append(ex, exemplar{float64(x.Value), x.Time, x.TraceID, x.SpanID})
			}
		}
		return histPoint{p.Count, float64(p.Sum), p.Bounds, p.BucketCounts, nil}, ex, true
	case metricdata.Histogram[float64]:
		p := &d.DataPoints[r.pi]
		if withEx {
			for _, x := range p.Exemplars {
				ex = append(ex, exemplar{x.Value, x.Time, x.TraceID, x.SpanID})
			}
		}
		return histPoint{p.Count, p.Sum, p.Bounds, p.BucketCounts, nil}, ex, true
	}
	return histPoint{}, ex, false
}

func (e *Exporter) writeHist(s *scrapeState, f *family, sl *seriesLabels, pts []ref, om bool) {
	h, ex, _ := histAt(s, pts[0], om, s.ex[:0])
	if len(pts) > 1 {
		// Sum the points with the same bounds; the SDK's bucket slice
		// must not be written to.
		s.cum = append(s.cum[:0], h.buckets...)
		for _, r := range pts[1:] {
			var o histPoint
			var ok bool
			before := len(ex)
			o, ex, ok = histAt(s, r, om, ex)
			if !ok || !slices.Equal(o.bounds, h.bounds) {
				ex = ex[:before]
				e.dups(f, sl, []ref{r})
				continue
			}
			h.count += o.count
			h.sum += o.sum
			for i, c := range o.buckets {
				s.cum[i] += c
			}
		}
		h.buckets = s.cum
	}
	s.histogram(f, sl, h.bounds, h.buckets, h.count, h.sum, ex, om)
	clear(ex) // no trace ids kept alive by the pool
	s.ex = ex[:0]
}

// histogram writes the _bucket, _sum and _count lines of one histogram.
// A native histogram (no bounds) has only its +Inf bucket in the text
// formats, as client_golang writes it.
func (s *scrapeState) histogram(f *family, sl *seriesLabels, bounds []float64, buckets []uint64, count uint64, sum float64, ex []exemplar, om bool) {
	// Exemplars belong to the first bucket whose bound is at least their
	// value (the last one wins a bucket), or to +Inf.
	exAt := s.exAt[:0]
	if len(ex) > 0 {
		exAt = slices.Grow(exAt, len(ex))[:len(ex)]
		s.exAt = exAt
		for i, x := range ex {
			if len(x.traceID) != 16 || len(x.spanID) != 8 {
				exAt[i] = -1
				continue
			}
			j := 0
			for j < len(bounds) && (bounds[j] < x.value || math.IsInf(bounds[j], +1)) {
				j++
			}
			exAt[i] = j
		}
	}
	exFor := func(j int) *exemplar {
		var found *exemplar
		for i := range ex {
			if exAt[i] == j {
				found = &ex[i]
			}
		}
		return found
	}
	var acc uint64
	for i, b := range bounds {
		acc += buckets[i]
		if math.IsInf(b, +1) {
			continue
		}
		s.bucket(f.name, sl.text, b, acc, exFor(i), om)
	}
	s.bucket(f.name, sl.text, math.Inf(+1), count, exFor(len(bounds)), om)
	s.sample(f.name, "_sum", sl.text, "", sum, om)
	if om {
		b := s.num[:0]
		b = append(b, f.name...)
		b = append(b, "_count"...)
		if sl.text != "" {
			b = append(b, '{')
			b = append(b, sl.text...)
			b = append(b, '}')
		}
		b = append(b, ' ')
		b = strconv.AppendUint(b, count, 10)
		b = append(b, '\n')
		_, _ = s.bw.Write(b)
		s.num = b
		return
	}
	s.sample(f.name, "_count", sl.text, "", float64(count), om)
}

func (s *scrapeState) bucket(name, labels string, bound float64, cum uint64, ex *exemplar, om bool) {
	// client_golang writes le after the series' labels, unsorted.
	b := s.num[:0]
	b = append(b, name...)
	b = append(b, "_bucket{"...)
	b = append(b, labels...)
	if labels != "" {
		b = append(b, ',')
	}
	b = append(b, `le="`...)
	if om {
		b = appendOMFloat(b, bound)
	} else {
		b = appendFloat(b, bound)
	}
	b = append(b, '"')
	b = append(b, "} "...)
	if om {
		b = strconv.AppendUint(b, cum, 10)
	} else {
		b = appendFloat(b, float64(cum))
	}
	if ex != nil && om {
		b = append(b, ` # {trace_id="`...)
		b = hex.AppendEncode(b, ex.traceID)
		b = append(b, `",span_id="`...)
		b = hex.AppendEncode(b, ex.spanID)
		b = append(b, `"} `...)
		b = appendOMFloat(b, ex.value)
		b = append(b, ' ')
		at := ex.at
		if at.IsZero() {
			at = s.now
		}
		b = appendOMFloat(b, float64(at.UnixNano())/1e9)
	}
	b = append(b, '\n')
	_, _ = s.bw.Write(b)
	s.num = b
}

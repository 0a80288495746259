package aggregate

import (
	"context"
	"math"
	"sync/atomic"
)

// Base-2 exponential histograms (OpenTelemetry data model, "ExponentialHistogram").
// A collector keeps recording into explicit buckets, which the Prometheus
// endpoint needs; when the OTLP exporter asks for
// base2_exponential_bucket_histogram (OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION),
// every Histogram also keeps exponential buckets, and the OTLP reader's
// collections (WithExponential) get those instead. Recording both only when
// asked keeps the default agent at one bucket array per series: exponential
// buckets are up to MaxSize counters, more than the explicit ones.

// ExponentialConfig is the exponential aggregation's configuration, the
// SDK's AggregationBase2ExponentialHistogram MaxSize and MaxScale.
type ExponentialConfig struct {
	MaxSize  int32 // buckets per sign (positive, negative) at most
	MaxScale int32 // the scale a histogram starts at, 20 at most
}

// Scale limits of the data model: at -10 two buckets cover every float64.
const (
	minScale = -10
	maxScale = 20
)

var exponential atomic.Pointer[ExponentialConfig]

// EnableExponential makes every Histogram created from now on keep
// exponential buckets too. The agent calls it once at start-up, before the
// collectors record; histograms that already recorded keep explicit buckets
// only. A zero or negative MaxSize means 160, a MaxScale outside -10..20
// means 20 (the SDK's defaults).
func EnableExponential(c ExponentialConfig) {
	if c.MaxSize <= 0 {
		c.MaxSize = 160
	}
	if c.MaxScale < minScale || c.MaxScale > maxScale {
		c.MaxScale = maxScale
	}
	exponential.Store(&c)
}

// DisableExponential undoes EnableExponential for histograms created from
// now on (tests run agents one after the other in one process).
func DisableExponential() { exponential.Store(nil) }

// ExponentialEnabled reports whether EnableExponential was called.
func ExponentialEnabled() bool { return exponential.Load() != nil }

type exponentialKey struct{}

// WithExponential marks a collection's context: histograms that keep
// exponential buckets are produced as exponential histograms (see
// Collection).
func WithExponential(ctx context.Context) context.Context {
	return context.WithValue(ctx, exponentialKey{}, true)
}

func wantsExponential(ctx context.Context) bool {
	v, _ := ctx.Value(exponentialKey{}).(bool)
	return v
}

// expHist is the exponential part of a Histogram: positive and negative
// buckets sharing one scale, and the count of zeros.
type expHist struct {
	maxSize  int32
	scale    int32
	zero     uint64
	pos, neg expBuckets
}

// expBuckets are consecutive bucket counts starting at index offset.
type expBuckets struct {
	offset int32
	counts []uint64
}

func newExpHist(c *ExponentialConfig) *expHist {
	return &expHist{maxSize: c.MaxSize, scale: c.MaxScale}
}

// record adds v, lowering the scale first when v's bucket would not fit
// within maxSize buckets of the others of its sign.
func (e *expHist) record(v float64) {
	a := math.Abs(v)
	if a == 0 || math.IsNaN(a) {
		e.zero++
		return
	}
	b := &e.pos
	if v < 0 {
		b = &e.neg
	}
	idx := bucketIndex(a, e.scale)
	if d := e.downscaleFor(b, idx); d > 0 {
		if e.scale-d < minScale {
			d = e.scale - minScale
		}
		e.scale -= d
		e.pos.downscale(d)
		e.neg.downscale(d)
		idx = bucketIndex(a, e.scale)
	}
	b.add(idx)
}

// downscaleFor returns how many times the scale must halve so that b,
// extended to hold idx, spans at most maxSize buckets.
func (e *expHist) downscaleFor(b *expBuckets, idx int32) int32 {
	if len(b.counts) == 0 {
		return 0
	}
	lo, hi := int64(min(idx, b.offset)), int64(max(idx, b.offset+int32(len(b.counts))-1))
	var d int32
	for hi-lo >= int64(e.maxSize) {
		lo >>= 1
		hi >>= 1
		d++
	}
	return d
}

// bucketIndex is the index of the bucket (base^i, base^(i+1)] holding
// a > 0 at scale s, base = 2^(2^-s). Powers of two are computed exactly from
// the float's exponent: they are bucket boundaries, where a logarithm's
// rounding would put them one bucket off.
func bucketIndex(a float64, s int32) int32 {
	frac, exp := math.Frexp(a) // a = frac × 2^exp, frac in [0.5, 1)
	if s <= 0 {
		e := int32(exp) - 1 // floor(log2 a)
		if frac == 0.5 {
			e-- // a = 2^(exp-1) closes the bucket below
		}
		return e >> -s
	}
	if frac == 0.5 {
		return (int32(exp)-1)<<s - 1
	}
	// log2(a)×2^s = exp×2^s + log2(frac)×2^s, the second term in (-2^s, 0).
	return int32(exp)<<s + int32(math.Log(frac)*math.Ldexp(math.Log2E, int(s))) - 1
}

// add counts one value in bucket idx, growing the range as needed (the
// caller has made sure it stays within maxSize).
func (b *expBuckets) add(idx int32) {
	switch {
	case len(b.counts) == 0:
		b.offset = idx
		b.counts = append(b.counts[:0], 1)
	case idx < b.offset:
		shift := int(b.offset - idx)
		b.counts = append(b.counts, make([]uint64, shift)...)
		copy(b.counts[shift:], b.counts)
		clear(b.counts[:shift])
		b.counts[0] = 1
		b.offset = idx
	case int(idx-b.offset) >= len(b.counts):
		b.counts = append(b.counts, make([]uint64, int(idx-b.offset)+1-len(b.counts))...)
		b.counts[idx-b.offset]++
	default:
		b.counts[idx-b.offset]++
	}
}

// downscale merges the buckets for a scale d lower: bucket i becomes i>>d.
func (b *expBuckets) downscale(d int32) {
	if d <= 0 {
		return
	}
	if len(b.counts) == 0 {
		b.offset >>= d
		return
	}
	newOff := b.offset >> d
	n := 0
	for i, c := range b.counts {
		j := int((b.offset+int32(i))>>d - newOff)
		if j >= n {
			// j only grows with i, and j <= i: writing in place is safe.
			b.counts[j] = 0
			n = j + 1
		}
		b.counts[j] += c
	}
	b.counts = b.counts[:n]
	b.offset = newOff
}

// Downscale returns counts (starting at bucket offset, at some scale) as
// they are at a scale d lower, in a new slice: for subtracting an earlier
// snapshot taken at a higher scale from a later one.
func Downscale(offset int32, counts []uint64, d int32) (int32, []uint64) {
	b := expBuckets{offset: offset, counts: append([]uint64(nil), counts...)}
	b.downscale(d)
	return b.offset, b.counts
}

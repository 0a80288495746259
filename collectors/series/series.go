// Package series is the one series table of the collectors that make
// metrics from exchanges (HTTP/1, DNS and every protocol of the L7 layer):
// series keyed by the process's instance (process/identity Resolver.Owner),
// their point attributes rendered once into an attribute.Set and their span
// attributes once into a slice a sampled span reuses (no allocation, no
// identity lookup per span); a cap per table past which a new series goes to
// its group's overflow series (otel.metric.overflow=true); retirement of
// the series of exited processes; and one place, Budget, where the agent can
// refuse a new series.
//
// The metrics themselves (histograms with their exemplars, sums) are the
// protocol's type M, one per series and one per group's overflow series,
// guarded by the table's lock; the table decides which M an exchange is
// recorded on.
//
// Concurrency: one goroutine (the collector's event loop) writes: Get, Add
// and Housekeep. A series' prepared span attributes (SpanAttributes) are
// the goroutine's that makes the collector's spans. Get takes no lock (only the writer changes the map); Add and
// Housekeep take it to change the map; the writer takes it (Lock, Unlock)
// around recording on M; readers (Each, at collection time) hold it.
package series

import (
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/otelbee/otelbee/exporters/spans"
	"github.com/otelbee/otelbee/process/identity"
)

// DefaultRetainDead is how long the series of an exited process keep being
// reported: a short-lived client's exchanges are exported even if it exits
// before the next collection.
const DefaultRetainDead = 5 * time.Minute

// OverflowSet marks the series that collects the exchanges of series beyond
// the cap, as the OpenTelemetry SDK marks its cardinality overflow.
var OverflowSet = attribute.NewSet(attribute.Bool("otel.metric.overflow", true))

// Budget is asked before a table keeps a new series (after the table's own
// cap): the agent-wide series budget plugs in here. Release gives back the
// series a table retired (their owner's process exited).
type Budget interface {
	// Admit reports whether a new series of owner, in table, may be kept;
	// false sends its exchanges to the group's overflow series.
	Admit(table string, owner uint32) bool
	// Release returns n series of owner that table no longer keeps.
	Release(table string, owner uint32, n int)
}

// Config is a table's configuration.
type Config struct {
	// Name names the table to Budget ("http", "dns", "redis", ...).
	Name string
	// MaxSeries caps the series kept (at least 1).
	MaxSeries int
	// Groups is the number of overflow series: one per group of metrics an
	// exchange can be recorded on (HTTP: client and server; an L7
	// protocol: each declared metric). At least 1.
	Groups int
	// Processes gives the identity attributes of a series' owner (nil:
	// none, the tests').
	Processes *identity.Resolver
	// RetainDead is how long the series of an exited owner stay after
	// Housekeep first finds it gone (0: they go then).
	RetainDead time.Duration
	// Budget, when set, is asked for every new series (see Budget).
	Budget Budget
}

// Series is one attribute set: its key, what its points and its spans
// carry, and the metrics it records on (its own, or its group's overflow
// metrics). Key, Owner, Group, Set, Span, IdentLen, Folded and Overflowed
// never change after Add; M is guarded by the table's lock; Name, NameFor
// and Err are the writer's (the protocol's span name cache and status);
// the prepared span attributes are the span maker's (SpanAttributes).
type Series[K comparable, M any] struct {
	Key   K
	Owner uint32
	Group int
	// Set is what the points carry: the owner's identity and the
	// protocol's point attributes (OverflowSet for an overflow series).
	Set attribute.Set
	// Span is what a sampled span of the series carries before its own
	// per-exchange attributes: the owner's identity (IdentLen of them)
	// then the protocol's span attributes. Read-only: pass it to
	// SetAttributes, never append to it in place.
	Span     []attribute.KeyValue
	IdentLen int
	// Folded: the owner is a folded instance (its identity has no
	// process.pid), a span may add its own process's.
	Folded bool
	// Overflowed: not kept, M is the group's overflow metrics.
	Overflowed bool
	M          *M
	Name       string
	NameFor    string
	Err        bool

	prepared *spans.Attributes
}

// SpanAttributes returns Span prepared for em (spans.Emitter.Prepare): at
// the series' first span, then kept, so a span encodes only its own
// attributes. A collector has one Emitter, and only the goroutine that
// makes its spans calls this.
func (s *Series[K, M]) SpanAttributes(em spans.Emitter) *spans.Attributes {
	if s.prepared == nil {
		s.prepared = em.Prepare(s.Span...)
	}
	return s.prepared
}

// Attrs is what the protocol renders for a new series, past its owner's
// identity.
type Attrs struct {
	// Ident is the owner's identity when the protocol has it at hand
	// (nil: looked up).
	Ident *identity.Process
	// Point and Span are the protocol's attributes of the points and of
	// the spans. The table copies them.
	Point, Span []attribute.KeyValue
}

// Table is one collector's (or one protocol's) series.
type Table[K comparable, M any] struct {
	cfg      Config
	mu       sync.Mutex
	series   map[K]*Series[K, M]
	overflow []*Series[K, M] // by group, made at the first overflow
	dead     map[uint32]time.Time
	owners   map[uint32]int // series kept per owner (for Budget.Release)
}

// New returns an empty table.
func New[K comparable, M any](cfg Config) *Table[K, M] {
	if cfg.MaxSeries < 1 {
		cfg.MaxSeries = 1
	}
	if cfg.Groups < 1 {
		cfg.Groups = 1
	}
	return &Table[K, M]{
		cfg:      cfg,
		series:   map[K]*Series[K, M]{},
		overflow: make([]*Series[K, M], cfg.Groups),
		dead:     map[uint32]time.Time{},
		owners:   map[uint32]int{},
	}
}

// Get returns the kept series of k, or nil (writer only; no lock).
func (t *Table[K, M]) Get(k K) *Series[K, M] { return t.series[k] }

// Add makes the series of k, owned by owner and recorded in group, and
// keeps it unless the table is full or the budget refuses: then it is
// returned unkept (Overflowed, recording on the group's overflow metrics,
// its spans keeping their attributes), for the caller to cache per
// connection or to use once. A kept series of the same key is replaced
// (a protocol's hash collision). Writer only.
func (t *Table[K, M]) Add(k K, owner uint32, group int, a Attrs) *Series[K, M] {
	if group < 0 || group >= len(t.overflow) {
		group = 0
	}
	id := a.Ident
	if id == nil && t.cfg.Processes != nil {
		id = t.cfg.Processes.Lookup(owner)
	}
	var ident []attribute.KeyValue
	if id != nil {
		ident = id.Attributes()
	}
	s := &Series[K, M]{Key: k, Owner: owner, Group: group, IdentLen: len(ident), Folded: id != nil && id.PID == 0}
	s.Span = make([]attribute.KeyValue, 0, len(ident)+len(a.Span))
	s.Span = append(append(s.Span, ident...), a.Span...)
	old := t.series[k]
	if old == nil && !t.admit(owner) {
		t.mu.Lock()
		o := t.overflow[group]
		if o == nil {
			o = &Series[K, M]{Group: group, Set: OverflowSet, Overflowed: true, M: new(M)}
			t.overflow[group] = o
		}
		t.mu.Unlock()
		s.Set, s.M, s.Overflowed = OverflowSet, o.M, true
		return s
	}
	point := make([]attribute.KeyValue, 0, len(ident)+len(a.Point))
	point = append(append(point, ident...), a.Point...)
	s.Set = attribute.NewSet(point...)
	s.M = new(M)
	t.mu.Lock()
	t.series[k] = s
	if old == nil {
		t.owners[owner]++
	}
	t.mu.Unlock()
	return s
}

// admit is the one place a new series is admitted: the table's cap, then
// the agent's budget.
func (t *Table[K, M]) admit(owner uint32) bool {
	if len(t.series) >= t.cfg.MaxSeries {
		return false
	}
	return t.cfg.Budget == nil || t.cfg.Budget.Admit(t.cfg.Name, owner)
}

// Lock guards the metrics (M) of every series of the table.
func (t *Table[K, M]) Lock() { t.mu.Lock() }

// Unlock releases Lock.
func (t *Table[K, M]) Unlock() { t.mu.Unlock() }

// Len is the number of series kept.
func (t *Table[K, M]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.series)
}

// Each calls fn for every kept series, then for every group's overflow
// series that exists, with the lock held (fn reads M, never calls the
// table).
func (t *Table[K, M]) Each(fn func(*Series[K, M])) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.series {
		fn(s)
	}
	for _, o := range t.overflow {
		if o != nil {
			fn(o)
		}
	}
}

// Housekeep forgets the series of owners found dead for RetainDead (isDead
// is asked once per owner). Until then their last values are still
// reported. Writer only.
func (t *Table[K, M]) Housekeep(isDead func(owner uint32) bool, now time.Time) {
	var expired []uint32
	for owner := range t.owners {
		if owner == 0 || !isDead(owner) {
			delete(t.dead, owner) // alive again: an instance with a new process, a reused pid
			continue
		}
		since, ok := t.dead[owner]
		if !ok {
			since = now
			t.dead[owner] = now
		}
		if now.Sub(since) >= t.cfg.RetainDead {
			expired = append(expired, owner)
		}
	}
	if len(expired) == 0 {
		return
	}
	gone := make(map[uint32]bool, len(expired))
	for _, o := range expired {
		gone[o] = true
	}
	t.mu.Lock()
	for k, s := range t.series {
		if gone[s.Owner] {
			delete(t.series, k)
		}
	}
	t.mu.Unlock()
	for _, o := range expired {
		n := t.owners[o]
		delete(t.owners, o)
		delete(t.dead, o)
		if t.cfg.Budget != nil && n > 0 {
			t.cfg.Budget.Release(t.cfg.Name, o, n)
		}
	}
}

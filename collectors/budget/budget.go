// Package budget is the agent-wide series budget: one cap on the metric
// series every collector's tables keep together, so that a node's /metrics
// and its OTLP exports stay bounded whatever its processes, peers and
// names do. A series past the budget goes to its table's overflow series
// (otel.metric.overflow=true), as past a table's own cap, which stays as
// the finer limit; the series refused are counted per collector.
//
// A series here is one attribute set a table keeps (an HTTP route's
// client or server series with its histograms, a TCP peer's connection
// series), not one exposition line.
package budget

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Config is the budget's setting.
type Config struct {
	// MaxSeries caps the series kept by all collectors together (0: no
	// budget, only the tables' own caps).
	MaxSeries int
}

// DefaultMaxSeries bounds one node's series across collectors: with
// instances folded (process/identity), a busy node's services times their
// peers, routes and names. It is sized for issue 16's full scrape of at
// most 5 MB: a TCP series is ~2.7 kB of exposition (eight counters; its
// histograms are per instance and direction), so a budget full of TCP
// peers is ~3.2 MB (docs/benchmarks.md, "Series budget"); an HTTP route's
// series is ~5.5 kB and a DNS name's ~10 kB (two histograms each), so a
// budget full of those is larger: the budget counts attribute sets, not
// exposition lines.
const DefaultMaxSeries = 1000

// DefaultConfig returns the default budget.
func DefaultConfig() Config { return Config{MaxSeries: DefaultMaxSeries} }

// Validate checks c.
func (c Config) Validate() error {
	if c.MaxSeries < 0 || c.MaxSeries > 1<<24 {
		return fmt.Errorf("series.budget must be between 0 (none) and 16777216, got %d", c.MaxSeries)
	}
	return nil
}

// Budget admits new series up to its cap. Its methods are safe for
// concurrent use; a nil Budget admits everything.
type Budget struct {
	max  int64
	used atomic.Int64

	mu     sync.Mutex
	tables map[string]*counts
}

type counts struct{ kept, refused int64 }

// New returns a budget of max series (0: unlimited, nil).
func New(max int) *Budget {
	if max <= 0 {
		return nil
	}
	return &Budget{max: int64(max), tables: map[string]*counts{}}
}

// Max is the budget (0: none).
func (b *Budget) Max() int {
	if b == nil {
		return 0
	}
	return int(b.max)
}

// Admit reports whether table may keep one more series (owner is whose it
// is: the budget is agent-wide, not per owner).
func (b *Budget) Admit(table string, owner uint32) bool {
	if b == nil {
		return true
	}
	ok := false
	for {
		u := b.used.Load()
		if u >= b.max {
			break
		}
		if b.used.CompareAndSwap(u, u+1) {
			ok = true
			break
		}
	}
	b.mu.Lock()
	c := b.tables[table]
	if c == nil {
		c = &counts{}
		b.tables[table] = c
	}
	if ok {
		c.kept++
	} else {
		c.refused++
	}
	b.mu.Unlock()
	return ok
}

// Release gives back n series table no longer keeps.
func (b *Budget) Release(table string, owner uint32, n int) {
	if b == nil || n <= 0 {
		return
	}
	b.used.Add(-int64(n))
	b.mu.Lock()
	if c := b.tables[table]; c != nil {
		c.kept -= int64(n)
	}
	b.mu.Unlock()
}

// Used is the number of series kept under the budget.
func (b *Budget) Used() int {
	if b == nil {
		return 0
	}
	return int(b.used.Load())
}

// TableStats is one table's (collector's) share of the budget.
type TableStats struct {
	Table   string
	Kept    int64 // series it keeps under the budget now
	Refused int64 // new series sent to its overflow series by the budget, so far
}

// Stats returns every table's share, sorted by table.
func (b *Budget) Stats() []TableStats {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	out := make([]TableStats, 0, len(b.tables))
	for t, c := range b.tables {
		out = append(out, TableStats{Table: t, Kept: c.kept, Refused: c.refused})
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(a, b TableStats) int {
		switch {
		case a.Table < b.Table:
			return -1
		case a.Table > b.Table:
			return 1
		}
		return 0
	})
	return out
}

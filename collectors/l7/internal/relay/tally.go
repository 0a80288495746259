package relay

import (
	"fmt"
	"sort"
	"strings"

	"go.opentelemetry.io/otel/attribute"

	"github.com/otelbee/otelbee/collectors/l7"
)

// Tally is a sink that counts exchanges (and, on MessageCount metrics,
// messages) by metric and a few attributes' values. Use it through a Relay,
// which serializes its calls.
type Tally struct {
	keys  []attribute.Key
	count map[int]bool // metric indexes of MessageCount kind
	// N is keyed "<metric name> <value of each key, - when absent>".
	N     map[string]int64
	Drops map[string]int
	names map[int]string
	// Check, when set, sees every exchange (to assert on what a key does
	// not show).
	Check func(*l7.Exchange)
}

// NewTally counts the exchanges of proto by the values of keys; error.type
// may be one of them (it is Exchange.Error).
func NewTally(proto l7.Protocol, keys ...attribute.Key) *Tally {
	t := &Tally{keys: keys, count: map[int]bool{}, N: map[string]int64{}, Drops: map[string]int{}, names: map[int]string{}}
	for _, m := range proto.Metrics(l7.RoleClient) {
		t.names[m.Index] = m.Name
		if m.Kind == l7.MessageCount {
			t.count[m.Index] = true
		}
	}
	return t
}

// Exchange implements l7.Sink.
func (t *Tally) Exchange(_ *l7.Conn, x *l7.Exchange) {
	if t.Check != nil {
		t.Check(x)
	}
	var b strings.Builder
	b.WriteString(t.names[x.Metric])
	for _, k := range t.keys {
		v := "-"
		if k == "error.type" {
			if x.Error != "" {
				v = x.Error
			}
		} else {
			for _, a := range x.Attrs[:x.NAttr] {
				if a.Key == k {
					v = a.Value.Emit()
				}
			}
		}
		b.WriteByte(' ')
		b.WriteString(v)
	}
	if t.count[x.Metric] {
		t.N[b.String()] += x.Messages
	} else {
		t.N[b.String()]++
	}
}

// Drop implements l7.Sink.
func (t *Tally) Drop(_ *l7.Conn, reason string, n int) { t.Drops[reason] += n }

// String lists the counts, sorted.
func (t *Tally) String() string { return Format(t.N) }

// Format lists counts sorted by key, one a line.
func Format(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %d\n", k, m[k])
	}
	return b.String()
}

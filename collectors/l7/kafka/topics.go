package kafka

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
)

const (
	// maxIDs bounds the topic ids remembered from Metadata responses.
	maxIDs = 10000
	// maxPIDs bounds the processes whose topics are kept apart.
	maxPIDs = 4096
)

// topicEntry is one topic's attribute and span names, made once.
type topicEntry struct {
	attr       attribute.KeyValue
	send, poll string
}

// topics names topics within bounds: per process at most max names, the
// rest the shared _OTHER entry (counted by the parser), and the topic ids
// learned from Metadata. Parsers of different connections share it.
type topics struct {
	mu    sync.Mutex
	max   int
	pids  map[uint32]map[string]*topicEntry
	ids   map[[16]byte]string
	other *topicEntry
}

func newTopics(max int) *topics {
	return &topics{max: max, pids: map[uint32]map[string]*topicEntry{}, ids: map[[16]byte]string{}, other: entry(Other)}
}

func entry(name string) *topicEntry {
	return &topicEntry{attr: attribute.String("messaging.destination.name", name), send: "send " + name, poll: "poll " + name}
}

// name returns topic b's entry for process pid, and whether it is the
// overflow entry.
func (t *topics) name(pid uint32, b []byte) (*topicEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.pids[pid]
	if m == nil {
		if len(t.pids) >= maxPIDs {
			for k := range t.pids {
				delete(t.pids, k)
				break
			}
		}
		m = map[string]*topicEntry{}
		t.pids[pid] = m
	}
	if e, ok := m[string(b)]; ok {
		return e, false
	}
	if len(m) >= t.max {
		return t.other, true
	}
	e := entry(string(b))
	m[e.attr.Value.AsString()] = e
	return e, false
}

// byID returns the entry of the topic with id, when a Metadata response
// named it.
func (t *topics) byID(pid uint32, id [16]byte) (*topicEntry, bool, bool) {
	t.mu.Lock()
	name, ok := t.ids[id]
	t.mu.Unlock()
	if !ok {
		return nil, false, false
	}
	e, over := t.name(pid, []byte(name))
	return e, over, true
}

func (t *topics) learn(id [16]byte, name []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.ids[id]; ok && old == string(name) {
		return
	}
	if len(t.ids) >= maxIDs {
		for k := range t.ids {
			delete(t.ids, k)
			break
		}
	}
	t.ids[id] = string(name)
}

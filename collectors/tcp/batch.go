package tcp

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
)

// batchSize is the entries read per syscall: a hash map's batch must hold
// its fullest bucket (ENOSPC otherwise), which a few hundred always do.
const batchSize = 512

// mapReader reads every entry of a hash map, batchSize entries per
// syscall (BPF_MAP_LOOKUP_BATCH, kernel 5.6+) into buffers kept from one
// collection to the next: a collection at the series budget reads
// thousands of series, and one entry per lookup is two syscalls each
// (next key, then the value). Kernels without batch lookups fall back to
// that iteration. Safe for concurrent use (the Prometheus and the OTLP
// reader collect independently): one read at a time.
type mapReader[K, V any] struct {
	m      *ebpf.Map
	perKey int  // values per key: the possible CPUs of a per-CPU map, else 1
	perCPU bool // a per-CPU map takes a slice even with one possible CPU

	mu      sync.Mutex
	keys    []K
	vals    []V
	noBatch bool
}

func newMapReader[K, V any](m *ebpf.Map) (*mapReader[K, V], error) {
	r := &mapReader[K, V]{m: m, perKey: 1}
	if m.Type() == ebpf.PerCPUHash {
		n, err := ebpf.PossibleCPU()
		if err != nil {
			return nil, fmt.Errorf("counting possible CPUs: %w", err)
		}
		r.perKey, r.perCPU = n, true
	}
	return r, nil
}

// each calls fn with every entry, its values (perKey of them) valid only
// during the call.
func (r *mapReader[K, V]) each(fn func(k *K, v []V)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.noBatch {
		err := r.batches(fn)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		r.noBatch = true
	}
	var (
		k K
		v = make([]V, r.perKey)
	)
	var into any = &v
	if !r.perCPU {
		into = &v[0]
	}
	it := r.m.Iterate()
	for it.Next(&k, into) {
		fn(&k, v)
	}
	return it.Err()
}

func (r *mapReader[K, V]) batches(fn func(k *K, v []V)) error {
	if r.keys == nil {
		r.keys = make([]K, batchSize)
		r.vals = make([]V, batchSize*r.perKey)
	}
	var cursor ebpf.MapBatchCursor
	for first := true; ; first = false {
		n, err := r.m.BatchLookup(&cursor, r.keys, r.vals, nil)
		if first && errors.Is(err, ebpf.ErrNotSupported) {
			return err // nothing read yet: the caller iterates instead
		}
		for i := range n {
			fn(&r.keys[i], r.vals[i*r.perKey:(i+1)*r.perKey])
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("batch-reading the map: %w", err)
		}
	}
}

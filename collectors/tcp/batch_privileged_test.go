package tcp

import (
	"testing"

	"github.com/cilium/ebpf"
)

// TestPrivilegedMapReader: batched reads and the one-entry iteration they
// fall back to see every entry once, with every CPU's values, past one
// batch.
func TestPrivilegedMapReader(t *testing.T) {
	const entries = 3*batchSize + 17
	for _, typ := range []ebpf.MapType{ebpf.Hash, ebpf.PerCPUHash} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: entries})
		if err != nil {
			t.Skipf("creating a %s map: %v", typ, err)
		}
		defer m.Close()
		r, err := newMapReader[uint32, uint64](m)
		if err != nil {
			t.Fatal(err)
		}
		for k := range uint32(entries) {
			v := make([]uint64, r.perKey)
			for cpu := range v {
				v[cpu] = uint64(k)*1000 + uint64(cpu)
			}
			var val any = v
			if typ == ebpf.Hash {
				val = v[0]
			}
			if err := m.Put(k, val); err != nil {
				t.Fatal(err)
			}
		}
		for _, noBatch := range []bool{false, true} {
			r.noBatch = noBatch
			seen := map[uint32]bool{}
			err := r.each(func(k *uint32, v []uint64) {
				if seen[*k] {
					t.Errorf("%s (iterate %v): key %d twice", typ, noBatch, *k)
				}
				seen[*k] = true
				if len(v) != r.perKey {
					t.Fatalf("%s: %d values, want %d", typ, len(v), r.perKey)
				}
				for cpu, got := range v {
					if want := uint64(*k)*1000 + uint64(cpu); got != want {
						t.Errorf("%s (iterate %v): key %d cpu %d = %d, want %d", typ, noBatch, *k, cpu, got, want)
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != entries {
				t.Errorf("%s (iterate %v): %d entries, want %d", typ, noBatch, len(seen), entries)
			}
		}
	}
}

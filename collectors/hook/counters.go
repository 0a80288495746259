package hook

import "github.com/cilium/ebpf"

// SumCounters reads slots 0..n-1 of a per-CPU array of u64 counters and sums
// each over the CPUs. A nil map or an unreadable slot reads as zero: the
// counters feed self-telemetry, which must not fail a collection.
func SumCounters(m *ebpf.Map, n int) []uint64 {
	out := make([]uint64, n)
	if m == nil {
		return out
	}
	var perCPU []uint64
	for i := range out {
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			continue
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out
}

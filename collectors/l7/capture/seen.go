package capture

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// seenMarks writes the kernel's per-process marks (bpf/l7.c conns_seen):
// the read and write programs look a process's calls up in conns only when
// its slot is marked, so every entry user space puts in conns (the
// connections open before the start) must have its process marked first.
// One byte through the .bss map's memory: a read-modify-write of the whole
// map value could undo a mark the kernel set meanwhile.
type seenMarks struct {
	mem  *ebpf.Memory
	off  int64 // conns_seen's offset in the section
	size int64 // its slots
}

// newSeenMarks finds conns_seen in the loaded object's data section.
func newSeenMarks(spec *ebpf.VariableSpec, m *ebpf.Map) (*seenMarks, error) {
	if spec == nil || m == nil || spec.Size() == 0 {
		return nil, fmt.Errorf("finding the per-process marks: not in the object")
	}
	mem, err := m.Memory()
	if err != nil {
		return nil, fmt.Errorf("mapping the per-process marks: %w", err)
	}
	return &seenMarks{mem: mem, off: int64(spec.Offset), size: int64(spec.Size())}, nil
}

// markConns marks process tgid as one with conns entries (the kernel's
// mark_seen on conns_seen).
func (s *seenMarks) markConns(tgid uint32) error {
	slot := int64(tgid) % s.size
	var b [1]byte
	if _, err := s.mem.ReadAt(b[:], s.off+slot); err != nil {
		return fmt.Errorf("reading a process's mark: %w", err)
	}
	if b[0] != 0 {
		return nil
	}
	b[0] = 1
	if _, err := s.mem.WriteAt(b[:], s.off+slot); err != nil {
		return fmt.Errorf("marking a process: %w", err)
	}
	return nil
}

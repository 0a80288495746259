package tls

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// A Go binary's function table (.gopclntab) is read in place: discovery
// needs three functions of tens of thousands, and materialising the table
// (debug/gosym: the section copied to the heap, then a Func and a Sym with
// its name for every function) allocated ~4× the section, 180 MB for
// kube-apiserver's 46 MB table, most of it garbage a second later. The
// section is mapped read-only instead and only the function table and the
// names are walked; the pages touched are the page cache's, not the heap's,
// and leave the agent's RSS with the mapping.

// pclntab magics (the first word, in the binary's byte order).
const (
	pclnGo12  = 0xfffffffb
	pclnGo116 = 0xfffffffa
	pclnGo118 = 0xfffffff0
	pclnGo120 = 0xfffffff1
)

// errPclnFormat is a .gopclntab this reader does not know (older than Go
// 1.2, or newer than it).
var errPclnFormat = errors.New("unknown .gopclntab format")

// pclntab is a parsed .gopclntab header over the section's bytes.
type pclntab struct {
	order     binary.ByteOrder
	ptrSize   int
	fieldSize int  // width of a function table field: 4 since Go 1.18, else ptrSize
	relative  bool // function table entries are offsets from textStart (Go 1.18+)
	textStart uint64
	nfunc     int
	names     []byte // funcnametab: NUL-terminated names
	funcs     []byte // funcdata: the _func records, at the offsets functab gives
	functab   []byte // nfunc+1 (entry, _func offset) pairs, the last entry the end of text
}

// pcFunc is one function the table describes: [Entry, End) as debug/gosym's
// Func has them (End is the next function's entry).
type pcFunc struct {
	Name       string
	Entry, End uint64
}

// parsePclntab reads the header of a .gopclntab whose PCs are relative to
// textStart (Go 1.18+; see textStart).
func parsePclntab(data []byte, textStart uint64) (*pclntab, error) {
	if len(data) < 16 || data[4] != 0 || data[5] != 0 ||
		(data[6] != 1 && data[6] != 2 && data[6] != 4) || (data[7] != 4 && data[7] != 8) {
		return nil, errPclnFormat
	}
	p := &pclntab{ptrSize: int(data[7]), textStart: textStart}
	var magic uint32
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		switch m := o.Uint32(data); m {
		case pclnGo12, pclnGo116, pclnGo118, pclnGo120:
			p.order, magic = o, m
		}
	}
	if p.order == nil {
		return nil, errPclnFormat
	}
	uintptr := func(b []byte) uint64 {
		if p.ptrSize == 4 {
			return uint64(p.order.Uint32(b))
		}
		return p.order.Uint64(b)
	}
	word := func(i int) (uint64, error) {
		at := 8 + i*p.ptrSize
		if at+p.ptrSize > len(data) {
			return 0, fmt.Errorf("parsing .gopclntab: header truncated")
		}
		return uintptr(data[at:]), nil
	}
	from := func(i int) ([]byte, error) {
		off, err := word(i)
		if err != nil {
			return nil, err
		}
		if off > uint64(len(data)) {
			return nil, fmt.Errorf("parsing .gopclntab: table %d at %#x past the section's end %#x", i, off, len(data))
		}
		return data[off:], nil
	}
	n, err := word(0)
	if err != nil {
		return nil, err
	}
	p.fieldSize = p.ptrSize
	switch magic {
	case pclnGo118, pclnGo120:
		p.fieldSize, p.relative = 4, true
		if p.names, err = from(3); err == nil {
			p.funcs, err = from(7)
		}
	case pclnGo116:
		if p.names, err = from(2); err == nil {
			p.funcs, err = from(6)
		}
	case pclnGo12:
		p.names, p.funcs = data, data
	}
	if err != nil {
		return nil, err
	}
	p.functab = p.funcs
	if magic == pclnGo12 {
		p.functab = data[8+p.ptrSize:]
	}
	if n > uint64(len(p.functab)) || (2*n+1)*uint64(p.fieldSize) > uint64(len(p.functab)) {
		return nil, fmt.Errorf("parsing .gopclntab: %d functions do not fit in %d bytes", n, len(p.functab))
	}
	p.nfunc = int(n)
	p.functab = p.functab[:(2*p.nfunc+1)*p.fieldSize]
	return p, nil
}

// field is the i'th word of the function table.
func (p *pclntab) field(i int) uint64 {
	b := p.functab[i*p.fieldSize:]
	if p.fieldSize == 4 {
		return uint64(p.order.Uint32(b))
	}
	return p.order.Uint64(b)
}

// pc is the entry of the i'th function (i == nfunc: the end of the text).
func (p *pclntab) pc(i int) uint64 {
	v := p.field(2 * i)
	if p.relative {
		v += p.textStart
	}
	return v
}

// lookup finds each named function, the first of that name in address
// order (debug/gosym's LookupFunc); a name not found gives a zero pcFunc.
func (p *pclntab) lookup(names ...string) []pcFunc {
	out := make([]pcFunc, len(names))
	want := make([][]byte, len(names))
	for i, n := range names {
		want[i] = append([]byte(n), 0)
	}
	// _func: the entry (a uintptr, a uint32 offset since Go 1.18), then the
	// name's offset in funcnametab.
	nameAt := p.ptrSize
	if p.relative {
		nameAt = 4
	}
	left := len(names)
	for i := 0; i < p.nfunc && left > 0; i++ {
		off := p.field(2*i+1) + uint64(nameAt)
		if off+4 > uint64(len(p.funcs)) {
			continue
		}
		nameOff := uint64(p.order.Uint32(p.funcs[off:]))
		if nameOff >= uint64(len(p.names)) {
			continue
		}
		name := p.names[nameOff:]
		for j, w := range want {
			if out[j].Name == "" && bytes.HasPrefix(name, w) {
				out[j] = pcFunc{Name: names[j], Entry: p.pc(i), End: p.pc(i + 1)}
				left--
			}
		}
	}
	return out
}

// mapSection maps a section of the open file read-only. release unmaps it;
// a fault reading the mapping (the file truncated meanwhile) is a panic
// only under debug.SetPanicOnFault, which inspectGo sets.
func mapSection(file *os.File, s *elf.Section) (data []byte, release func(), err error) {
	if s.Type == elf.SHT_NOBITS || s.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, nil, fmt.Errorf("mapping %s: not stored plainly in the file", s.Name)
	}
	st, err := file.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("mapping %s: %w", s.Name, err)
	}
	if s.Size == 0 || s.Offset+s.Size > uint64(st.Size()) || s.Offset+s.Size < s.Offset {
		return nil, nil, fmt.Errorf("mapping %s: %d bytes at %#x do not fit in the %d-byte file", s.Name, s.Size, s.Offset, st.Size())
	}
	page := uint64(os.Getpagesize())
	start := s.Offset &^ (page - 1)
	m, err := syscall.Mmap(int(file.Fd()), int64(start), int(s.Offset+s.Size-start), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("mapping %s: %w", s.Name, err)
	}
	return m[s.Offset-start:], func() { _ = syscall.Munmap(m) }, nil
}

package tls

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
)

// fileOffset converts a virtual address to the file offset a uprobe takes,
// through the loadable segment that maps it.
func fileOffset(f *elf.File, addr uint64) (uint64, error) {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && addr >= p.Vaddr && addr < p.Vaddr+p.Memsz {
			return addr - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("address %#x is in no executable segment", addr)
}

// readCode reads n bytes of code at a virtual address.
func readCode(f *elf.File, addr, n uint64) ([]byte, error) {
	off, err := fileOffset(f, addr)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && off >= p.Off && off+n <= p.Off+p.Filesz {
			if _, err := p.ReadAt(b, int64(off-p.Off)); err != nil {
				return nil, fmt.Errorf("reading code at %#x: %w", addr, err)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("code at %#x is not in the file", addr)
}

func archOf(f *elf.File) (string, bool) {
	switch {
	case f.Machine == elf.EM_X86_64 && f.Class == elf.ELFCLASS64:
		return "amd64", true
	case f.Machine == elf.EM_AARCH64 && f.Class == elf.ELFCLASS64:
		return "arm64", true
	}
	return f.Machine.String(), false
}

// scanChunk is how much of a section is held in memory at a time while
// searching it: a 50 MB .rodata (node's) is streamed, never loaded whole.
const scanChunk = 1 << 20

// scanSection calls match on overlapping windows of a section's contents
// until it returns true; overlap must exceed the longest string sought.
func scanSection(s *elf.Section, overlap int, match func([]byte) bool) (bool, error) {
	if s == nil || s.Type == elf.SHT_NOBITS {
		return false, nil
	}
	r := s.Open()
	buf := make([]byte, scanChunk+overlap)
	keep := 0
	for {
		n, err := io.ReadFull(r, buf[keep:])
		data := buf[:keep+n]
		if len(data) > 0 && match(data) {
			return true, nil
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading section %s: %w", s.Name, err)
		}
		keep = copy(buf, data[len(data)-overlap:])
	}
}

// contains reports whether a section holds needle.
func contains(s *elf.Section, needle []byte) (bool, error) {
	return scanSection(s, len(needle), func(b []byte) bool { return bytes.Contains(b, needle) })
}

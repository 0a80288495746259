package tls

import (
	"bufio"
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"
)

// The crypto/tls methods a uprobe set attaches to.
const (
	goRead  = "crypto/tls.(*Conn).Read"
	goWrite = "crypto/tls.(*Conn).Write"
)

// maxFuncSize bounds what is read of one function (Read and Write are a few
// hundred bytes), so a corrupt pclntab cannot make us allocate gigabytes.
const maxFuncSize = 1 << 20

// inspectGo fills t for a Go executable (open as file) whose build info
// gave goVersion, or reports false when it does not link crypto/tls.
func inspectGo(file *os.File, f *elf.File, goVersion string, t *Target) bool {
	pcln := f.Section(".gopclntab")
	if pcln == nil {
		pcln = f.Section(".data.rel.ro.gopclntab")
	}
	if pcln == nil {
		// A Go binary always has a pclntab; without the section (some
		// external linkers merge it away) there is nothing to search.
		t.Stack, t.Version, t.Reason, t.Detail = StackGo, goVersion, ReasonNoSymbols, "no .gopclntab section"
		return true
	}
	data, release, err := mapSection(file, pcln)
	if err != nil {
		// Not mappable (a file system without mmap): read it, at the cost
		// of the section on the heap for the look-up.
		if data, err = pcln.Data(); err != nil {
			t.Stack, t.Version, t.Reason, t.Detail = StackGo, goVersion, ReasonUnreadable, fmt.Sprintf("reading .gopclntab: %v", err)
			return true
		}
		release = func() {}
	}
	// The file truncated under the mapping faults: a panic inspect recovers,
	// not the agent's death.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer release()
	tab, err := parsePclntab(data, textStart(f, data))
	if errors.Is(err, errPclnFormat) {
		if !bytes.Contains(data, []byte(goRead+"\x00")) {
			return false
		}
		t.Stack, t.Version, t.Reason, t.Detail = StackGo, goVersion, ReasonNoSymbols, "parsing .gopclntab: "+err.Error()
		return true
	}
	if err != nil {
		t.Stack, t.Version, t.Reason, t.Detail = StackGo, goVersion, ReasonNoSymbols, err.Error()
		return true
	}
	found := tab.lookup(goRead, goWrite, "runtime.memmove")
	read, write, memmove := found[0], found[1], found[2]
	if read.Name == "" && write.Name == "" {
		return false // a Go program without crypto/tls
	}
	t.Stack, t.Version, t.Static = StackGo, goVersion, true
	minor, ok := goMinor(goVersion)
	if !ok || minor < 17 || (t.Arch == "arm64" && minor < 18) {
		t.Reason, t.Detail = ReasonUnsupportedVersion, goVersion+": only the register ABI (Go 1.17+ amd64, 1.18+ arm64) is supported"
		return true
	}
	t.RegABI = true
	for _, fn := range []pcFunc{read, write} {
		if fn.Name == "" {
			t.Reason, t.Detail = ReasonMissingSymbol, "crypto/tls.(*Conn).Read or Write missing"
			return true
		}
		off, err := fileOffset(f, fn.Entry)
		if err != nil {
			t.Reason, t.Detail = ReasonNoSymbols, err.Error()
			return true
		}
		if fn.End <= fn.Entry || fn.End-fn.Entry > maxFuncSize {
			t.Reason, t.Detail = ReasonDisassembly, fmt.Sprintf("%s: implausible size %d", fn.Name, fn.End-fn.Entry)
			return true
		}
		code, err := readCode(f, fn.Entry, fn.End-fn.Entry)
		if err != nil {
			t.Reason, t.Detail = ReasonUnreadable, err.Error()
			return true
		}
		rets, err := returns(t.Arch, code)
		if err != nil || len(rets) == 0 {
			t.Reason, t.Detail = ReasonDisassembly, fmt.Sprintf("%s: %v (%d returns)", fn.Name, err, len(rets))
			return true
		}
		for i := range rets {
			rets[i] += off
		}
		gf := Func{Name: fn.Name, Addr: fn.Entry, Offset: off, Returns: rets}
		if fn.Name == goRead && t.Arch == "amd64" && memmove.Name != "" {
			if at, ok := onlyCallTo(code, fn.Entry, memmove.Entry); ok {
				gf.Copy = off + uint64(at)
				if slot, ok := recvSlot(code); ok {
					gf.CopyRecvSlot = slot
				}
			}
		}
		// Past the stack check (cmp rsp, [r14+16]: single-stepped) and its
		// branch to morestack (which restarts the function: a probe on
		// either runs twice in a call that grows the stack) to the frame's
		// push rbp (emulated): the arguments are still in their registers.
		// No uretprobe, so the stack pointer may have moved.
		cheapEntry(f, t.Arch, &gf, fn.End-fn.Entry, goRegs, false, true)
		t.Funcs = append(t.Funcs, gf)
	}
	fd, err := goFDFromDWARF(f)
	if err != nil {
		known, ok := goFDTable["go1."+strconv.Itoa(minor)]
		if !ok {
			t.Reason, t.Detail = ReasonUnsupportedVersion, goVersion+": no DWARF and not in the struct-offset table"
			return true
		}
		known.Source = "table"
		fd = &known
	}
	t.FD = fd
	return true
}

// textStart is the address pclntab's PCs are relative to: the header's
// runtime.text (Go 1.18+), else the .text section's address.
func textStart(f *elf.File, pcln []byte) uint64 {
	if len(pcln) >= 8 {
		ptr := int(pcln[7])
		off := 8 + 2*ptr
		if (ptr == 8) && len(pcln) >= off+8 {
			if v := f.ByteOrder.Uint64(pcln[off:]); v != 0 {
				return v
			}
		} else if ptr == 4 && len(pcln) >= off+4 {
			if v := uint64(f.ByteOrder.Uint32(pcln[off:])); v != 0 {
				return v
			}
		}
	}
	if s := f.Section(".text"); s != nil {
		return s.Addr
	}
	return 0
}

// goMinor parses "go1.26.8" (or "go1.27rc1") into 26.
func goMinor(v string) (int, bool) {
	rest, ok := strings.CutPrefix(v, "go1.")
	if !ok {
		return 0, false
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(rest[:end])
	return n, err == nil
}

// returns disassembles a function and gives the offset of each return
// instruction from its entry.
func returns(arch string, code []byte) ([]uint64, error) {
	var out []uint64
	switch arch {
	case "amd64":
		for pc := 0; pc < len(code); {
			inst, err := x86asm.Decode(code[pc:], 64)
			if err != nil {
				return out, fmt.Errorf("decoding at +%#x: %w", pc, err)
			}
			if inst.Op == x86asm.RET {
				out = append(out, uint64(pc))
			}
			pc += inst.Len
		}
	case "arm64":
		// Fixed-width instructions: an undecodable word cannot desynchronise
		// the walk.
		for pc := 0; pc+4 <= len(code); pc += 4 {
			if inst, err := arm64asm.Decode(code[pc : pc+4]); err == nil && inst.Op == arm64asm.RET {
				out = append(out, uint64(pc))
			}
		}
	default:
		return nil, fmt.Errorf("no disassembler for %s", arch)
	}
	return out, nil
}

// maxDWARFUnit bounds the one compilation unit held at a time (Go's
// runtime unit, which holds every type, is a few MB in a large binary), so
// a corrupt length cannot make discovery allocate gigabytes.
const maxDWARFUnit = 64 << 20

// goFDFromDWARF reads the field offsets of GoFD from the binary's DWARF.
//
// .debug_info (decompressed: tens of MB in a large binary) is streamed one
// compilation unit at a time through one reused buffer, and the search
// stops at the unit that completes it (Go's linker puts every type in the
// runtime unit, one of the first): f.DWARF() would decompress all of it,
// and the line, location and range tables too, which struct offsets never
// use.
func goFDFromDWARF(f *elf.File) (*GoFD, error) {
	info := f.Section(".debug_info")
	if info == nil || info.Type == elf.SHT_NOBITS {
		return nil, errors.New("reading DWARF: no .debug_info")
	}
	data := func(name string) ([]byte, error) {
		s := f.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			return nil, nil
		}
		return s.Data() // decompresses SHF_COMPRESSED sections
	}
	abbrev, err := data(".debug_abbrev")
	if err != nil {
		return nil, fmt.Errorf("reading DWARF: %w", err)
	}
	str, err := data(".debug_str")
	if err != nil {
		return nil, fmt.Errorf("reading DWARF: %w", err)
	}
	extra := map[string][]byte{}
	for _, name := range []string{".debug_addr", ".debug_str_offsets", ".debug_line_str"} {
		b, err := data(name)
		if err != nil {
			return nil, fmt.Errorf("reading DWARF %s: %w", name, err)
		}
		if b != nil {
			extra[name] = b
		}
	}
	s := newFDSearch()
	// Go's linker puts every type in the runtime unit: the other units'
	// entries (functions, their variables: most of the section) are
	// skipped unparsed, unless the runtime unit does not complete the
	// search (another linker), when a second pass reads every unit.
	for _, runtimeOnly := range []bool{true, false} {
		if err := s.pass(info, f.ByteOrder, abbrev, str, extra, runtimeOnly); err != nil {
			return nil, err
		}
		if s.done() {
			break
		}
	}
	if !s.done() {
		return nil, fmt.Errorf("DWARF lacks %d of the tls.Conn-to-fd fields", len(s.want)-s.found)
	}
	return s.fd, nil
}

// pass streams .debug_info through one reused buffer and searches each
// unit (only the one named runtime when runtimeOnly).
func (s *fdSearch) pass(info *elf.Section, order binary.ByteOrder, abbrev, str []byte, extra map[string][]byte, runtimeOnly bool) error {
	r := bufio.NewReaderSize(info.Open(), 64<<10)
	var unit []byte
	for !s.done() {
		var err error
		unit, err = nextDWARFUnit(r, order, unit[:0])
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		d, err := dwarf.New(abbrev, nil, nil, unit, nil, nil, nil, str)
		if err != nil {
			return fmt.Errorf("reading DWARF: %w", err)
		}
		for name, b := range extra {
			if err := d.AddSection(name, b); err != nil {
				return fmt.Errorf("reading DWARF %s: %w", name, err)
			}
		}
		if err := s.unit(d.Reader(), runtimeOnly); err != nil {
			return err
		}
	}
	return nil
}

// nextDWARFUnit appends the next whole compilation unit of .debug_info
// (its length field included) to buf; io.EOF at the section's end.
func nextDWARFUnit(r io.Reader, order binary.ByteOrder, buf []byte) ([]byte, error) {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		if errors.Is(err, io.EOF) {
			return buf, io.EOF
		}
		return buf, fmt.Errorf("reading DWARF unit header: %w", err)
	}
	n, hl := uint64(order.Uint32(hdr[:4])), 4
	if n == 0xffffffff { // 64-bit DWARF
		if _, err := io.ReadFull(r, hdr[4:12]); err != nil {
			return buf, fmt.Errorf("reading DWARF unit header: %w", err)
		}
		n, hl = order.Uint64(hdr[4:12]), 12
	}
	if n > maxDWARFUnit {
		return buf, fmt.Errorf("reading DWARF: a %d-byte unit (more than %d)", n, maxDWARFUnit)
	}
	buf = append(buf, hdr[:hl]...)
	buf = slices.Grow(buf, int(n))[:hl+int(n)]
	if _, err := io.ReadFull(r, buf[hl:]); err != nil {
		return buf, fmt.Errorf("reading DWARF unit: %w", err)
	}
	return buf, nil
}

// fdSearch collects GoFD's offsets from the struct types it meets.
type fdSearch struct {
	fd    *GoFD
	want  map[[2]string]*uint64 // {type, member}
	types map[string]bool       // types not yet seen
	found int
}

func newFDSearch() *fdSearch {
	fd := &GoFD{IfaceData: 8, Source: "dwarf"}
	s := &fdSearch{fd: fd, want: map[[2]string]*uint64{
		{"crypto/tls.Conn", "conn"}:   &fd.ConnConn,
		{"net.TCPConn", "conn"}:       &fd.TCPConnConn,
		{"net.conn", "fd"}:            &fd.ConnFD,
		{"net.netFD", "pfd"}:          &fd.NetFDPfd,
		{"internal/poll.FD", "Sysfd"}: &fd.FDSysfd,
	}, types: map[string]bool{}}
	for k := range s.want {
		s.types[k[0]] = true
	}
	return s
}

func (s *fdSearch) done() bool { return s.found == len(s.want) }

// unit reads one unit's entries, the top-level ones and the members of the
// types sought; only the unit named runtime when runtimeOnly.
func (s *fdSearch) unit(r *dwarf.Reader, runtimeOnly bool) error {
	for !s.done() {
		e, err := r.Next()
		if err != nil {
			return fmt.Errorf("reading DWARF: %w", err)
		}
		if e == nil {
			return nil
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if e.Tag == dwarf.TagCompileUnit {
			if runtimeOnly && name != "runtime" {
				return nil
			}
			continue
		}
		if e.Tag != dwarf.TagStructType || !s.types[name] {
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		delete(s.types, name) // each type once, even if repeated per unit
		for e.Children {
			m, err := r.Next()
			if err != nil || m == nil || m.Tag == 0 {
				break
			}
			mname, _ := m.Val(dwarf.AttrName).(string)
			if p, ok := s.want[[2]string{name, mname}]; ok {
				if loc, ok := m.Val(dwarf.AttrDataMemberLoc).(int64); ok {
					*p = uint64(loc)
					s.found++
				}
			}
			if m.Children {
				r.SkipChildren()
			}
		}
	}
	return nil
}

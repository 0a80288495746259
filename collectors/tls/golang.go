package tls

import (
	"debug/dwarf"
	"debug/elf"
	"debug/gosym"
	"fmt"
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

// inspectGo fills t for a Go executable whose build info gave goVersion,
// or reports false when it does not link crypto/tls.
func inspectGo(f *elf.File, goVersion string, t *Target) bool {
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
	data, err := pcln.Data()
	if err != nil {
		t.Stack, t.Version, t.Reason, t.Detail = StackGo, goVersion, ReasonUnreadable, fmt.Sprintf("reading .gopclntab: %v", err)
		return true
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, textStart(f, data)))
	if err != nil {
		t.Stack, t.Version, t.Reason, t.Detail = StackGo, goVersion, ReasonNoSymbols, fmt.Sprintf("parsing .gopclntab: %v", err)
		return true
	}
	read, write := tab.LookupFunc(goRead), tab.LookupFunc(goWrite)
	if read == nil && write == nil {
		return false // a Go program without crypto/tls
	}
	t.Stack, t.Version, t.Static = StackGo, goVersion, true
	minor, ok := goMinor(goVersion)
	if !ok || minor < 17 || (t.Arch == "arm64" && minor < 18) {
		t.Reason, t.Detail = ReasonUnsupportedVersion, goVersion+": only the register ABI (Go 1.17+ amd64, 1.18+ arm64) is supported"
		return true
	}
	t.RegABI = true
	for _, fn := range []*gosym.Func{read, write} {
		if fn == nil {
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
		if fn == read && t.Arch == "amd64" {
			if mm := tab.LookupFunc("runtime.memmove"); mm != nil {
				if at, ok := onlyCallTo(code, fn.Entry, mm.Entry); ok {
					gf.Copy = off + uint64(at)
				}
			}
		}
		// Past the stack check (cmp rsp, [r14+16]; single-stepped) to its
		// conditional branch (emulated): the arguments are still in their
		// registers. No uretprobe, so the stack pointer may have moved.
		cheapEntry(f, t.Arch, &gf, fn.End-fn.Entry, goRegs, false)
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

// typeDWARF opens only the DWARF sections type entries need: f.DWARF()
// would also decompress the line, location and range tables, most of the
// debug data, which struct offsets never use.
func typeDWARF(f *elf.File) (*dwarf.Data, error) {
	data := func(name string) ([]byte, error) {
		s := f.Section(name)
		if s == nil {
			return nil, nil
		}
		return s.Data() // decompresses SHF_COMPRESSED sections
	}
	info, err := data(".debug_info")
	if err != nil || info == nil {
		return nil, fmt.Errorf("reading DWARF: no .debug_info (%v)", err)
	}
	abbrev, err := data(".debug_abbrev")
	if err != nil {
		return nil, fmt.Errorf("reading DWARF: %w", err)
	}
	str, err := data(".debug_str")
	if err != nil {
		return nil, fmt.Errorf("reading DWARF: %w", err)
	}
	d, err := dwarf.New(abbrev, nil, nil, info, nil, nil, nil, str)
	if err != nil {
		return nil, fmt.Errorf("reading DWARF: %w", err)
	}
	for _, name := range []string{".debug_addr", ".debug_str_offsets", ".debug_line_str"} {
		if b, err := data(name); err == nil && b != nil {
			if err := d.AddSection(name, b); err != nil {
				return nil, fmt.Errorf("reading DWARF %s: %w", name, err)
			}
		}
	}
	return d, nil
}

// goFDFromDWARF reads the field offsets of GoFD from the binary's DWARF.
func goFDFromDWARF(f *elf.File) (*GoFD, error) {
	d, err := typeDWARF(f)
	if err != nil {
		return nil, err
	}
	type field struct{ typ, member string }
	want := map[field]*uint64{}
	fd := &GoFD{IfaceData: 8, Source: "dwarf"}
	want[field{"crypto/tls.Conn", "conn"}] = &fd.ConnConn
	want[field{"net.TCPConn", "conn"}] = &fd.TCPConnConn
	want[field{"net.conn", "fd"}] = &fd.ConnFD
	want[field{"net.netFD", "pfd"}] = &fd.NetFDPfd
	want[field{"internal/poll.FD", "Sysfd"}] = &fd.FDSysfd
	types := map[string]bool{}
	for k := range want {
		types[k.typ] = true
	}
	found := 0
	r := d.Reader()
	for found < len(want) {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("reading DWARF: %w", err)
		}
		if e == nil {
			break
		}
		if e.Tag == dwarf.TagCompileUnit {
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if e.Tag != dwarf.TagStructType || !types[name] {
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		delete(types, name) // each type once, even if repeated per unit
		for e.Children {
			m, err := r.Next()
			if err != nil || m == nil || m.Tag == 0 {
				break
			}
			mname, _ := m.Val(dwarf.AttrName).(string)
			if p, ok := want[field{name, mname}]; ok {
				if loc, ok := m.Val(dwarf.AttrDataMemberLoc).(int64); ok {
					*p = uint64(loc)
					found++
				}
			}
			if m.Children {
				r.SkipChildren()
			}
		}
	}
	if found < len(want) {
		return nil, fmt.Errorf("DWARF lacks %d of the tls.Conn-to-fd fields", len(want)-found)
	}
	return fd, nil
}

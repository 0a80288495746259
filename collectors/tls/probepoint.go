package tls

import (
	"debug/elf"

	"golang.org/x/arch/x86/x86asm"
)

// Where an entry probe goes (amd64).
//
// A uprobe replaces an instruction with a breakpoint; when it is hit the
// kernel runs the probe's programs and then either emulates the original
// instruction or single-steps a copy of it out of line. The single step is
// a second trap, and on a virtual machine the expensive one: on the 2-core
// VM of the benchmarks a probe on `sub rsp`, `lea` or `ret` costs ~14 µs,
// one on a relative jump, call, conditional branch, push or nop ~0.4 µs
// (BenchmarkUprobeTrap). OpenSSL's SSL_read begins with `sub $0x18,%rsp`, Go's
// functions with the stack check `cmp rsp, [r14+16]`: every TLS call paid
// the 14 µs.
//
// So the entry probe goes on the function's first instruction the kernel
// emulates, when every instruction before it runs on every call (no branch
// before it) and leaves the registers the probe's program reads as they
// were at entry. A uretprobe placed there also needs the stack pointer
// unchanged (the kernel hijacks the return address at [rsp]). Whether the
// kernel emulates an instruction only changes the cost, never what is seen:
// a kernel that single-steps it is as correct, and as slow, as before.

// maxPrologue bounds the instructions looked at before giving up.
const maxPrologue = 16

// endbr64 is the CET landing pad (f3 0f 1e fa), which x86asm does not
// decode; it changes no register.
var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// emulated reports whether the kernel's x86 uprobes emulate inst rather than
// single-stepping it: relative jumps, calls and conditional branches, nops,
// and pushes of a 64-bit register (arch/x86/kernel/uprobes.c).
func emulated(inst x86asm.Inst) bool {
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if byte(p)&0xf0 != 0x40 { // REX only: an operand-size prefix is not emulated
			return false
		}
	}
	switch inst.Op {
	case x86asm.JMP, x86asm.CALL:
		_, rel := inst.Args[0].(x86asm.Rel)
		return rel
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JNE, x86asm.JG, x86asm.JGE,
		x86asm.JL, x86asm.JLE, x86asm.JO, x86asm.JNO, x86asm.JP, x86asm.JNP, x86asm.JS, x86asm.JNS:
		_, rel := inst.Args[0].(x86asm.Rel)
		return rel
	case x86asm.NOP:
		return true
	case x86asm.PUSH:
		r, ok := inst.Args[0].(x86asm.Reg)
		return ok && r >= x86asm.RAX && r <= x86asm.R15
	}
	return false
}

// branches reports whether inst may transfer control.
func branches(inst x86asm.Inst) bool {
	switch inst.Op {
	case x86asm.JMP, x86asm.CALL, x86asm.RET, x86asm.LCALL, x86asm.LJMP, x86asm.LRET, x86asm.SYSCALL,
		x86asm.INT, x86asm.UD2, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE, x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ:
		return true
	}
	return isJcc(inst.Op)
}

func isJcc(op x86asm.Op) bool {
	switch op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JNE, x86asm.JG, x86asm.JGE,
		x86asm.JL, x86asm.JLE, x86asm.JO, x86asm.JNO, x86asm.JP, x86asm.JNP, x86asm.JS, x86asm.JNS:
		return true
	}
	return false
}

// full64 maps a register of any width to its 64-bit register.
func full64(r x86asm.Reg) x86asm.Reg {
	switch {
	case r >= x86asm.AL && r <= x86asm.R15B:
		// AL CL DL BL AH CH DH BH SPB BPB SIB DIB R8B..R15B
		i := r - x86asm.AL
		switch {
		case i < 4:
			return x86asm.RAX + i
		case i < 8:
			return x86asm.RAX + (i - 4) // AH..BH
		default:
			return x86asm.RAX + (i - 4)
		}
	case r >= x86asm.AX && r <= x86asm.R15W:
		return x86asm.RAX + (r - x86asm.AX)
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return x86asm.RAX + (r - x86asm.EAX)
	}
	return r
}

// harmless reports whether inst, met before the probe point, changes
// nothing the probe reads: no register in keep, and the stack pointer only
// when sp is false. Only instructions whose effects are plain are allowed:
// compares and tests, and moves, loads, xors, subtractions, additions and
// sign extensions into a register not kept (memory writes are harmless to a
// probe that reads registers).
func harmless(inst x86asm.Inst, keep []x86asm.Reg, sp bool) bool {
	switch inst.Op {
	case x86asm.CMP, x86asm.TEST:
		return true
	case x86asm.MOV, x86asm.LEA, x86asm.XOR, x86asm.SUB, x86asm.ADD, x86asm.MOVSXD, x86asm.MOVZX, x86asm.MOVSX, x86asm.AND, x86asm.OR:
	default:
		return false
	}
	dst := inst.Args[0]
	switch d := dst.(type) {
	case x86asm.Mem:
		return inst.Op == x86asm.MOV // a store; flags untouched, registers too
	case x86asm.Reg:
		r := full64(d)
		if r == x86asm.RSP {
			return !sp
		}
		for _, k := range keep {
			if r == k {
				return false
			}
		}
		return r >= x86asm.RAX && r <= x86asm.R15
	}
	return false
}

// entryPoint finds, in a function's code, the offset of the first
// instruction the kernel emulates such that a probe there sees the
// registers in keep as they were at entry (and the stack pointer too when
// sp). ok is false when there is none within maxPrologue instructions: the
// probe then stays on the entry.
//
// With goStack, Go's stack check (cmp rsp or r12, [r14+16]; jbe) is passed
// over, not probed: its branch is taken when the goroutine's stack must
// grow, and runtime.morestack then restarts the function from its entry,
// so every instruction up to and including that branch runs twice in such
// a call. A probe there ran its program twice for one call (Write, captured
// at entry, had its plaintext captured twice). The first instruction after
// the branch runs once per call, with the arguments still in their
// registers (the restart reloads what morestack spilled).
func entryPoint(code []byte, keep []x86asm.Reg, sp, goStack bool) (off int, ok bool) {
	var prev x86asm.Inst
	for pc, n := 0, 0; pc < len(code) && n < maxPrologue; n++ {
		if len(code[pc:]) >= 4 && string(code[pc:pc+4]) == string(endbr64) {
			pc += 4
			continue
		}
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return 0, false
		}
		if goStack && inst.Op == x86asm.JBE && goStackGuard(prev) {
			prev = inst
			pc += inst.Len
			continue
		}
		if emulated(inst) {
			return pc, true
		}
		prev = inst
		if branches(inst) || !harmless(inst, keep, sp) {
			return 0, false
		}
		pc += inst.Len
	}
	return 0, false
}

// goStackGuard reports whether inst compares a register with the current
// goroutine's stackguard0 (g in r14, the field at 16): Go's stack check.
func goStackGuard(inst x86asm.Inst) bool {
	if inst.Op != x86asm.CMP {
		return false
	}
	m, ok := inst.Args[1].(x86asm.Mem)
	return ok && m.Base == x86asm.R14 && m.Index == 0 && m.Disp == 16 && m.Segment == 0
}

// firstCall follows a function's code from its entry, through conditional
// branches not taken, to its first direct call or jump and returns the
// callee's address, provided nothing before it changed the argument
// registers in keep: the callee then receives the function's own arguments.
func firstCall(code []byte, addr uint64, keep []x86asm.Reg) (callee uint64, ok bool) {
	for pc, n := 0, 0; pc < len(code) && n < maxPrologue; n++ {
		if len(code[pc:]) >= 4 && string(code[pc:pc+4]) == string(endbr64) {
			pc += 4
			continue
		}
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return 0, false
		}
		next := pc + inst.Len
		switch {
		case inst.Op == x86asm.CALL || inst.Op == x86asm.JMP:
			rel, isRel := inst.Args[0].(x86asm.Rel)
			if !isRel {
				return 0, false
			}
			return uint64(int64(addr) + int64(next) + int64(rel)), true
		case isJcc(inst.Op):
			// The fall-through path; the branch taken is an error path
			// (SSL_read's negative length).
		case branches(inst) || !harmless(inst, keep, false):
			return 0, false
		}
		pc = next
	}
	return 0, false
}

// Argument registers of the System V amd64 ABI.
var sysvArgs = []x86asm.Reg{x86asm.RDI, x86asm.RSI, x86asm.RDX, x86asm.RCX}

// Go's register ABI: the first three integer arguments, and the goroutine.
var goRegs = []x86asm.Reg{x86asm.RAX, x86asm.RBX, x86asm.RCX, x86asm.R14}

// cheapEntry sets fn.Probe to the cheapest entry point of fn's code in f
// (amd64 only; elsewhere the probe stays on the entry).
func cheapEntry(f *elf.File, arch string, fn *Func, size uint64, keep []x86asm.Reg, sp, goStack bool) {
	if arch != "amd64" {
		return
	}
	code, err := readCode(f, fn.Addr, min(size, 256))
	if err != nil {
		return
	}
	if off, ok := entryPoint(code, keep, sp, goStack); ok && off > 0 {
		fn.Probe = fn.Offset + uint64(off)
	}
}

// onlyCallTo finds the one direct call to target in a function's code (at
// addr) and returns its offset; ok is false when there is none or more
// than one.
//
// Go's (*Conn).Read hands out its plaintext with copy(b, c.input's
// unread bytes) (bytes.Reader.Read, inlined), which calls runtime.memmove
// with the destination, source and count in ax, bx and cx. A probe on that
// call (a relative call: emulated, ~0.4 µs) sees the count Read returns and
// the plaintext at its source, so Read's return instructions (a single
// step each, ~14 µs on a VM) need no probe.
func onlyCallTo(code []byte, addr, target uint64) (off int, ok bool) {
	found := -1
	for pc := 0; pc < len(code); {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return 0, false
		}
		if rel, isRel := inst.Args[0].(x86asm.Rel); inst.Op == x86asm.CALL && isRel &&
			uint64(int64(addr)+int64(pc+inst.Len)+int64(rel)) == target {
			if found >= 0 {
				return 0, false
			}
			found = pc
		}
		pc += inst.Len
	}
	return found, found >= 0
}

// recvSlot finds where Go's (*Conn).Read keeps its receiver at its copy of
// the plaintext, so that the copy's probe needs no entry probe (two traps
// and two program runs per net/http request: the request's Read and the
// background read that ends in an error).
//
// Read calls other functions before the copy (the handshake, readRecord),
// and Go keeps no register across a call, so the prologue spills the
// receiver (ax) to a stack slot. The slot is taken when, in the
// straight-line code from the entry (the stack check's branch to
// morestack not taken: that path restarts the function), the frame is
// made (push rbp; mov rbp, rsp; sub rsp, N) and ax, unchanged since the
// entry, is stored at [rsp+d] before any other branch or call; when no
// other instruction of the function writes to or takes the address of
// bytes of that slot; and when nothing but the prologue and the epilogues
// (add rsp, N before a return or tail jump) moves the stack pointer, so
// that it is the body's at the copy. d is then the slot's place from the
// stack pointer at the copy.
func recvSlot(code []byte) (slot uint64, ok bool) {
	var frame int64 = -1 // N: the body's stack pointer is entry - 8 - N
	pushed, spill := false, int64(-1)
	pc := 0
prologue:
	for n := 0; pc < len(code) && n < 2*maxPrologue; n++ {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return 0, false
		}
		switch {
		case inst.Op == x86asm.CMP || inst.Op == x86asm.TEST || inst.Op == x86asm.NOP:
		case isJcc(inst.Op) && frame < 0: // the stack check's branch to morestack
		case inst.Op == x86asm.PUSH && inst.Args[0] == x86asm.RBP && !pushed && frame < 0:
			pushed = true
		case inst.Op == x86asm.MOV && inst.Args[0] == x86asm.RBP && inst.Args[1] == x86asm.RSP && pushed && frame < 0:
		case inst.Op == x86asm.SUB && inst.Args[0] == x86asm.RSP && pushed && frame < 0:
			imm, isImm := inst.Args[1].(x86asm.Imm)
			if !isImm || imm <= 0 {
				return 0, false
			}
			frame = int64(imm)
		case frame >= 0 && inst.Op == x86asm.MOV && inst.Args[1] == x86asm.RAX:
			m, isMem := inst.Args[0].(x86asm.Mem)
			if isMem && m.Base == x86asm.RSP && m.Index == 0 && m.Segment == 0 && m.Disp > 0 {
				spill = m.Disp
				pc += inst.Len
				break prologue
			}
			// a store of ax elsewhere: harmless, ax is unchanged
			if !isMem {
				return 0, false
			}
		case frame >= 0 && harmless(inst, []x86asm.Reg{x86asm.RAX}, true):
		case frame >= 0 && isStore(inst): // Go zeroes its locals (movq %xmm15, movups %xmm15)
		default:
			return 0, false
		}
		pc += inst.Len
	}
	if spill < 0 {
		return 0, false
	}
	// The whole function: nothing else writes the slot's bytes, no address
	// at or past the frame's end is taken (the arguments' spill area: a
	// pointer into the frame's locals cannot reach it, Go being memory
	// safe), and the stack pointer moves only in the prologue and the
	// epilogues. rbp is the body's rsp + N.
	overlaps := func(m x86asm.Mem, size int64) bool {
		if m.Segment != 0 {
			return false
		}
		switch m.Base {
		case x86asm.RSP:
			return m.Index != 0 || (m.Disp+size > spill && m.Disp < spill+8)
		case x86asm.RBP:
			return m.Index != 0 || (m.Disp+size > spill-frame && m.Disp < spill-frame+8)
		}
		return false
	}
	outside := func(m x86asm.Mem) bool {
		return (m.Base == x86asm.RSP && m.Disp >= frame) || (m.Base == x86asm.RBP && m.Disp >= 0)
	}
	seenSpill := false
	for pc := 0; pc < len(code); {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return 0, false
		}
		next := pc + inst.Len
		if m, isMem := inst.Args[0].(x86asm.Mem); isMem && inst.Op != x86asm.CMP && inst.Op != x86asm.TEST {
			size := int64(inst.MemBytes)
			if size == 0 {
				size = 64
			}
			if inst.Op == x86asm.MOV && inst.Args[1] == x86asm.RAX && m.Base == x86asm.RSP && m.Disp == spill && !seenSpill {
				seenSpill = true // the prologue's spill
			} else if overlaps(m, size) {
				return 0, false
			}
		}
		if inst.Op == x86asm.LEA {
			if m, isMem := inst.Args[1].(x86asm.Mem); isMem && outside(m) {
				return 0, false
			}
		}
		switch inst.Op {
		case x86asm.PUSH, x86asm.POP, x86asm.PUSHF, x86asm.POPF, x86asm.ENTER, x86asm.LEAVE:
			// the prologue's push rbp, the epilogues' pop rbp
			if !(len(inst.Args) > 0 && inst.Args[0] == x86asm.RBP) {
				return 0, false
			}
		default:
			if r, isReg := inst.Args[0].(x86asm.Reg); isReg && full64(r) == x86asm.RSP && inst.Op != x86asm.CMP && inst.Op != x86asm.TEST {
				imm, isImm := inst.Args[1].(x86asm.Imm)
				if !isImm || int64(imm) != frame || (inst.Op != x86asm.SUB && inst.Op != x86asm.ADD) {
					return 0, false
				}
			}
		}
		pc = next
	}
	if !seenSpill {
		return 0, false
	}
	return uint64(spill), true
}

// isStore reports whether inst only stores a register to memory.
func isStore(inst x86asm.Inst) bool {
	switch inst.Op {
	case x86asm.MOV, x86asm.MOVQ, x86asm.MOVD, x86asm.MOVUPS, x86asm.MOVAPS, x86asm.MOVDQU, x86asm.MOVDQA:
	default:
		return false
	}
	_, isMem := inst.Args[0].(x86asm.Mem)
	_, isReg := inst.Args[1].(x86asm.Reg)
	return isMem && isReg
}

package tls

import (
	"debug/elf"
	"encoding/hex"
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/arch/x86/x86asm"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Code from Debian 12's libssl.so.3 (OpenSSL 3.0.19) and Go builds.
const (
	// sub $0x18,%rsp; mov %fs:0x28,%rax; mov %rax,0x8(%rsp); xor %eax,%eax;
	// test %edx,%edx; js; mov %rsp,%rcx; movslq %edx,%rdx; call ssl_read_internal
	debianSSLRead = "4883ec1864488b042528000000488944240831c085d2782f4889e14863d2e83dfeffff85c07e038b0424"
	// sub $0x8,%rsp; call ssl_read_internal; xor %edx,%edx
	debianSSLReadEx = "4883ec08e8c7fdffff31d285c00f48c2"
	// push %r13; push %r12; push %rbp; push %rbx
	debianReadInternal = "4155415455534883"
	// Go: cmp 0x10(%r14),%rsp; jbe
	goPrologue = "493b66107610"
	// Go, larger frame: lea -0x80(%rsp),%r12; cmp 0x10(%r14),%r12; jbe
	goBigPrologue = "4c8d642480" + "4d3b6610" + "0f8600010000"
	// push %rbp: the frame's first instruction after the stack check
	goPush = "55"
	// cmp 0x18(%r14),%rsp; jbe: not the stack guard (g's field at 16)
	otherCmpJbe = "493b66187610"
	// endbr64; push %rbp
	cetPush = "f30f1efa55"
	// mov %rax,%rdi; jmp
	clobbersRDI = "4889c7eb00"
	// data16 nop (66 90): not emulated
	nop66 = "6690"
)

func TestEntryPoint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   string
		keep   []x86asm.Reg
		sp     bool
		goCode bool // Go code: the stack check passed over
		off    int
		ok     bool
	}{
		{"SSL_read with a uretprobe: sub rsp first", debianSSLRead, sysvArgs, true, false, 0, false},
		{"SSL_read entry only: its js", debianSSLRead, sysvArgs, false, false, 0x16, true},
		{"SSL_read entry only keeping rax: mov %fs:0x28,%rax", debianSSLRead, []x86asm.Reg{x86asm.RAX}, false, false, 0, false},
		{"ssl_read_internal: push at entry", debianReadInternal, sysvArgs, true, false, 0, true},
		// The branch to morestack restarts the function: never the probe.
		{"go stack check: the push after it", goPrologue + goPush, goRegs, false, true, 6, true},
		{"go stack check, large frame: the push after it", goBigPrologue + goPush, goRegs, false, true, 15, true},
		{"go stack check, nothing emulated after it", goPrologue, goRegs, false, true, 0, false},
		{"go stack check, keeping r12", goBigPrologue + goPush, append([]x86asm.Reg{x86asm.R12}, goRegs...), false, true, 0, false},
		{"go stack check, not Go code: its branch", goPrologue + goPush, goRegs, false, false, 4, true},
		{"a jbe after another compare is a branch", otherCmpJbe + goPush, goRegs, false, true, 4, true},
		{"endbr64 then push", cetPush, sysvArgs, true, false, 4, true},
		{"rdi written before the branch", clobbersRDI, sysvArgs, false, false, 0, false},
		{"rdi written, not kept", clobbersRDI, []x86asm.Reg{x86asm.RSI}, false, false, 3, true},
		{"66 90 is single-stepped", nop66, nil, false, false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			off, ok := entryPoint(unhex(t, tc.code), tc.keep, tc.sp, tc.goCode)
			if off != tc.off || ok != tc.ok {
				t.Errorf("entryPoint = %#x, %v; want %#x, %v", off, ok, tc.off, tc.ok)
			}
		})
	}
}

func TestFirstCall(t *testing.T) {
	const read, readEx, inner = 0x35430, 0x354c0, 0x35290
	if got, ok := firstCall(unhex(t, debianSSLRead), read, []x86asm.Reg{x86asm.RDI, x86asm.RSI}); !ok || got != inner {
		t.Errorf("SSL_read's first call: %#x, %v; want %#x", got, ok, inner)
	}
	if got, ok := firstCall(unhex(t, debianSSLReadEx), readEx, sysvArgs); !ok || got != inner {
		t.Errorf("SSL_read_ex's first call: %#x, %v; want %#x", got, ok, inner)
	}
	// SSL_read sets rcx and rdx before its call: it does not pass them on.
	if _, ok := firstCall(unhex(t, debianSSLRead), read, sysvArgs); ok {
		t.Errorf("SSL_read passes rcx through: it points rcx at its own count")
	}
	if _, ok := firstCall(unhex(t, clobbersRDI), 0x1000, sysvArgs); ok {
		t.Errorf("a call after rdi is overwritten was taken")
	}
}

// TestCheapHostLibssl: the host's libssl (Debian: SSL_read begins with a
// single-stepped sub) is probed on ssl_read_internal and
// ssl_write_internal, each at an emulated instruction, once per call of
// either exported function; node's SSL_read begins with a push and keeps
// its probes.
func TestCheapHostLibssl(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the probe placement is amd64's")
	}
	lib := "/usr/lib/x86_64-linux-gnu/libssl.so.3"
	if _, err := os.Stat(lib); err != nil {
		t.Skip("no Debian libssl.so.3")
	}
	tg := Inspect(lib)
	if !tg.Instrumentable() {
		t.Fatalf("%s: %s %s", lib, tg.Reason, tg.Detail)
	}
	progs := make([]ebpf.Program, 7)
	p := Programs{SSLReadEntry: &progs[0], SSLReadExEntry: &progs[1], SSLReadReturn: &progs[2],
		SSLWriteEntry: &progs[3], SSLWriteExEntry: &progs[4], SSLWriteReturn: &progs[5], SSLHandshakeEntry: &progs[6]}
	in, out := tg.Func(sslReadInner), tg.Func(sslWriteInner)
	if in == nil || out == nil {
		t.Fatalf("no inner functions found: %+v", tg.Funcs)
	}
	want := []probe{
		{in.EntryProbe(), &progs[1], false}, {in.EntryProbe(), &progs[2], true},
		{out.EntryProbe(), &progs[4], false}, {out.EntryProbe(), &progs[5], true},
		{tg.Func("SSL_do_handshake").EntryProbe(), &progs[6], false},
	}
	got := plan(tg, &p)
	if len(got) != len(want) {
		t.Fatalf("plan %+v, want %+v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("probe %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	f, err := elf.Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, fn := range []*Func{in, out} {
		if !emulatedAt(f, fn) {
			t.Errorf("%s: probe at %#x is single-stepped", fn.Name, fn.EntryProbe())
		}
	}
	if node := Inspect("/usr/bin/node"); node.Instrumentable() {
		if node.Func(sslReadInner) != nil || node.Func("SSL_read").EntryProbe() != node.Func("SSL_read").Offset {
			t.Errorf("node's SSL_read begins with an emulated push: its probes should stay: %+v", node.Funcs)
		}
	}
}

// TestRecvSlot: where (*Conn).Read keeps its receiver at its copy, in code
// shaped like go1.26's Read (its prologue, a spill of each argument, a
// call, a reload, an epilogue), and each way the slot stops being certain.
func TestRecvSlot(t *testing.T) {
	const (
		// cmp 0x10(%r14),%rsp; jbe; push %rbp; mov %rsp,%rbp; sub $0x58,%rsp;
		// movq %xmm15,0x50(%rsp)
		prologue = "493b6610" + "0f867a030000" + "55" + "4889e5" + "4883ec58" + "66440fd67c2450"
		spillAX  = "4889442468" // mov %rax,0x68(%rsp)
		spillCX  = "48894c2478" // mov %rcx,0x78(%rsp)
		call     = "e800000000"
		reload   = "488b742468" // mov 0x68(%rsp),%rsi
		epilogue = "4883c458" + "5d" + "c3"
	)
	for _, tc := range []struct {
		name string
		code string
		slot uint64
		ok   bool
	}{
		{"go1.26's Read", prologue + spillAX + spillCX + call + reload + epilogue, 0x68, true},
		{"the slot written again", prologue + spillAX + call + "48895c2468" + reload + epilogue, 0, false},
		{"a 16-byte store over the slot", prologue + spillAX + call + "0f11442460" + epilogue, 0, false},
		{"its address taken", prologue + spillAX + call + "488d442468" + epilogue, 0, false},
		{"ax changed before the spill", prologue + "31c0" + spillAX + call + epilogue, 0, false},
		{"a call before the spill", prologue + call + spillAX + epilogue, 0, false},
		{"the stack pointer moved in the body", prologue + spillAX + "4883ec08" + call + epilogue, 0, false},
		{"a push in the body", prologue + spillAX + "53" + call + epilogue, 0, false},
		{"no frame", "493b6610" + "0f867a030000" + spillAX + call + "c3", 0, false},
		{"no spill", prologue + spillCX + call + epilogue, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slot, ok := recvSlot(unhex(t, tc.code))
			if ok != tc.ok || slot != tc.slot {
				t.Errorf("recvSlot = %#x, %v; want %#x, %v", slot, ok, tc.slot, tc.ok)
			}
		})
	}
}

package hook_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors/hook"
)

// getpidCalls is how many getpid calls the good program must count, exactly.
const getpidCalls = 100

// TestPrivilegedVerifierRejectionCostsOnlyItsHook loads a collection with one good and one
// broken program through the hook loader: the broken one reads 8 bytes past the end of a map
// value, which every verifier rejects. The broken hook must fail with a verifier rejection that
// carries the verifier's own words; the good hook, attached after it by the same loader, must
// attach and count exactly. The kernel-matrix harness (e2e/vmtest) runs this on every kernel.
func TestPrivilegedVerifierRejectionCostsOnlyItsHook(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	if err := hook.EnsureMounts(); err != nil {
		t.Logf("mounts: %v", err)
	}
	probes := hook.NewProbes()
	if err := probes.Supports(hook.ModeTracepoint); err != nil {
		t.Skipf("skipping: classic tracepoints are unavailable here: %v", err)
	}

	// The good program filters on this thread: the Go runtime calls getpid from other threads.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()

	reg := hook.NewRegistry()
	loader, err := hook.NewLoader("hooktest", verifierTestSpec(tid), hook.Options{}, probes, reg,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer loader.Close()

	getpid := hook.Tracepoint("syscalls", "sys_enter_getpid")
	one := func(name string) []hook.Link {
		return []hook.Link{{Mode: hook.ModeTracepoint, Programs: []hook.Program{{Name: name, Attach: getpid}}}}
	}

	// The broken hook first: its rejection must not keep the next hook from loading.
	bad, err := loader.Attach(hook.Hook{Name: "broken", Links: one("hook_broken")})
	if err == nil {
		t.Fatal("the program reading past its map value was accepted")
	}
	if bad.Attached() || len(bad.Attempts) != 1 || bad.Attempts[0].Mode != hook.ModeTracepoint {
		t.Fatalf("broken hook: status %+v, want one failed tracepoint attempt", bad)
	}
	rejection := bad.Attempts[0].Err
	var ve *ebpf.VerifierError
	if !errors.As(rejection, &ve) {
		t.Fatalf("broken hook: error is not a verifier rejection: %v", rejection)
	}
	if hook.IsUnsupported(rejection) {
		t.Errorf("broken hook: a rejected program is classed as an unsupported mode: %v", rejection)
	}
	// The loader puts the end of the verifier's log into the message; the verifier names
	// the out-of-bounds access there (same wording from 5.10 to 6.18).
	msg := rejection.Error()
	for _, want := range []string{"loading hook_broken: verifier rejected the program: ", "invalid access to map value", "value_size=8 off=8 size=8"} {
		if !strings.Contains(msg, want) {
			t.Errorf("broken hook: error lacks %q: %s", want, msg)
		}
	}
	if !strings.Contains(err.Error(), "invalid access to map value") {
		t.Errorf("Attach's error does not carry the verifier's excerpt: %v", err)
	}
	t.Logf("rejected as expected: %v", rejection)

	good, err := loader.Attach(hook.Hook{Name: "good", Links: one("hook_good")})
	if err != nil {
		t.Fatalf("good hook after a rejected one: %v", err)
	}
	if good.Mode != hook.ModeTracepoint || len(good.Programs) != 1 {
		t.Fatalf("good hook: status %+v", good)
	}
	for _, p := range good.Programs {
		fmt.Printf("OTELBEE-PROGSTAT collector=%s program=%s mode=%s insns=%d load_us=%d\n",
			good.Collector, p.Program, p.Mode, p.VerifiedInstructions, p.LoadTime.Microseconds())
	}

	// The registry has both outcomes, and only the good program is live.
	sts := reg.Statuses()
	if len(sts) != 2 || sts[0].Hook != "broken" || sts[0].Attached() || sts[1].Hook != "good" || !sts[1].Attached() {
		t.Errorf("registry statuses: %+v", sts)
	}
	if ps := reg.Programs(); len(ps) != 1 || ps[0].Name != "hook_good" {
		t.Errorf("registry programs: %+v, want only hook_good", ps)
	}

	counter := loader.Map("counter")
	before := readCounter(t, counter)
	for range getpidCalls {
		unix.Getpid() // the raw system call
	}
	if got := readCounter(t, counter) - before; got != getpidCalls {
		t.Fatalf("good program counted %d getpid calls, want exactly %d", got, getpidCalls)
	}
}

// verifierTestSpec is a collection of one array map and two tracepoint programs that look up
// counter[0]: hook_good adds one to it when the calling thread is tid; hook_broken reads the
// 8 bytes after the 8-byte value.
func verifierTestSpec(tid int) *ebpf.CollectionSpec {
	lookup := func(then ...asm.Instruction) asm.Instructions {
		insns := asm.Instructions{
			asm.FnGetCurrentPidTgid.Call(),
			asm.Mov.Reg32(asm.R0, asm.R0), // the thread id, zero-extended
			asm.JNE.Imm(asm.R0, int32(tid), "out"),
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, 0).WithReference("counter"),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
		}
		insns = append(insns, then...)
		return append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())
	}
	prog := func(name string, insns asm.Instructions) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Name: name, Type: ebpf.TracePoint, License: "GPL", Instructions: insns}
	}
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			"counter": {Name: "counter", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			"hook_good": prog("hook_good", lookup(
				asm.Mov.Imm(asm.R1, 1),
				asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			)),
			"hook_broken": prog("hook_broken", lookup(
				asm.LoadMem(asm.R1, asm.R0, 8, asm.DWord), // past the end of the value
			)),
		},
	}
}

func readCounter(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatalf("reading the counter: %v", err)
	}
	return v
}

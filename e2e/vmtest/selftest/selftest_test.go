package selftest

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// calls is how many getpid calls each subtest makes; the counter must move by exactly this.
const calls = 100

// Hook points of getpid on x86-64 (5.10 .. 6.18). The kprobe goes on the syscall entry point
// __x64_sys_getpid. fentry needs the function in BTF, and for argument-less syscalls
// (SYSCALL_DEFINE0) __x64_sys_getpid is only an alias of __do_sys_getpid, which pahole does not
// describe: the BTF function, same code, is __do_sys_getpid.
const (
	kprobeSymbol = "__x64_sys_getpid"
	fentrySymbol = "__do_sys_getpid"
)

// enotsupp is the kernel-internal ENOTSUPP (524) that leaks to user space from BPF paths the
// kernel was built without; x/sys/unix does not define it because libc has no name for it.
const enotsupp = unix.Errno(524)

func TestAttach(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF/CAP_SYS_ADMIN) to load BPF programs")
	}
	// Kernels before 5.11 charge BPF maps and programs to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatalf("removing memlock limit: %v", err)
	}

	t.Run("tracepoint", func(t *testing.T) {
		tid := lockThread(t)
		counter := newCounter(t)
		prog := load(t, "tracepoint", &ebpf.ProgramSpec{
			Name:         "getpid_tp",
			Type:         ebpf.TracePoint,
			Instructions: countingProgram(counter, tid),
			License:      "GPL",
		})
		l, err := link.Tracepoint("syscalls", "sys_enter_getpid", prog, nil)
		if err != nil {
			t.Fatalf("attaching tracepoint syscalls/sys_enter_getpid: %v", err)
		}
		defer l.Close()
		checkCounts(t, counter)
	})

	t.Run("kprobe", func(t *testing.T) {
		tid := lockThread(t)
		counter := newCounter(t)
		prog, err := loadProgram("kprobe", &ebpf.ProgramSpec{
			Name:         "getpid_kprobe",
			Type:         ebpf.Kprobe,
			Instructions: countingProgram(counter, tid),
			License:      "GPL",
		})
		if errors.Is(err, ebpf.ErrNotSupported) {
			t.Skipf("kernel cannot load kprobe programs: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer prog.Close()
		l, err := link.Kprobe(kprobeSymbol, prog, nil)
		if err != nil {
			if reason := kprobeUnsupported(err); reason != "" {
				t.Skipf("%s: %v", reason, err)
			}
			t.Fatalf("attaching kprobe %s: %v", kprobeSymbol, err)
		}
		defer l.Close()
		checkCounts(t, counter)
	})

	t.Run("fentry", func(t *testing.T) {
		tid := lockThread(t)
		counter := newCounter(t)
		prog, err := loadProgram("fentry", &ebpf.ProgramSpec{
			Name:         "getpid_fentry",
			Type:         ebpf.Tracing,
			AttachType:   ebpf.AttachTraceFEntry,
			AttachTo:     fentrySymbol,
			Instructions: countingProgram(counter, tid),
			License:      "GPL",
		})
		if reason := fentryUnsupported(err); reason != "" {
			t.Skipf("%s: %v", reason, err)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer prog.Close()
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFEntry})
		if err != nil {
			if reason := fentryUnsupported(err); reason != "" {
				t.Skipf("%s: %v", reason, err)
			}
			t.Fatalf("attaching fentry %s: %v", fentrySymbol, err)
		}
		defer l.Close()
		checkCounts(t, counter)
	})
}

// kprobeUnsupported names why the kernel cannot attach kprobes, or returns "" if err is some
// other failure (which the test must not hide).
func kprobeUnsupported(err error) string {
	if errors.Is(err, ebpf.ErrNotSupported) {
		return "kernel has no kprobe support (no kprobe PMU, no kprobe_events)"
	}
	if _, statErr := os.Stat("/sys/bus/event_source/devices/kprobe"); errors.Is(statErr, os.ErrNotExist) && errors.Is(err, os.ErrNotExist) {
		return "kprobe PMU missing (/sys/bus/event_source/devices/kprobe) and kprobe_events unusable"
	}
	return ""
}

// fentryUnsupported names why the kernel refuses fentry programs, or returns "".
func fentryUnsupported(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ebpf.ErrNotSupported):
		return "kernel does not support fentry"
	case errors.Is(err, unix.EPERM):
		// We are root (checked above), so EPERM here is the kernel or an LSM refusing
		// trampolines, as on hosts that forbid fentry.
		return "kernel refused fentry (EPERM)"
	case errors.Is(err, enotsupp), errors.Is(err, unix.EOPNOTSUPP):
		return "kernel has no BPF trampoline support"
	}
	return ""
}

func newCounter(t *testing.T) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "getpid_count",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 1,
	})
	if err != nil {
		t.Fatalf("creating counter map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// lockThread pins the subtest to its OS thread and returns the thread's id, which the program
// filters on.
func lockThread(t *testing.T) int {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	return unix.Gettid()
}

// countingProgram adds one to counter[0] when the calling thread is tid. Filtering on the
// thread, not the process, matters: the Go runtime itself calls getpid from other threads (to
// tgkill a thread it preempts), which under a slow emulated CPU happens during the loop.
func countingProgram(counter *ebpf.Map, tid int) asm.Instructions {
	return asm.Instructions{
		asm.FnGetCurrentPidTgid.Call(),
		// The low 32 bits are the thread id; a 32-bit move zero-extends them.
		asm.Mov.Reg32(asm.R0, asm.R0),
		asm.JNE.Imm(asm.R0, int32(tid), "out"),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counter.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// loadProgram loads spec, timing the load, and prints the program's OTELBEE-PROGSTAT line.
// load_us is the wall time of NewProgram: for fentry that includes finding the target in the
// kernel's BTF, a cost the agent pays as well. verifier_us is the verifier's own account.
func loadProgram(mode string, spec *ebpf.ProgramSpec) (*ebpf.Program, error) {
	start := time.Now()
	// LogLevelStats makes the verifier report its time and instruction count without the
	// cost of a full instruction log.
	prog, err := ebpf.NewProgramWithOptions(spec, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats})
	loadTime := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("loading %s program %s: %w", mode, spec.Name, err)
	}
	verifierUS, processed := verifierStats(prog.VerifierLog)
	insns := "n/a"
	if info, err := prog.Info(); err == nil {
		if n, ok := info.VerifiedInstructions(); ok {
			insns = strconv.FormatUint(uint64(n), 10)
		}
	}
	if insns == "n/a" && processed != "" {
		// bpf_prog_info has verified_insns from 5.16 on; before, the verifier log has the
		// same count.
		insns = processed
	}
	fmt.Printf("OTELBEE-PROGSTAT collector=selftest program=%s mode=%s insns=%s load_us=%d verifier_us=%s\n",
		spec.Name, mode, insns, loadTime.Microseconds(), verifierUS)
	return prog, nil
}

var (
	verificationTimeRE = regexp.MustCompile(`verification time (\d+) usec`)
	processedRE        = regexp.MustCompile(`processed (\d+) insns`)
)

// verifierStats extracts the verifier's time and processed-instruction count from a
// LogLevelStats log ("n/a" and "" when absent).
func verifierStats(log string) (verifierUS, processed string) {
	verifierUS = "n/a"
	if m := verificationTimeRE.FindStringSubmatch(log); m != nil {
		verifierUS = m[1]
	}
	if m := processedRE.FindStringSubmatch(log); m != nil {
		processed = m[1]
	}
	return verifierUS, processed
}

func load(t *testing.T, mode string, spec *ebpf.ProgramSpec) *ebpf.Program {
	t.Helper()
	prog, err := loadProgram(mode, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// checkCounts makes exactly `calls` getpid system calls and checks the counter moved by that.
// It runs on the locked thread the program filters on.
func checkCounts(t *testing.T, counter *ebpf.Map) {
	t.Helper()
	before := read(t, counter)
	for i := 0; i < calls; i++ {
		// unix.Getpid is the raw system call; os.Getpid could be cached in the future.
		unix.Getpid()
	}
	after := read(t, counter)
	if got := after - before; got != calls {
		t.Fatalf("counter moved by %d, want exactly %d", got, calls)
	}
	t.Logf("counted %d/%d getpid calls", after-before, calls)
}

func read(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatalf("reading counter: %v", err)
	}
	return v
}

package hook

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ErrUnavailable marks a mode the host cannot provide.
var ErrUnavailable = errors.New("unavailable on this host")

// Probes answers, once per process, whether the host can attach each mode.
// The answers come from trying the smallest possible program of that kind:
// a kernel can advertise a program type and still refuse to load it (this
// project's development kernel refuses fentry with EPERM).
type Probes struct {
	mu      sync.Mutex
	results map[Mode]error
}

// NewProbes returns an empty, lazily filled set of probes.
func NewProbes() *Probes { return &Probes{results: map[Mode]error{}} }

// Supports returns nil if links of mode m can be attached here, else why not.
func (p *Probes) Supports(m Mode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err, ok := p.results[m]; ok {
		return err
	}
	err := probe(m)
	p.results[m] = err
	return err
}

func probe(m Mode) error {
	switch m {
	case ModeTPBTF:
		return probeTracing(ebpf.AttachTraceRawTp, "sys_enter")
	case ModeFentry:
		return probeTracing(ebpf.AttachTraceFEntry, "tcp_close")
	case ModeKprobe:
		return probeKprobes()
	case ModeTracepoint:
		if _, err := os.Stat(TracefsPath() + "/events"); err != nil {
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("%w: tracefs at %s is not readable by this process (run as root or grant CAP_DAC_READ_SEARCH): %w", ErrUnavailable, TracefsPath(), err)
			}
			return fmt.Errorf("%w: tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)", ErrUnavailable)
		}
		return programType(ebpf.TracePoint)
	case ModeUprobe:
		if _, err := os.Stat("/sys/bus/event_source/devices/uprobe/type"); err != nil {
			if _, err2 := os.Stat(TracefsPath() + "/uprobe_events"); err2 != nil {
				return fmt.Errorf("%w: no uprobe PMU and no uprobe_events (CONFIG_UPROBE_EVENTS off?)", ErrUnavailable)
			}
		}
		return programType(ebpf.Kprobe)
	case ModeSocket:
		return programType(ebpf.SocketFilter)
	case ModeCgroupSkb:
		return probeCgroup(ebpf.CGroupSKB)
	case ModeCgroupSock:
		return probeCgroup(ebpf.CGroupSockAddr)
	}
	return fmt.Errorf("%w: unknown mode %q", ErrUnavailable, m)
}

func programType(t ebpf.ProgramType) error {
	err := features.HaveProgramType(t)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w: kernel lacks BPF program type %s: %w", ErrUnavailable, t, err)
	}
	// Anything but nil and ErrNotSupported is inconclusive: let the real
	// load decide.
	return nil
}

// probeTracing loads and attaches an empty BTF-typed program.
func probeTracing(at ebpf.AttachType, target string) error {
	if _, err := btf.LoadKernelSpec(); err != nil {
		return fmt.Errorf("%w: kernel has no BTF (CONFIG_DEBUG_INFO_BTF): %w", ErrUnavailable, err)
	}
	if err := programType(ebpf.Tracing); err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   at,
		AttachTo:     target,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if errors.Is(err, unix.EPERM) {
		// cilium/ebpf suggests raising RLIMIT_MEMLOCK on EPERM; that is not
		// the cause on kernels that account BPF memory to cgroups.
		return fmt.Errorf("%w: the kernel refuses %s programs (EPERM loading a probe on %s: a security policy or a kernel built without the BPF trampoline)", ErrUnavailable, at, target)
	}
	if err != nil {
		return fmt.Errorf("%w: loading a probe program on %s: %w", ErrUnavailable, target, err)
	}
	defer prog.Close()
	ln, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("%w: attaching a probe program to %s: %w", ErrUnavailable, target, err)
	}
	return ln.Close()
}

func probeKprobes() error {
	if _, err := os.Stat("/sys/bus/event_source/devices/kprobe/type"); err == nil {
		return programType(ebpf.Kprobe)
	}
	if _, err := os.Stat(TracefsPath() + "/kprobe_events"); err == nil {
		return programType(ebpf.Kprobe)
	}
	return fmt.Errorf("%w: no kprobe PMU and no kprobe_events in tracefs (kernel built without CONFIG_KPROBES)", ErrUnavailable)
}

// TracefsPath is where tracefs is mounted, preferring the modern location.
func TracefsPath() string {
	for _, p := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(p + "/events"); err == nil {
			return p
		}
	}
	return "/sys/kernel/tracing"
}

// Lockdown reads the kernel lockdown mode ("none", "integrity",
// "confidentiality") from securityfs. Confidentiality forbids reading kernel
// memory from BPF, which every collector does.
func Lockdown() (string, error) {
	b, err := os.ReadFile("/sys/kernel/security/lockdown")
	if err != nil {
		return "", fmt.Errorf("reading lockdown mode: %w", err)
	}
	s := string(b)
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			return s[i+1 : i+j], nil
		}
	}
	return "", fmt.Errorf("reading lockdown mode: unexpected content %q", strings.TrimSpace(s))
}

// IsUnsupported reports whether err means "this kernel lacks what the link
// needs" (a missing program type, attach point, tracepoint or BTF type), as
// opposed to a program the kernel has the hooks for but rejected.
func IsUnsupported(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ebpf.ErrNotSupported) ||
		errors.Is(err, btf.ErrNotFound) || errors.Is(err, os.ErrNotExist)
}

// KernelFunctionExists says before loading whether the running kernel has a
// function of that name in its BTF (fentry/fexit targets; a kprobe target
// too, where the kernel has BTF): a function a kernel version removed
// (tcp_sendpage in 6.5) reads as "not on this kernel", not as a failed load.
func KernelFunctionExists(name string) func() error {
	return func() error {
		spec, err := btf.LoadKernelSpec()
		if err != nil {
			return fmt.Errorf("%w: kernel has no BTF to look %s up in: %w", ErrUnavailable, name, err)
		}
		var fn *btf.Func
		if err := spec.TypeByName(name, &fn); err != nil {
			return fmt.Errorf("%w: kernel function %s is not on this kernel: %w", ErrUnavailable, name, err)
		}
		return nil
	}
}

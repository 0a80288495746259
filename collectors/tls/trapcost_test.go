package tls

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// BenchmarkUprobeTrap measures what one uprobe hit costs the probed
// process on this machine, by the instruction it is placed on: the figures
// behind probepoint.go (on the benchmarks' 2-core VM: ~14 µs for a
// single-stepped sub, cmp or ret, ~0.4 µs for an emulated push, jcc or
// call, ~0.2 µs more for a uretprobe). The program run is empty; ns/call
// is the child's CPU time per call, trap included.
//
//	go test -run - -bench UprobeTrap ./collectors/tls/   (root, gcc)
//
// buildTrapcost skips b where the trap benchmarks cannot run, else builds
// testdata/trapcost and lifts the memlock limit.
func buildTrapcost(b *testing.B) string {
	b.Helper()
	if os.Geteuid() != 0 || runtime.GOARCH != "amd64" {
		b.Skip("needs root and amd64")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		b.Skip("needs gcc")
	}
	bin := filepath.Join(b.TempDir(), "trapcost")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "testdata/trapcost/trapcost.c").CombinedOutput(); err != nil {
		b.Fatalf("building trapcost: %v\n%s", err, out)
	}
	rlimit.RemoveMemlock()
	return bin
}

func BenchmarkUprobeTrap(b *testing.B) {
	bin := buildTrapcost(b)
	prog := func(multi bool) *ebpf.Program {
		spec := &ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}}
		if multi {
			spec.AttachType = ebpf.AttachTraceUprobeMulti
		}
		p, err := ebpf.NewProgram(spec)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p
	}
	perf, multi := prog(false), prog(true)
	ex, err := link.OpenExecutable(bin)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name, fn string
		off      uint64
		kind     string // "", "uprobe", "uretprobe", "multi", "multi-other-pid"
	}{
		{"none", "at_sub", 0, ""},
		{"sub/uprobe", "at_sub", 0, "uprobe"},
		{"sub/uprobe_multi", "at_sub", 0, "multi"},
		// A link for another process (uprobe_multi's pid filter): the kernel
		// does not install the breakpoint in this one at all.
		{"sub/uprobe_multi-other-pid", "at_sub", 0, "multi-other-pid"},
		{"sub/uretprobe", "at_sub", 0, "uretprobe"},
		{"cmp/uprobe_multi", "at_cmp", 0, "multi"},
		{"ret/uprobe_multi", "at_ret", 3, "multi"},
		{"push/uprobe_multi", "at_push", 0, "multi"},
		{"push/uretprobe", "at_push", 0, "uretprobe"},
		{"jcc/uprobe_multi", "at_jcc", 2, "multi"},
		{"call/uprobe_multi", "at_call", 0, "multi"},
		{"nop5/uprobe_multi", "at_nop5", 0, "multi"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var l link.Link
			var err error
			switch tc.kind {
			case "uprobe":
				l, err = ex.Uprobe(tc.fn, perf, &link.UprobeOptions{Offset: tc.off})
			case "uretprobe":
				l, err = ex.Uretprobe(tc.fn, perf, nil)
			case "multi":
				l, err = ex.UprobeMulti([]string{tc.fn}, multi, &link.UprobeMultiOptions{Offsets: []uint64{tc.off}})
			case "multi-other-pid":
				l, err = ex.UprobeMulti([]string{tc.fn}, multi, &link.UprobeMultiOptions{Offsets: []uint64{tc.off}, PID: uint32(os.Getpid())})
			}
			if err != nil {
				b.Fatal(err)
			}
			if l != nil {
				defer l.Close()
			}
			b.ResetTimer()
			out, err := exec.Command(bin, tc.fn, strconv.Itoa(b.N)).Output()
			if err != nil {
				b.Fatal(err)
			}
			ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(ns, "ns/call")
		})
	}
}

// BenchmarkOpenSSLGate measures what an OpenSSL file's gate costs each
// entry-probe hit (bpf/l7/tls.h ssl_file_ready: the link's attach cookie
// and one array lookup): an empty program against one that makes only that
// check, on the same emulated instruction. ns/call is the child's CPU time
// per call, trap included; bpf-ns/run the kernel's run time per program run
// (BPF stats).
//
//	go test -run - -bench OpenSSLGate ./collectors/tls/   (root, gcc, 5.15+)
func BenchmarkOpenSSLGate(b *testing.B) {
	bin := buildTrapcost(b)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enabling BPF stats: %v", err)
	}
	defer stats.Close()
	gates, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 1, MaxEntries: FileSlots})
	if err != nil {
		b.Fatal(err)
	}
	defer gates.Close()
	if err := gates.Put(uint32(1), uint8(1)); err != nil {
		b.Fatal(err)
	}
	empty := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	gate := asm.Instructions{
		asm.FnGetAttachCookie.Call(), // r1: the context
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, gates.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
	ex, err := link.OpenExecutable(bin)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		insns asm.Instructions
	}{{"empty", empty}, {"gate", gate}} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", AttachType: ebpf.AttachTraceUprobeMulti,
				Instructions: tc.insns})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			l, err := ex.UprobeMulti([]string{"at_push"}, p, &link.UprobeMultiOptions{Cookies: []uint64{1}})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ResetTimer()
			out, err := exec.Command(bin, "at_push", strconv.Itoa(b.N)).Output()
			if err != nil {
				b.Fatal(err)
			}
			ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(ns, "ns/call")
			if s, err := p.Stats(); err == nil && s.RunCount > 0 {
				b.ReportMetric(float64(s.Runtime.Nanoseconds())/float64(s.RunCount), "bpf-ns/run")
			}
		})
	}
}

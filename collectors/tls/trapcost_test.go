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
)

// BenchmarkUprobeTrap measures what one uprobe hit costs the probed
// process on this machine, by the instruction it is placed on: the figures
// behind probepoint.go (on the benchmarks' 2-core VM: ~14 µs for a
// single-stepped sub, cmp or ret, ~0.4 µs for an emulated push, jcc or
// call, ~0.2 µs more for a uretprobe). The program run is empty; ns/call
// is the child's CPU time per call, trap included.
//
//	go test -run - -bench UprobeTrap ./collectors/tls/   (root, gcc)
func BenchmarkUprobeTrap(b *testing.B) {
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

package vmtest

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHarnessSelftest runs the selftest package (tracepoint, kprobe and fentry programs that
// count getpid calls) on the kernel matrix and checks the harness reports what those kernels
// can do: every attach mode passes on the Debian kernels; on the host the tracepoint passes and
// kprobe/fentry pass or skip, depending on the machine.
//
// VMTEST_KERNELS overrides the matrix, e.g. VMTEST_KERNELS=6.1 for a quick run.
func TestHarnessSelftest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the selftest loads BPF programs on the host kernel")
	}
	if _, err := exec.LookPath(qemuBinary); err != nil {
		t.Skipf("%s not installed (apt-get install -y --no-install-recommends qemu-system-x86)", qemuBinary)
	}
	kernels := DefaultKernels
	if env := os.Getenv("VMTEST_KERNELS"); env != "" {
		var err error
		if kernels, err = ParseKernelList(env); err != nil {
			t.Fatal(err)
		}
	}

	jf := &JobsFile{Jobs: []JobDef{{
		Name:    "selftest",
		Package: "./e2e/vmtest/selftest",
		Timeout: Duration(time.Minute),
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	report, err := Run(ctx, jf, Options{
		Kernels: kernels,
		Logger:  slog.New(slog.NewTextHandler(tWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + report.Table())
	t.Log("\n" + RenderKernelTable(report.ProgStats()))

	modes := []string{"tracepoint", "kprobe", "fentry"}
	for _, k := range report.Kernels {
		if k.Err != nil {
			t.Errorf("%s: %v", k.Label, k.Err)
			continue
		}
		job, ok := report.Result(k.Label, "selftest")
		if !ok {
			t.Errorf("%s: no selftest result", k.Label)
			continue
		}
		if job.Status != StatusPass {
			t.Errorf("%s: selftest %s: %s", k.Label, job.Status, job.Reason)
		}
		loaded := map[string]ProgStat{}
		for _, ps := range job.ProgStats {
			loaded[ps.Mode] = ps
			if ps.Kernel != k.Label || ps.Release != k.Release || ps.Job != "selftest" {
				t.Errorf("%s: progstat not attributed: %+v", k.Label, ps)
			}
		}
		for _, m := range modes {
			tr, ok := job.Test("TestAttach/" + m)
			switch {
			case !ok:
				t.Errorf("%s: no result for TestAttach/%s", k.Label, m)
			case k.Label == HostKernel && m != "tracepoint":
				// The host may or may not allow kprobes and fentry; either way is a valid answer
				// as long as a skip says why.
				if tr.Status == StatusSkip && tr.Reason == "" {
					t.Errorf("host: %s skipped without a reason", m)
				}
				if tr.Status != StatusPass && tr.Status != StatusSkip {
					t.Errorf("host: %s = %s", m, tr.Status)
				}
				t.Logf("host: %s %s %s", m, tr.Status, tr.Reason)
			case tr.Status != StatusPass:
				t.Errorf("%s: TestAttach/%s = %s (%s), want pass", k.Label, m, tr.Status, tr.Reason)
			}
			if tr.Status == StatusPass {
				ps, ok := loaded[m]
				if !ok {
					t.Errorf("%s: %s passed but printed no OTELBEE-PROGSTAT", k.Label, m)
				} else if ps.LoadUS <= 0 {
					t.Errorf("%s: %s: load time %d", k.Label, m, ps.LoadUS)
				}
				// From bpf_prog_info on 5.16+, from the verifier's statistics log before.
				if ok && ps.Insns <= 0 {
					t.Errorf("%s: %s: no verified instruction count (%d)", k.Label, m, ps.Insns)
				}
			}
		}
		if k.Kernel != nil {
			t.Logf("%s: boot %s, whole VM %s", k.Label, k.Boot.Round(time.Millisecond), k.Wall.Round(time.Millisecond))
			if k.Wall > 15*time.Second {
				t.Logf("%s: the VM took over 15 s (a loaded machine?)", k.Label)
			}
		}
	}
	if report.Failed() && !t.Failed() {
		t.Error("report says failed")
	}
}

// tWriter sends the harness's log to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

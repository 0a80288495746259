package vmtest

import (
	"strings"
	"testing"

	"github.com/otelbee/otelbee/collectors/hook"
)

func TestReportTable(t *testing.T) {
	skipped := func(reason string) JobResult {
		return JobResult{Name: "tcp/fentry", Status: StatusSkip, Tests: []TestResult{
			{Name: "TestA", Status: StatusSkip, Reason: "skipping: " + reason},
			{Name: "TestB", Status: StatusSkip, Reason: "skipping: " + reason},
		}}
	}
	r := &Report{
		JobNames: []string{"tcp/fentry", "tcp/kprobe"},
		Kernels: []KernelResult{
			{Label: "6.1", Jobs: []JobResult{
				{Name: "tcp/fentry", Status: StatusPass, Tests: []TestResult{{Name: "TestA", Status: StatusPass}, {Name: "TestB", Status: StatusPass}}},
				{Name: "tcp/kprobe", Status: StatusFail, Reason: "exit=1: TestB", Output: "noise\n    x_test.go:9: counted 3, want 4\n        got map[a:3]\n        want map[a:4]\nnoise too\n--- FAIL: TestB (0.10s)\nFAIL\n",
					Tests:      []TestResult{{Name: "TestA", Status: StatusPass}, {Name: "TestB", Status: StatusFail}},
					Rejections: []Rejection{{Program: "p_tp", Excerpt: "invalid func"}}},
			}},
			{Label: "host", Jobs: []JobResult{skipped("fentry refused"), {Name: "tcp/kprobe", Status: StatusSkip, Reason: "no kprobes"}}},
			{Label: "host2", Jobs: []JobResult{skipped("fentry refused"), {Name: "tcp/kprobe", Status: StatusPass}}},
		},
		MaxInsns:    250000,
		Covered:     []string{"tcp"},
		Unexercised: []LinkRef{{Collector: "tcp", Hook: "send", Mode: hook.ModeKprobe, Programs: []string{"k", "kr"}}},
	}
	got := r.Table()
	for _, want := range []string{
		"tcp/fentry  pass  skip[1]  skip[1]",
		"tcp/kprobe  FAIL  skip[2]  pass",
		"tcp/fentry  pass  skip[1]  skip[1]\ntcp/kprobe", // tests alike: no rows of their own
		"  TestA     pass  -        -\n  TestB     FAIL  -        -",
		"[1] fentry refused\n      (host tcp/fentry, host2 tcp/fentry)",
		"[2] no kprobes\n      (host tcp/kprobe)",
		"6.1 p_tp (tcp/kprobe): invalid func",
		"never loaded on any kernel:\n  tcp send kprobe (k, kr)",
		"x_test.go:9: counted 3, want 4\n      |         got map[a:3]\n      |         want map[a:4]\n      | --- FAIL: TestB",
		"RESULT: FAIL",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "noise") {
		t.Errorf("table shows lines it should not:\n%s", got)
	}
}

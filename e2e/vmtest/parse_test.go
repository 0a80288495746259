package vmtest

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseConsole(t *testing.T) {
	type job struct {
		name, exit string
		status     Status
		reason     string // substring
	}
	tests := []struct {
		name     string
		console  string
		release  string
		done     bool
		deadline bool
		jobs     []job
		warnings int
	}{
		{
			name: "pass, fail, timeout, signal",
			console: "SeaBIOS\r\n\x1b[2J=== VMTEST KERNEL 6.1.0-56-cloud-amd64\r\n" +
				"=== VMTEST BEGIN a\r\nhello\r\n=== VMTEST END a exit=0 dur=12\r\n" +
				"=== VMTEST BEGIN b\nboom\n=== VMTEST END b exit=3 dur=5\n" +
				"=== VMTEST BEGIN c\n=== VMTEST END c exit=timeout dur=30000\n" +
				"=== VMTEST BEGIN d\n=== VMTEST END d exit=signal-SIGSEGV dur=1\n" +
				"=== VMTEST DONE\n[    2.1] reboot: Power down\n",
			release: "6.1.0-56-cloud-amd64",
			done:    true,
			jobs: []job{
				{"a", "0", StatusPass, ""},
				{"b", "3", StatusFail, "exit=3"},
				{"c", "timeout", StatusTimeout, "timeout"},
				{"d", "signal-SIGSEGV", StatusFail, "exit=signal-SIGSEGV"},
			},
		},
		{
			// The marker glued to output without a newline (the runner prevents this for its
			// own output, but the kernel can print in between).
			name:    "glued marker",
			console: "=== VMTEST KERNEL 5.10.0-32-cloud-amd64\n=== VMTEST BEGIN a\npartial=== VMTEST END a exit=0 dur=1\n=== VMTEST DONE\n",
			release: "5.10.0-32-cloud-amd64",
			done:    true,
			jobs:    []job{{"a", "0", StatusPass, ""}},
		},
		{
			name:    "skip marker",
			console: "=== VMTEST BEGIN a\nVMTEST-SKIP no BTF here\n=== VMTEST END a exit=0 dur=1\n=== VMTEST DONE\n",
			done:    true,
			jobs:    []job{{"a", "0", StatusSkip, "no BTF here"}},
		},
		{
			name:    "skip marker mentioned mid-line is not a skip",
			console: "=== VMTEST BEGIN a\nprint VMTEST-SKIP lines to skip\n=== VMTEST END a exit=0 dur=1\n",
			jobs:    []job{{"a", "0", StatusPass, ""}},
		},
		{
			name:    "VM died mid-job",
			console: "=== VMTEST KERNEL 6.12\n=== VMTEST BEGIN a\nworking\n[ 3.0] Kernel panic - not syncing: Attempted to kill init!\n",
			release: "6.12",
			jobs:    []job{{"a", "", StatusFail, "no END marker"}},
		},
		{
			name:    "deadline",
			console: "=== VMTEST BEGIN a\n=== VMTEST END a exit=timeout dur=5\n=== VMTEST DEADLINE\n",
			// The job ended: its own timeout, not the VM's.
			deadline: true,
			jobs:     []job{{"a", "timeout", StatusTimeout, ""}},
		},
		{
			name:    "BEGIN without END followed by BEGIN",
			console: "=== VMTEST BEGIN a\n=== VMTEST BEGIN b\n=== VMTEST END b exit=0 dur=1\n",
			jobs:    []job{{"a", "", StatusFail, "no END"}, {"b", "0", StatusPass, ""}},
		},
		{
			name:     "stray END and WARN",
			console:  "=== VMTEST WARN mounting securityfs: no such device\n=== VMTEST END x exit=0 dur=1\n",
			warnings: 2,
		},
		{
			name: "go test timeout panic",
			console: "=== VMTEST BEGIN a\n=== RUN   TestHang\npanic: test timed out after 54s\n\trunning tests:\n\t\tTestHang (54s)\n" +
				"=== VMTEST END a exit=2 dur=54010\n",
			jobs: []job{{"a", "2", StatusTimeout, "panic: test timed out after 54s"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ParseConsole(tt.console)
			if c.Release != tt.release || c.Done != tt.done || c.Deadline != tt.deadline {
				t.Errorf("release=%q done=%v deadline=%v, want %q %v %v", c.Release, c.Done, c.Deadline, tt.release, tt.done, tt.deadline)
			}
			if len(c.Warnings) != tt.warnings {
				t.Errorf("warnings = %q, want %d", c.Warnings, tt.warnings)
			}
			if len(c.Jobs) != len(tt.jobs) {
				t.Fatalf("jobs = %v, want %d", c.Jobs, len(tt.jobs))
			}
			for i, want := range tt.jobs {
				got := c.Jobs[i]
				if got.Name != want.name || got.Exit != want.exit || got.Status != want.status || !strings.Contains(got.Reason, want.reason) {
					t.Errorf("job %d = %s, want %+v", i, got, want)
				}
			}
		})
	}
}

func TestParseConsoleOutputAndDuration(t *testing.T) {
	c := ParseConsole("=== VMTEST BEGIN a\r\nline 1\r\nline 2\r\n=== VMTEST END a exit=0 dur=1500\r\n")
	if got := c.Jobs[0].Output; got != "line 1\nline 2\n" {
		t.Errorf("output = %q", got)
	}
	if c.Jobs[0].Duration != 1500*time.Millisecond {
		t.Errorf("duration = %v", c.Jobs[0].Duration)
	}
}

// Verbose output of the selftest on the host (tracepoint only), verbatim.
const verboseOut = `=== RUN   TestAttach
=== RUN   TestAttach/tracepoint
OTELBEE-PROGSTAT collector=selftest program=getpid_tp mode=tracepoint insns=15 load_us=251
    selftest_test.go:64: counted 100/100 getpid calls
=== RUN   TestAttach/kprobe
OTELBEE-PROGSTAT collector=selftest program=getpid_kprobe mode=kprobe insns=15 load_us=121
    selftest_test.go:83: kprobe PMU missing: open /sys/kernel/tracing/kprobe_events: no such file or directory
=== RUN   TestAttach/fentry
    selftest_test.go:102: kernel refused fentry (EPERM): load program: operation not permitted
--- PASS: TestAttach (0.11s)
    --- PASS: TestAttach/tracepoint (0.08s)
    --- SKIP: TestAttach/kprobe (0.00s)
    --- SKIP: TestAttach/fentry (0.01s)
=== RUN   TestOther
    other_test.go:9: VMTEST-SKIP needs BTF
--- SKIP: TestOther (0.00s)
PASS
`

// Non-verbose output: the skip message comes after the --- SKIP line, and only failures and
// skips are printed at all.
const quietOut = `--- FAIL: TestA (0.20s)
    --- SKIP: TestA/one (0.00s)
        a_test.go:10: no kprobes
    --- FAIL: TestA/two (0.10s)
        a_test.go:20: counter moved by 104, want exactly 100
--- SKIP: TestB (0.00s)
    b_test.go:5: not root
FAIL
`

func TestParseGoTest(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want []TestResult
	}{
		{"verbose", verboseOut, []TestResult{
			{Name: "TestAttach", Status: StatusPass, Duration: 110 * time.Millisecond, HasSubtests: true},
			{Name: "TestAttach/tracepoint", Status: StatusPass, Duration: 80 * time.Millisecond},
			{Name: "TestAttach/kprobe", Status: StatusSkip, Reason: "kprobe PMU missing: open /sys/kernel/tracing/kprobe_events: no such file or directory"},
			{Name: "TestAttach/fentry", Status: StatusSkip, Reason: "kernel refused fentry (EPERM): load program: operation not permitted", Duration: 10 * time.Millisecond},
			{Name: "TestOther", Status: StatusSkip, Reason: "VMTEST-SKIP needs BTF"},
		}},
		{"quiet", quietOut, []TestResult{
			{Name: "TestA", Status: StatusFail, Duration: 200 * time.Millisecond, HasSubtests: true},
			{Name: "TestA/one", Status: StatusSkip, Reason: "no kprobes"},
			{Name: "TestA/two", Status: StatusFail, Duration: 100 * time.Millisecond},
			{Name: "TestB", Status: StatusSkip, Reason: "not root"},
		}},
		{"crash mid-test", "=== RUN   TestA\n=== RUN   TestA/x\npanic: boom\n", []TestResult{
			{Name: "TestA", HasSubtests: true},
			{Name: "TestA/x"},
		}},
		{"parallel subtests with NAME lines", "=== RUN   TestP\n=== RUN   TestP/a\n=== PAUSE TestP/a\n=== RUN   TestP/b\n=== PAUSE TestP/b\n" +
			"=== CONT  TestP/a\n=== NAME  TestP/b\n    p_test.go:3: b says skip\n=== NAME  TestP/a\n    p_test.go:4: a logs\n" +
			"--- PASS: TestP (0.00s)\n    --- SKIP: TestP/b (0.00s)\n    --- PASS: TestP/a (0.00s)\n", []TestResult{
			{Name: "TestP", Status: StatusPass, HasSubtests: true},
			{Name: "TestP/a", Status: StatusPass},
			{Name: "TestP/b", Status: StatusSkip, Reason: "b says skip"},
		}},
		{"not a go test", "hello\nworld\n", []TestResult{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseGoTest(tt.out)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestClassifyGoTestJobs(t *testing.T) {
	tests := []struct {
		name   string
		exit   string
		out    string
		status Status
		reason string
		tests  map[string]Status
	}{
		{"some skipped is pass", "0", verboseOut, StatusPass, "", map[string]Status{
			"TestAttach/tracepoint": StatusPass, "TestAttach/kprobe": StatusSkip, "TestOther": StatusSkip}},
		{"all skipped is skip", "0", "=== RUN   TestA\n    a_test.go:3: needs root\n--- SKIP: TestA (0.00s)\nPASS\n", StatusSkip, "TestA: needs root", nil},
		{"failure names the tests", "1", quietOut, StatusFail, "exit=1: TestA/two", nil},
		{"no test matched -test.run is a failure", "0", "testing: warning: no tests to run\nPASS\n", StatusFail, "no tests ran", nil},
		{"crash marks unfinished tests failed", "2", "=== RUN   TestA\npanic: boom\n", StatusFail, "exit=2", map[string]Status{"TestA": StatusFail}},
		{"killed marks unfinished tests timeout", "timeout", "=== RUN   TestA\n=== RUN   TestA/slow\n--- PASS: TestA/fast (0.00s)\n", StatusTimeout, "", map[string]Status{
			"TestA/slow": StatusTimeout, "TestA/fast": StatusPass}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := JobResult{Name: "j", Exit: tt.exit, Output: tt.out}
			classify(&j)
			if j.Status != tt.status || !strings.Contains(j.Reason, tt.reason) {
				t.Errorf("status %s reason %q, want %s containing %q", j.Status, j.Reason, tt.status, tt.reason)
			}
			for name, st := range tt.tests {
				if got, ok := j.Test(name); !ok || got.Status != st {
					t.Errorf("test %s = %+v, want %s", name, got, st)
				}
			}
		})
	}
}

func TestReportedTests(t *testing.T) {
	tests := []TestResult{
		{Name: "TestA", Status: StatusFail, HasSubtests: true}, // failed through its child
		{Name: "TestA/x", Status: StatusFail},
		{Name: "TestB", Status: StatusFail, HasSubtests: true}, // failed on its own
		{Name: "TestB/y", Status: StatusPass},
		{Name: "TestC", Status: StatusPass},
	}
	var names []string
	for _, r := range reportedTests(tests) {
		names = append(names, r.Name)
	}
	if want := []string{"TestA/x", "TestB", "TestB/y", "TestC"}; !reflect.DeepEqual(names, want) {
		t.Errorf("reported %v, want %v", names, want)
	}
}

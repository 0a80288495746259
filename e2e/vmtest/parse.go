package vmtest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/otelbee/otelbee/e2e/vmtest/internal/jobrun"
)

// Status is the outcome of a job or a test on one kernel.
type Status string

const (
	StatusPass    Status = "pass"
	StatusFail    Status = "fail"
	StatusSkip    Status = "skip"
	StatusTimeout Status = "timeout"
	// StatusNotRun: the job was expected but the VM never started it (crashed, deadline).
	StatusNotRun Status = "not-run"
)

// Failed reports whether s makes the run fail.
func (s Status) Failed() bool {
	return s == StatusFail || s == StatusTimeout || s == StatusNotRun
}

// SkipMarker is what a job prints (at the start of a line, or in a Go test log line) to say it
// did not test anything on this kernel, and why: "VMTEST-SKIP no BTF on this kernel".
const SkipMarker = "VMTEST-SKIP"

// TestResult is one Go test or subtest of a job run with -test.v.
type TestResult struct {
	Name     string // "TestAttach/kprobe"
	Status   Status
	Reason   string // the skip message, or why a test has no result
	Duration time.Duration
	// HasSubtests is set for tests that ran subtests; reports show the subtests instead.
	HasSubtests bool
}

// JobResult is one job's outcome on one kernel.
type JobResult struct {
	Name     string
	Status   Status
	Exit     string // "0", "1", "timeout", "signal-SIGSEGV", "start-error"; "" if it never ended
	Duration time.Duration
	// Reason explains a skip (the job's or its tests' skip messages) or a failure.
	Reason    string
	Output    string
	Tests     []TestResult
	ProgStats []ProgStat
	// Rejections are the programs the verifier rejected during the job (a test may expect
	// that; the report lists them either way, with the verifier's reason).
	Rejections []Rejection
}

// Console is the parsed console of one VM (or of one host run).
type Console struct {
	Release  string // uname -r, from the KERNEL marker
	Jobs     []JobResult
	Done     bool // the runner finished all jobs
	Deadline bool // the runner's overall deadline cut the run short
	Warnings []string
	// Outside holds console lines that belong to no job: the kernel's boot messages, and a
	// kernel panic if the VM died; shown when something went wrong.
	Outside []string
}

// ParseConsole splits console output into per-job results. It tolerates carriage returns,
// kernel messages between jobs, and a marker glued to the end of a line of other output.
func ParseConsole(text string) *Console {
	c := &Console{}
	text = strings.ReplaceAll(text, "\r", "")
	var cur *JobResult
	var out strings.Builder
	finish := func(exit string, dur time.Duration, ended bool) {
		cur.Output = out.String()
		if ended {
			cur.Exit, cur.Duration = exit, dur
			classify(cur)
		} else {
			cur.Exit = ""
			classifyIncomplete(cur, c.Deadline)
		}
		c.Jobs = append(c.Jobs, *cur)
		cur = nil
		out.Reset()
	}
	for _, line := range strings.Split(text, "\n") {
		i := strings.Index(line, jobrun.MarkerPrefix)
		if i < 0 {
			if cur != nil {
				out.WriteString(line)
				out.WriteByte('\n')
			} else if strings.TrimSpace(line) != "" {
				c.Outside = append(c.Outside, line)
			}
			continue
		}
		if i > 0 && cur != nil {
			out.WriteString(line[:i])
			out.WriteByte('\n')
		}
		marker := line[i:]
		switch {
		case strings.HasPrefix(marker, jobrun.MarkerKernel):
			c.Release = strings.TrimSpace(strings.TrimPrefix(marker, jobrun.MarkerKernel))
		case strings.HasPrefix(marker, jobrun.MarkerBegin):
			if cur != nil {
				finish("", 0, false)
			}
			cur = &JobResult{Name: strings.TrimSpace(strings.TrimPrefix(marker, jobrun.MarkerBegin))}
		case strings.HasPrefix(marker, jobrun.MarkerEnd):
			name, exit, dur, ok := parseEnd(strings.TrimPrefix(marker, jobrun.MarkerEnd))
			if !ok || cur == nil || cur.Name != name {
				c.Warnings = append(c.Warnings, "unexpected marker: "+marker)
				continue
			}
			finish(exit, dur, true)
		case strings.HasPrefix(marker, jobrun.MarkerDone):
			c.Done = true
		case strings.HasPrefix(marker, jobrun.MarkerDeadline):
			c.Deadline = true
		case strings.HasPrefix(marker, jobrun.MarkerWarn):
			c.Warnings = append(c.Warnings, strings.TrimPrefix(marker, jobrun.MarkerWarn))
		default:
			if cur != nil {
				out.WriteString(line)
				out.WriteByte('\n')
			}
		}
	}
	if cur != nil {
		finish("", 0, false)
	}
	return c
}

// parseEnd parses "<name> exit=<x> dur=<ms>".
func parseEnd(s string) (name, exit string, dur time.Duration, ok bool) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return "", "", 0, false
	}
	name = f[0]
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "exit":
			exit = v
		case "dur":
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
				dur = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return name, exit, dur, exit != ""
}

// noTestsWarning is what a Go test binary prints when -test.run matches no test.
const noTestsWarning = "testing: warning: no tests to run"

// classify sets a finished job's status, reason, tests and program statistics.
func classify(j *JobResult) {
	j.Tests = ParseGoTest(j.Output)
	j.ProgStats = ParseProgStats(j.Output)
	j.Rejections = ParseRejections(j.Output)
	skips := skipReasons(j.Output)
	failed := failedTests(j.Tests)

	switch {
	case j.Exit == jobrun.ExitTimeout:
		j.Status, j.Reason = StatusTimeout, "killed at the job's timeout"
		markUnfinished(j.Tests, StatusTimeout, "still running when the job was killed")
	case j.Exit != "0" && strings.Contains(j.Output, "panic: test timed out after"):
		// The Go test binary's own -test.timeout fired: a hang, reported with stacks.
		j.Status, j.Reason = StatusTimeout, firstLineContaining(j.Output, "panic: test timed out after")
		markUnfinished(j.Tests, StatusTimeout, "running when -test.timeout fired")
	case j.Exit != "0":
		j.Status = StatusFail
		j.Reason = "exit=" + j.Exit
		if len(failed) > 0 {
			j.Reason += ": " + strings.Join(failed, ", ")
		}
		markUnfinished(j.Tests, StatusFail, "no result line (the test binary crashed or exited)")
	case len(failed) > 0:
		j.Status, j.Reason = StatusFail, "failed tests despite exit=0: "+strings.Join(failed, ", ")
	default:
		markUnfinished(j.Tests, StatusFail, "no result line")
		leaves := reportedTests(j.Tests)
		allSkipped := len(leaves) > 0
		var reasons []string
		for _, t := range leaves {
			if t.Status != StatusSkip {
				allSkipped = false
			} else if t.Reason != "" {
				reasons = append(reasons, t.Name+": "+t.Reason)
			}
		}
		switch {
		case len(leaves) == 0 && len(skips) == 0 && strings.Contains(j.Output, noTestsWarning):
			// A -test.run that matches nothing must not pass for a test that ran.
			j.Status, j.Reason = StatusFail, "no tests ran: the -test.run pattern matches no test"
		case allSkipped:
			j.Status, j.Reason = StatusSkip, strings.Join(append(skips, reasons...), "; ")
		case len(leaves) == 0 && len(skips) > 0:
			j.Status, j.Reason = StatusSkip, strings.Join(skips, "; ")
		default:
			j.Status = StatusPass
		}
	}
}

func classifyIncomplete(j *JobResult, deadline bool) {
	j.Tests = ParseGoTest(j.Output)
	j.ProgStats = ParseProgStats(j.Output)
	j.Rejections = ParseRejections(j.Output)
	if deadline {
		j.Status, j.Reason = StatusTimeout, "the VM's overall deadline ended the run during this job"
		markUnfinished(j.Tests, StatusTimeout, "running at the deadline")
		return
	}
	j.Status, j.Reason = StatusFail, "no END marker: the VM died during this job (see the console log)"
	markUnfinished(j.Tests, StatusFail, "running when the VM died")
}

func markUnfinished(tests []TestResult, s Status, reason string) {
	for i := range tests {
		if tests[i].Status == "" {
			tests[i].Status, tests[i].Reason = s, reason
		}
	}
}

func failedTests(tests []TestResult) []string {
	var names []string
	for _, t := range reportedTests(tests) {
		if t.Status == StatusFail {
			names = append(names, t.Name)
		}
	}
	return names
}

func firstLineContaining(text, s string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func skipReasons(output string) []string {
	var r []string
	for _, line := range strings.Split(output, "\n") {
		i := strings.Index(line, SkipMarker)
		if i < 0 {
			continue
		}
		// At the start of the line, or as the message of a Go test log line.
		before := strings.TrimSpace(line[:i])
		if before != "" && !goLogPrefixRE.MatchString(before) {
			continue
		}
		r = append(r, strings.TrimSpace(line[i+len(SkipMarker):]))
	}
	return r
}

var (
	goRunRE       = regexp.MustCompile(`^=== (RUN|CONT|NAME|PAUSE)\s+(\S+)`)
	goResultRE    = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)`)
	goLogPrefixRE = regexp.MustCompile(`^[\w.-]+\.go:\d+:$`)
	goLogLineRE   = regexp.MustCompile(`^[\w.-]+\.go:\d+: ?(.*)$`)
)

// ParseGoTest extracts per-test results from the output of a Go test binary run with
// -test.v, in the order the tests started. A skip's reason is the test's last log message:
// in verbose mode Go prints t.Skip's message (as a "file.go:NN: msg" line) before the
// "--- SKIP" line, without -test.v it prints it indented after the "--- SKIP" line; both work.
func ParseGoTest(output string) []TestResult {
	type state struct {
		res     TestResult
		lastLog string
		done    bool
	}
	var order []string
	tests := map[string]*state{}
	get := func(name string) *state {
		s, ok := tests[name]
		if !ok {
			s = &state{res: TestResult{Name: name}}
			tests[name] = s
			order = append(order, name)
			if i := strings.LastIndexByte(name, '/'); i > 0 {
				if parent := tests[name[:i]]; parent != nil {
					parent.res.HasSubtests = true
				}
			}
		}
		return s
	}
	current := ""
	after, afterIndent := "", 0 // the test whose --- line was just seen, and its indentation
	for _, line := range strings.Split(output, "\n") {
		trimmed := strings.TrimLeft(line, " \t")
		indent := len(line) - len(trimmed)
		if m := goRunRE.FindStringSubmatch(trimmed); m != nil {
			get(m[2])
			if m[1] != "PAUSE" {
				current = m[2]
			}
			after = ""
			continue
		}
		if m := goResultRE.FindStringSubmatch(trimmed); m != nil {
			s := get(m[2])
			s.done = true
			switch m[1] {
			case "PASS":
				s.res.Status = StatusPass
			case "FAIL":
				s.res.Status = StatusFail
			case "SKIP":
				s.res.Status = StatusSkip
				s.res.Reason = s.lastLog
			}
			if secs, err := strconv.ParseFloat(m[3], 64); err == nil {
				s.res.Duration = time.Duration(secs * float64(time.Second))
			}
			after, afterIndent = m[2], indent
			continue
		}
		if after != "" && indent > afterIndent && trimmed != "" {
			// Non-verbose detail lines belong to the test whose result line precedes them.
			s := tests[after]
			if lm := goLogLineRE.FindStringSubmatch(trimmed); lm != nil && s.res.Status == StatusSkip && s.done && s.lastLog == "" && s.res.Reason == "" {
				s.res.Reason = lm[1]
			}
			continue
		}
		after = ""
		if current != "" {
			if lm := goLogLineRE.FindStringSubmatch(trimmed); lm != nil {
				tests[current].lastLog = lm[1]
			}
		}
	}
	res := make([]TestResult, 0, len(order))
	for _, n := range order {
		res = append(res, tests[n].res)
	}
	return res
}

// reportedTests are the tests a report shows: those without subtests, plus a parent that
// failed on its own (none of its subtests failed), since its failure would otherwise vanish.
func reportedTests(tests []TestResult) []TestResult {
	childFailed := map[string]bool{}
	for _, t := range tests {
		if t.Status == StatusFail || t.Status == StatusTimeout {
			for n := t.Name; strings.Contains(n, "/"); {
				n = n[:strings.LastIndexByte(n, '/')]
				childFailed[n] = true
			}
		}
	}
	var out []TestResult
	for _, t := range tests {
		if !t.HasSubtests || (t.Status.Failed() && !childFailed[t.Name]) {
			out = append(out, t)
		}
	}
	return out
}

// String is a one-line summary of a job result.
func (j JobResult) String() string {
	s := fmt.Sprintf("%s: %s (exit=%s, %s)", j.Name, j.Status, j.Exit, j.Duration)
	if j.Reason != "" {
		s += ": " + j.Reason
	}
	return s
}

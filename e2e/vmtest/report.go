package vmtest

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// Failed reports whether any job failed, timed out or did not run on any kernel, or a kernel
// could not be run at all.
func (r *Report) Failed() bool {
	for _, k := range r.Kernels {
		if k.Err != nil {
			return true
		}
		for _, j := range k.Jobs {
			if j.Status.Failed() {
				return true
			}
		}
	}
	return false
}

// ProgStats returns every OTELBEE-PROGSTAT record of the run, kernel by kernel.
func (r *Report) ProgStats() []ProgStat {
	var all []ProgStat
	for _, k := range r.Kernels {
		for _, j := range k.Jobs {
			all = append(all, j.ProgStats...)
		}
	}
	return all
}

// Result returns the result of job on the kernel labelled kernel, if there is one.
func (r *Report) Result(kernel, job string) (JobResult, bool) {
	for _, k := range r.Kernels {
		if k.Label != kernel {
			continue
		}
		for _, j := range k.Jobs {
			if j.Name == job {
				return j, true
			}
		}
	}
	return JobResult{}, false
}

// Test returns a test's result within a job's result.
func (j JobResult) Test(name string) (TestResult, bool) {
	for _, t := range j.Tests {
		if t.Name == name {
			return t, true
		}
	}
	return TestResult{}, false
}

// Table renders the results as plain text: a grid of job (and Go test) × kernel, then the
// kernels with their boot times, then the reasons of every skip and failure.
func (r *Report) Table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "JOB / TEST")
	for _, k := range r.Kernels {
		fmt.Fprintf(tw, "\t%s", k.Label)
	}
	fmt.Fprintln(tw)

	for _, job := range r.JobNames {
		fmt.Fprint(tw, job)
		for _, k := range r.Kernels {
			fmt.Fprintf(tw, "\t%s", cell(k.job(job).Status))
		}
		fmt.Fprintln(tw)
		for _, test := range r.testNames(job) {
			fmt.Fprintf(tw, "  %s", test)
			for _, k := range r.Kernels {
				st := Status("")
				if t, ok := k.job(job).Test(test); ok {
					st = t.Status
				}
				fmt.Fprintf(tw, "\t%s", cell(st))
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()

	b.WriteString("\nKernels:\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, k := range r.Kernels {
		src := "machine kernel"
		if k.Kernel != nil {
			src = k.Kernel.Package + " " + k.Kernel.Version
			if k.Kernel.Package == "" {
				src = k.Kernel.Vmlinuz
			}
		}
		boot := "-"
		if k.Boot > 0 {
			boot = k.Boot.Round(10 * time.Millisecond).String()
		}
		status := "ok"
		if k.Err != nil {
			status = "ERROR: " + firstLine(k.Err.Error())
		}
		fmt.Fprintf(tw, "  %s\t%s\trelease %s\tboot %s\ttotal %s\t%s\n", k.Label, src, orDash(k.Release), boot,
			k.Wall.Round(10*time.Millisecond), status)
	}
	tw.Flush()

	var skips, fails []string
	for _, k := range r.Kernels {
		if k.Err != nil {
			fails = append(fails, fmt.Sprintf("  %s: %v (log: %s)", k.Label, k.Err, k.LogPath))
		}
		for _, w := range k.Warnings {
			fails = append(fails, fmt.Sprintf("  %s: warning: %s", k.Label, w))
		}
		for _, j := range k.Jobs {
			switch {
			case j.Status == StatusSkip:
				skips = append(skips, fmt.Sprintf("  %s %s: %s", k.Label, j.Name, orDash(j.Reason)))
			case j.Status.Failed():
				fails = append(fails, fmt.Sprintf("  %s %s: %s: %s", k.Label, j.Name, j.Status, orDash(j.Reason)))
				if j.Output != "" {
					fails = append(fails, indent(tail(j.Output, 40), "      | "))
				}
			}
			if j.Status == StatusSkip {
				continue
			}
			for _, t := range reportedTests(j.Tests) {
				if t.Status == StatusSkip {
					skips = append(skips, fmt.Sprintf("  %s %s %s: %s", k.Label, j.Name, t.Name, orDash(t.Reason)))
				}
			}
		}
	}
	if len(skips) > 0 {
		b.WriteString("\nSkipped:\n" + strings.Join(skips, "\n") + "\n")
	}
	if len(fails) > 0 {
		b.WriteString("\nFailures:\n" + strings.Join(fails, "\n") + "\n")
	}
	if r.Failed() {
		b.WriteString("\nRESULT: FAIL\n")
	} else {
		b.WriteString("\nRESULT: PASS\n")
	}
	return b.String()
}

func (k KernelResult) job(name string) JobResult {
	for _, j := range k.Jobs {
		if j.Name == name {
			return j
		}
	}
	return JobResult{Name: name}
}

// testNames lists a job's reported tests over all kernels, in first-seen order.
func (r *Report) testNames(job string) []string {
	var names []string
	seen := map[string]bool{}
	for _, k := range r.Kernels {
		for _, t := range reportedTests(k.job(job).Tests) {
			if !seen[t.Name] {
				seen[t.Name] = true
				names = append(names, t.Name)
			}
		}
	}
	return names
}

func cell(s Status) string {
	switch s {
	case "":
		return "-"
	case StatusFail:
		return "FAIL"
	case StatusTimeout:
		return "TIMEOUT"
	case StatusNotRun:
		return "NOT-RUN"
	}
	return string(s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

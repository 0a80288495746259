package vmtest

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// Failed reports whether any job failed, timed out or did not run on any kernel, a kernel
// could not be run at all, a program exceeded the verifier budget, or a declared attach link
// was loaded on no kernel.
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
	return len(r.OverBudget) > 0 || len(r.Unexercised) > 0
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

// Table renders the results as plain text: a grid of job (and, for a job whose tests ended
// differently, Go test) × kernel whose skip cells point to numbered reasons; then the kernels
// with their boot times, the verifier rejections, the verifier budget, the attach links no
// kernel loaded, and the failures with the lines of output that explain them.
func (r *Report) Table() string {
	var b strings.Builder
	var notes footnotes
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "JOB / TEST")
	for _, k := range r.Kernels {
		fmt.Fprintf(tw, "\t%s", k.Label)
	}
	fmt.Fprintln(tw)

	for _, job := range r.JobNames {
		fmt.Fprint(tw, job)
		for _, k := range r.Kernels {
			j := k.job(job)
			fmt.Fprintf(tw, "\t%s", notes.cell(j.Status, jobSkipReason(j), k.Label+" "+job))
		}
		fmt.Fprintln(tw)
		if !r.mixed(job) {
			continue
		}
		for _, test := range r.testNames(job) {
			fmt.Fprintf(tw, "  %s", test)
			for _, k := range r.Kernels {
				st, reason := Status(""), ""
				if t, ok := k.job(job).Test(test); ok {
					st, reason = t.Status, t.Reason
				}
				fmt.Fprintf(tw, "\t%s", notes.cell(st, trimSkip(reason), k.Label+" "+job))
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

	if len(notes.texts) > 0 {
		b.WriteString("\nSkip reasons:\n")
		for i, text := range notes.texts {
			fmt.Fprintf(&b, "  [%d] %s\n      (%s)\n", i+1, clip(text, 400), strings.Join(notes.where[i], ", "))
		}
	}

	if rej := r.rejections(); len(rej) > 0 {
		b.WriteString("\nVerifier rejections (end of the verifier log, as the loader reports it):\n")
		b.WriteString(strings.Join(rej, "\n") + "\n")
	}

	if r.MaxInsns > 0 {
		most := ProgStat{Insns: -1}
		for _, ps := range r.ProgStats() {
			if ps.Insns > most.Insns {
				most = ps
			}
		}
		fmt.Fprintf(&b, "\nVerifier budget: %d instructions per program; ", r.MaxInsns)
		if most.Insns < 0 {
			b.WriteString("no instruction counts were reported.\n")
		} else {
			fmt.Fprintf(&b, "the largest is %s %s (%s) with %d on %s.\n", most.Collector, most.Program, most.Mode, most.Insns, most.Kernel)
		}
	}

	if len(r.Covered) > 0 {
		fmt.Fprintf(&b, "\nAttach links declared by %s and never loaded on any kernel:", strings.Join(r.Covered, ", "))
		if len(r.Unexercised) == 0 {
			b.WriteString(" none.\n")
		} else {
			b.WriteString("\n")
			for _, l := range r.Unexercised {
				fmt.Fprintf(&b, "  %s\n", l)
			}
		}
	}

	var fails []string
	for _, k := range r.Kernels {
		if k.Err != nil {
			fails = append(fails, fmt.Sprintf("  %s: %v (log: %s)", k.Label, k.Err, k.LogPath))
		}
		for _, w := range k.Warnings {
			fails = append(fails, fmt.Sprintf("  %s: warning: %s", k.Label, w))
		}
		for _, j := range k.Jobs {
			if !j.Status.Failed() {
				continue
			}
			fails = append(fails, fmt.Sprintf("  %s %s: %s: %s (log: %s)", k.Label, j.Name, j.Status, orDash(j.Reason), orDash(k.LogPath)))
			if ex := failureExcerpt(j.Output); ex != "" {
				fails = append(fails, indent(ex, "      | "))
			}
		}
	}
	for _, ps := range r.OverBudget {
		fails = append(fails, fmt.Sprintf("  %s %s %s (%s): %d verified instructions, over the budget of %d",
			ps.Kernel, ps.Collector, ps.Program, ps.Mode, ps.Insns, r.MaxInsns))
	}
	if len(r.Unexercised) > 0 {
		fails = append(fails, fmt.Sprintf("  %d declared attach link(s) never loaded on any kernel (listed above)", len(r.Unexercised)))
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

// footnotes numbers distinct skip reasons, so that the grid stays narrow.
type footnotes struct {
	texts []string
	where [][]string
}

// cell renders a status; a skip gets the number of its reason ("skip[2]").
func (n *footnotes) cell(s Status, reason, where string) string {
	if s != StatusSkip || reason == "" {
		return cell(s)
	}
	i := slices.Index(n.texts, reason)
	if i < 0 {
		i = len(n.texts)
		n.texts = append(n.texts, reason)
		n.where = append(n.where, nil)
	}
	if !slices.Contains(n.where[i], where) {
		n.where[i] = append(n.where[i], where)
	}
	return fmt.Sprintf("skip[%d]", i+1)
}

// jobSkipReason is the distinct skip reasons of a skipped job's tests (or its VMTEST-SKIP
// reason), joined.
func jobSkipReason(j JobResult) string {
	if j.Status != StatusSkip {
		return ""
	}
	var reasons []string
	for _, t := range reportedTests(j.Tests) {
		if r := trimSkip(t.Reason); t.Status == StatusSkip && r != "" && !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	if len(reasons) == 0 {
		return j.Reason
	}
	return strings.Join(reasons, "; ")
}

func trimSkip(reason string) string { return strings.TrimPrefix(reason, "skipping: ") }

// mixed reports whether on some kernel a job's tests did not all end as the job did: only
// then does the grid show its tests, each on a row of its own.
func (r *Report) mixed(job string) bool {
	for _, k := range r.Kernels {
		j := k.job(job)
		for _, t := range reportedTests(j.Tests) {
			if t.Status != j.Status {
				return true
			}
		}
	}
	return false
}

// rejections lists, per kernel and program, the verifier's reason and the jobs it happened in.
func (r *Report) rejections() []string {
	var lines []string
	for _, k := range r.Kernels {
		var order []Rejection
		jobs := map[Rejection][]string{}
		for _, j := range k.Jobs {
			for _, rej := range j.Rejections {
				if _, ok := jobs[rej]; !ok {
					order = append(order, rej)
				}
				jobs[rej] = append(jobs[rej], j.Name)
			}
		}
		for _, rej := range order {
			lines = append(lines, fmt.Sprintf("  %s %s (%s): %s", k.Label, rej.Program, strings.Join(jobs[rej], ", "), clip(rej.Excerpt, 400)))
		}
	}
	return lines
}

// failureExcerpt picks the lines of a failed job's output that explain it: the Go tests' log
// (with the continuation lines of multi-line messages) and result lines, and panics with the
// start of their stack (or, if there are none, the
// output); at most the last 30, each clipped.
func failureExcerpt(output string) string {
	lines := strings.Split(strings.TrimRight(output, "\n"), "\n")
	var keep []string
	stack := 0
	logIndent := -1 // indentation of the last kept test log line; deeper lines continue it
	for _, l := range lines {
		t := strings.TrimSpace(l)
		indent := len(l) - len(strings.TrimLeft(l, " \t"))
		switch {
		case strings.HasPrefix(t, "panic:") || strings.HasPrefix(t, "fatal error:"):
			stack, logIndent = 12, -1
			keep = append(keep, l)
		case stack > 0:
			stack--
			keep = append(keep, l)
		case goLogLineRE.MatchString(t):
			logIndent = indent
			keep = append(keep, l)
		case logIndent >= 0 && indent > logIndent && t != "":
			keep = append(keep, l) // a multi-line t.Log message
		case strings.HasPrefix(t, "--- FAIL") || t == "FAIL":
			logIndent = -1
			keep = append(keep, l)
		default:
			logIndent = -1
		}
	}
	if len(keep) == 0 {
		keep = lines
	}
	if len(keep) > 30 {
		keep = append([]string{"..."}, keep[len(keep)-30:]...)
	}
	for i := range keep {
		keep[i] = clip(keep[i], 500)
	}
	return strings.Join(keep, "\n")
}

// clip cuts s to about n bytes, on a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
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

package vmtest

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
)

// DefaultMaxInsns is the verifier budget of one program: a quarter of the one million
// instructions the verifier processes at most (BPF_COMPLEXITY_LIMIT_INSNS), so that verifier
// complexity cannot creep up to the limit unnoticed.
const DefaultMaxInsns = 250_000

// OverBudget returns the records whose verified instructions exceed budget, one per kernel,
// collector, program and mode (the largest), sorted.
func OverBudget(records []ProgStat, budget int64) []ProgStat {
	type key struct{ kernel, collector, program, mode string }
	worst := map[key]ProgStat{}
	for _, r := range records {
		if r.Insns <= budget {
			continue
		}
		k := key{r.Kernel, r.Collector, r.Program, r.Mode}
		if w, ok := worst[k]; !ok || r.Insns > w.Insns {
			worst[k] = r
		}
	}
	out := make([]ProgStat, 0, len(worst))
	for _, r := range worst {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b ProgStat) int {
		return cmp.Or(strings.Compare(a.Collector, b.Collector), strings.Compare(a.Program, b.Program),
			strings.Compare(a.Mode, b.Mode), strings.Compare(a.Kernel, b.Kernel))
	})
	return out
}

// RenderCollectorSummary renders one row per collector: how many programs it loaded, the
// program with the most verified instructions (where, in which mode) against the budget, and
// the slowest load (of each program's fastest load per kernel).
func RenderCollectorSummary(records []ProgStat, budget int64) string {
	type sum struct {
		programs      map[string]bool
		most, slowest ProgStat
	}
	// A program loaded several times on one kernel counts with its fastest load, as in the
	// per-program table: the slower ones measure the machine's other work.
	type key struct{ kernel, collector, program, mode string }
	fastest := map[key]int64{}
	for _, r := range records {
		k := key{r.Kernel, r.Collector, r.Program, r.Mode}
		if f, ok := fastest[k]; !ok || (r.LoadUS >= 0 && (f < 0 || r.LoadUS < f)) {
			fastest[k] = r.LoadUS
		}
	}
	var order []string
	by := map[string]*sum{}
	for _, r := range records {
		r.LoadUS = fastest[key{r.Kernel, r.Collector, r.Program, r.Mode}]
		s := by[r.Collector]
		if s == nil {
			s = &sum{programs: map[string]bool{}, most: ProgStat{Insns: -1}, slowest: ProgStat{LoadUS: -1}}
			by[r.Collector] = s
			order = append(order, r.Collector)
		}
		s.programs[r.Program+"/"+r.Mode] = true
		if r.Insns > s.most.Insns {
			s.most = r
		}
		if r.LoadUS > s.slowest.LoadUS {
			s.slowest = r
		}
	}
	if len(order) == 0 {
		return ""
	}
	sort.Strings(order)
	var b strings.Builder
	fmt.Fprintf(&b, "| Collector | Programs (program × mode) | Most verified instructions | Of the %d budget | Slowest load |\n", budget)
	b.WriteString("|---|---|---|---|---|\n")
	for _, c := range order {
		s := by[c]
		most, share := "n/a", "n/a"
		if s.most.Insns >= 0 {
			most = fmt.Sprintf("%d (`%s`, %s, %s)", s.most.Insns, s.most.Program, s.most.Mode, s.most.Kernel)
			share = fmt.Sprintf("%.2f %%", 100*float64(s.most.Insns)/float64(budget))
		}
		slow := "n/a"
		if s.slowest.LoadUS >= 0 {
			slow = fmt.Sprintf("%s (`%s`, %s, %s)", formatMicros(s.slowest.LoadUS), s.slowest.Program, s.slowest.Mode, s.slowest.Kernel)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", mdEscape(c), len(s.programs), most, share, slow)
	}
	return b.String()
}

// RenderProgStatsSection is what the harness writes into docs/kernels.md: the per-collector
// summary, then the per-program table.
func RenderProgStatsSection(records []ProgStat, budget int64) string {
	var b strings.Builder
	if s := RenderCollectorSummary(records, budget); s != "" {
		b.WriteString(s)
		b.WriteString("\n")
	}
	b.WriteString(RenderKernelTable(records))
	return b.String()
}

// Markers of the part of a Markdown file the harness rewrites.
const (
	GeneratedBegin = "<!-- BEGIN GENERATED -->"
	GeneratedEnd   = "<!-- END GENERATED -->"
)

// WriteGeneratedSection replaces what lies between GeneratedBegin and GeneratedEnd in path with
// content, keeping the rest of the file (the hand-written parts). A missing file is created
// holding just the markers and content; an existing file without both markers is an error,
// so a mistyped path never overwrites a hand-written document.
func WriteGeneratedSection(path, content string) error {
	if !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	old, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return os.WriteFile(path, []byte(GeneratedBegin+"\n"+content+GeneratedEnd+"\n"), 0o644)
	}
	if err != nil {
		return err
	}
	i := bytes.Index(old, []byte(GeneratedBegin))
	j := bytes.Index(old, []byte(GeneratedEnd))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s section: not overwriting it", path, GeneratedBegin, GeneratedEnd)
	}
	var out bytes.Buffer
	out.Write(old[:i+len(GeneratedBegin)])
	out.WriteString("\n")
	out.WriteString(content)
	out.Write(old[j:])
	return writeIfChanged(path, out.Bytes())
}

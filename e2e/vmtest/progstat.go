package vmtest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ProgStatMarker starts the line a test prints for each BPF program it loaded:
//
//	OTELBEE-PROGSTAT collector=tcp program=tcp_sendmsg mode=fentry insns=812 load_us=1234
//
// insns is the number of instructions the verifier processed: bpf_prog_info.verified_insns
// (Linux 5.16+), or before that the "processed N insns" of a LogLevelStats verifier log, or
// "n/a" (0 counts as "n/a"). load_us is the wall time of loading the program (mostly the
// verifier). Values have no spaces. Further key=value fields (e.g. verifier_us, the verifier's own time) go to Extra.
const ProgStatMarker = "OTELBEE-PROGSTAT"

// ProgStat is one OTELBEE-PROGSTAT record.
type ProgStat struct {
	Kernel  string // the matrix label ("6.1", "host"); set by the harness
	Release string // uname -r of that kernel; set by the harness
	Job     string // set by the harness

	Collector string
	Program   string
	Mode      string
	Insns     int64 // verified instructions; -1 when the kernel does not report them
	LoadUS    int64 // load time in microseconds; -1 when not given
	Extra     map[string]string
}

// ParseProgStats returns the records in text, in order. Lines missing collector, program or
// mode are ignored: a record the table cannot place is of no use.
func ParseProgStats(text string) []ProgStat {
	var res []ProgStat
	for _, line := range strings.Split(text, "\n") {
		i := strings.Index(line, ProgStatMarker+" ")
		if i < 0 {
			continue
		}
		r := ProgStat{Insns: -1, LoadUS: -1}
		for _, kv := range strings.Fields(line[i+len(ProgStatMarker):]) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			switch k {
			case "collector":
				r.Collector = v
			case "program":
				r.Program = v
			case "mode":
				r.Mode = v
			case "insns":
				// 0 is what bpf_prog_info gives where it has no verified_insns (before 5.16):
				// a program that loaded had at least one instruction verified.
				if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
					r.Insns = n
				}
			case "load_us":
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					r.LoadUS = n
				}
			default:
				if r.Extra == nil {
					r.Extra = map[string]string{}
				}
				r.Extra[k] = v
			}
		}
		if r.Collector == "" || r.Program == "" || r.Mode == "" {
			continue
		}
		res = append(res, r)
	}
	return res
}

// RenderKernelTable renders records as a Markdown table: one row per collector, program and
// attach mode, one column per kernel (in the order kernels first appear in records), each
// cell "<verified insns> insns, <load time>". When a program was loaded more than once on a
// kernel, the cell shows the largest instruction count (they should agree) and the shortest
// load time (the least disturbed by the machine's other work).
func RenderKernelTable(records []ProgStat) string {
	type rowKey struct{ collector, program, mode string }
	type agg struct {
		insns, loadUS int64
	}
	var kernels []string
	releases := map[string]string{}
	cells := map[rowKey]map[string]*agg{}
	for _, r := range records {
		if _, ok := releases[r.Kernel]; !ok {
			kernels = append(kernels, r.Kernel)
			releases[r.Kernel] = r.Release
		}
		k := rowKey{r.Collector, r.Program, r.Mode}
		if cells[k] == nil {
			cells[k] = map[string]*agg{}
		}
		a := cells[k][r.Kernel]
		if a == nil {
			cells[k][r.Kernel] = &agg{insns: r.Insns, loadUS: r.LoadUS}
			continue
		}
		a.insns = max(a.insns, r.Insns)
		if r.LoadUS >= 0 && (a.loadUS < 0 || r.LoadUS < a.loadUS) {
			a.loadUS = r.LoadUS
		}
	}
	if len(records) == 0 {
		return "_No BPF programs were reported._\n"
	}
	rows := make([]rowKey, 0, len(cells))
	for k := range cells {
		rows = append(rows, k)
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.collector != b.collector {
			return a.collector < b.collector
		}
		if a.program != b.program {
			return a.program < b.program
		}
		return a.mode < b.mode
	})

	var b strings.Builder
	b.WriteString("| Collector | Program | Mode |")
	for _, k := range kernels {
		b.WriteString(" " + mdEscape(k) + " |")
	}
	b.WriteString("\n|---|---|---|")
	for range kernels {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s |", mdEscape(row.collector), mdEscape(row.program), mdEscape(row.mode))
		for _, k := range kernels {
			a := cells[row][k]
			if a == nil {
				b.WriteString(" not loaded |")
				continue
			}
			insns := "n/a"
			if a.insns >= 0 {
				insns = strconv.FormatInt(a.insns, 10)
			}
			load := "n/a"
			if a.loadUS >= 0 {
				load = formatMicros(a.loadUS)
			}
			fmt.Fprintf(&b, " %s insns, %s |", insns, load)
		}
		b.WriteString("\n")
	}
	b.WriteString("\nCells: instructions processed by the verifier, load time (n/a: not reported).")
	var rel []string
	for _, k := range kernels {
		if releases[k] != "" && releases[k] != k {
			rel = append(rel, fmt.Sprintf("%s = `%s`", mdEscape(k), releases[k]))
		}
	}
	if len(rel) > 0 {
		b.WriteString(" Kernels: " + strings.Join(rel, ", ") + ".")
	}
	b.WriteString("\n")
	return b.String()
}

func formatMicros(us int64) string {
	d := time.Duration(us) * time.Microsecond
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", us)
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(us)/1000)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

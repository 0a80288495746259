package tls

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// reportPIDs bounds how many processes a report line names.
const reportPIDs = 8

// WriteReport prints, for the processes running now, each TLS target found
// (one line per file, however many processes map it), whether a uprobe set
// could attach to it and, if not, why. It is `otelbee doctor`'s TLS section.
func WriteReport(w io.Writer, procRoot string) error {
	d, err := NewDiscoverer(procRoot, NewCache(4096))
	if err != nil {
		return err
	}
	pids, err := d.PIDs()
	if err != nil {
		return err
	}
	type line struct {
		t     *Target
		procs []string
	}
	byFile := map[*Target]*line{}
	var order []*line
	unreadable := 0
	for _, pid := range pids {
		p, err := d.Process(pid)
		if err != nil {
			unreadable++ // exited meanwhile, or not ours to read
			continue
		}
		for _, t := range p.Targets {
			l, ok := byFile[t]
			if !ok {
				l = &line{t: t}
				byFile[t] = l
				order = append(order, l)
			}
			l.procs = append(l.procs, fmt.Sprintf("%d(%s)", pid, p.Comm))
		}
	}
	fmt.Fprintf(w, "\nTLS (uprobe targets in running processes, one per file):\n")
	if len(order) == 0 {
		fmt.Fprintf(w, "  none found in %d processes\n", len(pids))
	}
	slices.SortFunc(order, func(a, b *line) int { return strings.Compare(a.t.Path, b.t.Path) })
	for _, l := range order {
		t := l.t
		procs := l.procs
		more := ""
		if len(procs) > reportPIDs {
			more = fmt.Sprintf(" +%d more", len(procs)-reportPIDs)
			procs = procs[:reportPIDs]
		}
		fmt.Fprintf(w, "  %s: %s\n", t.Path, describe(t))
		fmt.Fprintf(w, "    processes: %s%s\n", strings.Join(procs, " "), more)
	}
	fmt.Fprintf(w, "  (%d processes, %d files read, %d processes unreadable)\n", len(pids), d.cache.Reads, unreadable)
	return nil
}

// describe is one target's verdict for people.
func describe(t *Target) string {
	kind := string(t.Stack)
	if t.Version != "" {
		kind += " " + t.Version
	}
	if t.Stack == StackOpenSSL {
		if t.Static {
			kind += " (built into the executable)"
		} else {
			kind += " (shared library)"
		}
	}
	if !t.Instrumentable() {
		s := kind + ": not instrumentable: " + string(t.Reason)
		if t.Detail != "" {
			s += " (" + t.Detail + ")"
		}
		return s
	}
	names := make([]string, len(t.Funcs))
	for i, f := range t.Funcs {
		names[i] = f.Name
		if len(f.Returns) > 0 {
			names[i] += fmt.Sprintf("[%d returns]", len(f.Returns))
		}
	}
	s := kind + ": instrumentable: " + strings.Join(names, " ")
	if t.FD != nil {
		s += ", fd offsets from " + t.FD.Source
	}
	return s
}

package vmtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOverBudgetAndSummary(t *testing.T) {
	recs := []ProgStat{
		{Kernel: "6.1", Collector: "tcp", Program: "state", Mode: "tp_btf", Insns: 900, LoadUS: 300_000},
		{Kernel: "6.1", Collector: "tcp", Program: "state", Mode: "tp_btf", Insns: 1200, LoadUS: 1000},
		{Kernel: "6.12", Collector: "tcp", Program: "send", Mode: "kprobe", Insns: 13, LoadUS: 2000},
		{Kernel: "5.10", Collector: "tcp", Program: "send", Mode: "kprobe", Insns: -1, LoadUS: 2500},
		{Kernel: "host", Collector: "dns", Program: "skb", Mode: "cgroup_skb", Insns: 400, LoadUS: -1},
	}
	over := OverBudget(recs, 1000)
	if len(over) != 1 || over[0].Insns != 1200 || over[0].Kernel != "6.1" {
		t.Errorf("OverBudget = %+v", over)
	}
	if over := OverBudget(recs, 250_000); len(over) != 0 {
		t.Errorf("OverBudget(250000) = %+v", over)
	}
	got := RenderCollectorSummary(recs, 250_000)
	for _, want := range []string{
		"| dns | 1 | 400 (`skb`, cgroup_skb, host) | 0.16 % | n/a |",
		// state loaded twice on 6.1: its fastest load (1 ms) counts, so kprobe on 5.10 is slowest.
		"| tcp | 2 | 1200 (`state`, tp_btf, 6.1) | 0.48 % | 2.5 ms (`send`, kprobe, 5.10) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "| dns") > strings.Index(got, "| tcp") {
		t.Errorf("collectors not sorted:\n%s", got)
	}
}

func TestWriteGeneratedSection(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "kernels.md")
	hand := "# Kernels\n\nHand-written policy.\n\n" + GeneratedBegin + "\nold table\n" + GeneratedEnd + "\n\nMore prose.\n"
	if err := os.WriteFile(doc, []byte(hand), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteGeneratedSection(doc, "new table"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	want := "# Kernels\n\nHand-written policy.\n\n" + GeneratedBegin + "\nnew table\n" + GeneratedEnd + "\n\nMore prose.\n"
	if string(b) != want {
		t.Errorf("got:\n%s\nwant:\n%s", b, want)
	}

	// A new file gets the markers; a file without them is left alone.
	fresh := filepath.Join(dir, "fresh.md")
	if err := WriteGeneratedSection(fresh, "t\n"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(fresh); string(b) != GeneratedBegin+"\nt\n"+GeneratedEnd+"\n" {
		t.Errorf("fresh file: %q", b)
	}
	plain := filepath.Join(dir, "plain.md")
	os.WriteFile(plain, []byte("prose\n"), 0o644)
	if err := WriteGeneratedSection(plain, "t"); err == nil {
		t.Error("a file without markers was overwritten")
	}
	if b, _ := os.ReadFile(plain); string(b) != "prose\n" {
		t.Errorf("plain file changed: %q", b)
	}
}

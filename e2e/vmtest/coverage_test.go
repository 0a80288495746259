package vmtest

import (
	"reflect"
	"strings"
	"testing"

	"github.com/otelbee/otelbee/collectors/hook"
)

func TestUnexercisedLinks(t *testing.T) {
	progs := func(names ...string) []hook.Program {
		var ps []hook.Program
		for _, n := range names {
			ps = append(ps, hook.Program{Name: n})
		}
		return ps
	}
	chains := []Chain{{Collector: "tcp", Package: "./collectors/tcp", Hooks: []hook.Hook{
		{Name: "send", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: progs("send_btf")},
			{Mode: hook.ModeKprobe, Programs: progs("send_kprobe", "send_kretprobe")},
			{Mode: hook.ModeTracepoint, Programs: progs("send_tp")},
		}},
		{Name: "state", Links: []hook.Link{{Mode: hook.ModeTPBTF, Programs: progs("state_btf")}}},
	}}}
	records := []ProgStat{
		{Kernel: "6.12", Collector: "tcp", Program: "send_btf", Mode: "tp_btf"},
		{Kernel: "6.12", Collector: "tcp", Program: "state_btf", Mode: "tp_btf"},
		// Half a kprobe link on each of two kernels is no kprobe link.
		{Kernel: "6.1", Collector: "tcp", Program: "send_kprobe", Mode: "kprobe"},
		{Kernel: "5.10", Collector: "tcp", Program: "send_kretprobe", Mode: "kprobe"},
		// The right program in the wrong mode, or of another collector, does not count.
		{Kernel: "host", Collector: "tcp", Program: "send_tp", Mode: "tp_btf"},
		{Kernel: "host", Collector: "dns", Program: "send_tp", Mode: "tracepoint"},
	}
	got := UnexercisedLinks(chains, records)
	want := []LinkRef{
		{Collector: "tcp", Hook: "send", Mode: hook.ModeKprobe, Programs: []string{"send_kprobe", "send_kretprobe"}},
		{Collector: "tcp", Hook: "send", Mode: hook.ModeTracepoint, Programs: []string{"send_tp"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if s := got[0].String(); s != "tcp send kprobe (send_kprobe, send_kretprobe)" {
		t.Errorf("String() = %q", s)
	}
}

func TestForcedModeProblem(t *testing.T) {
	def := JobDef{Name: "tcp/fentry", Env: map[string]string{AttachModeEnv: "fentry"}}
	pass := func(modes ...string) JobResult {
		r := JobResult{Name: def.Name, Status: StatusPass}
		for _, m := range modes {
			r.ProgStats = append(r.ProgStats, ProgStat{Collector: "tcp", Program: "p", Mode: m})
		}
		return r
	}
	if p := forcedModeProblem(def, pass("tp_btf", "fentry")); p != "" {
		t.Errorf("fentry used: %s", p)
	}
	if p := forcedModeProblem(def, pass("tp_btf", "tp_btf")); !strings.Contains(p, "no program was reported loaded in mode fentry (modes seen: tp_btf)") {
		t.Errorf("fentry not used: %q", p)
	}
	if p := forcedModeProblem(def, JobResult{Status: StatusSkip}); p != "" {
		t.Errorf("skipped job: %q", p)
	}
	if p := forcedModeProblem(JobDef{Name: "tcp/auto"}, pass()); p != "" {
		t.Errorf("no forced mode: %q", p)
	}
}

package vmtest

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/otelbee/otelbee/collectors/hook"
)

// AttachModeEnv is the variable through which a job forces the collectors' attach mode
// (strictly, in the privileged tests): a job that sets it and passes must have loaded at least
// one program in that mode, or it tested something other than it claims.
const AttachModeEnv = "OTELBEE_ATTACH_MODE"

// Chain is a collector's declared attach plan (its package's Hooks()). Every link of it must be
// loaded on at least one kernel of the matrix when the jobs file runs the collector's package.
type Chain struct {
	Collector string // as in OTELBEE-PROGSTAT collector=
	Package   string // the package whose jobs exercise it, as written in jobs files ("./collectors/tcp")
	Hooks     []hook.Hook
}

// LinkRef is one declared link: a hook's way to attach in one mode, with its programs.
type LinkRef struct {
	Collector string
	Hook      string
	Mode      hook.Mode
	Programs  []string
}

func (l LinkRef) String() string {
	return fmt.Sprintf("%s %s %s (%s)", l.Collector, l.Hook, l.Mode, strings.Join(l.Programs, ", "))
}

// UnexercisedLinks returns the links of chains that no kernel loaded: a link counts as
// exercised when, on one kernel, every one of its programs was reported (OTELBEE-PROGSTAT) in
// the link's mode.
func UnexercisedLinks(chains []Chain, records []ProgStat) []LinkRef {
	type key struct{ kernel, collector, program, mode string }
	loaded := map[key]bool{}
	kernels := map[string]bool{}
	for _, r := range records {
		loaded[key{r.Kernel, r.Collector, r.Program, r.Mode}] = true
		kernels[r.Kernel] = true
	}
	var missing []LinkRef
	for _, c := range chains {
		for _, h := range c.Hooks {
			for _, lk := range h.Links {
				ref := LinkRef{Collector: c.Collector, Hook: h.Name, Mode: lk.Mode}
				for _, p := range lk.Programs {
					ref.Programs = append(ref.Programs, p.Name)
				}
				exercised := false
				for k := range kernels {
					all := true
					for _, p := range ref.Programs {
						all = all && loaded[key{k, c.Collector, p, string(lk.Mode)}]
					}
					exercised = exercised || all
				}
				if !exercised {
					missing = append(missing, ref)
				}
			}
		}
	}
	return missing
}

// forcedModeProblem says why a passed job that forces an attach mode does not count as a pass:
// it loaded no program in that mode ("" when it did, or forces none).
func forcedModeProblem(def JobDef, res JobResult) string {
	mode := def.Env[AttachModeEnv]
	if mode == "" || mode == "auto" || res.Status != StatusPass {
		return ""
	}
	for _, ps := range res.ProgStats {
		if ps.Mode == mode {
			return ""
		}
	}
	var seen []string
	for _, ps := range res.ProgStats {
		seen = append(seen, ps.Mode)
	}
	sort.Strings(seen)
	return fmt.Sprintf("%s=%s but no program was reported loaded in mode %s (modes seen: %s): the test does not honour the forced mode, or prints no OTELBEE-PROGSTAT",
		AttachModeEnv, mode, mode, orDash(strings.Join(slices.Compact(seen), ",")))
}

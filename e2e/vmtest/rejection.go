package vmtest

import (
	"regexp"
	"strings"
)

// Rejection is a BPF program the verifier rejected, as the hook loader words it in the error it
// returns and the collectors log: "loading <program>: verifier rejected the program: <the last
// lines of the verifier log, joined by " | ">: <the loader's error>".
type Rejection struct {
	Program string
	// Excerpt is the verifier's reason: the last lines of its log that say what is wrong
	// (not the "processed N insns" statistics).
	Excerpt string
}

var (
	rejectionRE = regexp.MustCompile(`loading ([\w.-]+): verifier rejected the program: (.*)`)
	// A register-state line of the log ("R0=map_value(...) R10=fp0", "from 9 to 11: R0_w=..."):
	// context, not the reason.
	regStateRE = regexp.MustCompile(`^(from \d+ to \d+: )?R\d+(_[rw])?=`)
)

// excerptLines is how many lines of the verifier log a Rejection keeps.
const excerptLines = 3

// ParseRejections returns the distinct rejections in a job's output, in order.
func ParseRejections(output string) []Rejection {
	var out []Rejection
	seen := map[Rejection]bool{}
	for _, line := range strings.Split(output, "\n") {
		m := rejectionRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		prog, rest := m[1], m[2]
		// The loader's own error follows the excerpt: ": program <name>: load program: ...".
		if i := strings.Index(rest, ": program "+prog+": "); i >= 0 {
			rest = rest[:i]
		}
		var keep []string
		for _, part := range strings.Split(rest, " | ") {
			part = strings.TrimSpace(part)
			if part == "" || strings.HasPrefix(part, "processed ") || strings.HasPrefix(part, "verification time ") ||
				strings.HasPrefix(part, "stack depth ") || regStateRE.MatchString(part) {
				continue
			}
			keep = append(keep, part)
		}
		if len(keep) > excerptLines {
			keep = keep[len(keep)-excerptLines:]
		}
		r := Rejection{Program: prog, Excerpt: strings.Join(keep, " | ")}
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

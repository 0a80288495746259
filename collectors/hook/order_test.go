package hook

import (
	"fmt"
	"testing"
)

func TestOrder(t *testing.T) {
	// a chain with two links of one mode (with and without an optional
	// program), as the L7 send hook declares
	chain := []Link{
		{Mode: ModeFentry, Programs: []Program{{Name: "f1"}}},
		{Mode: ModeFentry, Programs: []Program{{Name: "f2"}}},
		{Mode: ModeKprobe, Programs: []Program{{Name: "k"}}},
		{Mode: ModeTracepoint, Programs: []Program{{Name: "t1"}}},
		{Mode: ModeTracepoint, Programs: []Program{{Name: "t2"}}},
	}
	names := func(ls []Link) string {
		var s []string
		for _, l := range ls {
			s = append(s, l.Programs[0].Name)
		}
		return fmt.Sprint(s)
	}
	for _, tc := range []struct {
		force  Mode
		strict bool
		want   string
	}{
		{"", false, "[f1 f2 k t1 t2]"},
		{"", true, "[f1 f2 k t1 t2]"},
		{ModeTracepoint, false, "[t1 t2 f1 f2 k]"},
		{ModeTracepoint, true, "[t1 t2]"},
		{ModeFentry, true, "[f1 f2]"},
		{ModeKprobe, false, "[k f1 f2 t1 t2]"},
		{ModeKprobe, true, "[k]"},
		{ModeTPBTF, true, "[f1 f2 k t1 t2]"}, // not declared: unaffected
	} {
		if got := names(order(chain, tc.force, tc.strict)); got != tc.want {
			t.Errorf("order(force=%q, strict=%v) = %s, want %s", tc.force, tc.strict, got, tc.want)
		}
	}
}

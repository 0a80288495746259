package vmtest

import (
	"reflect"
	"testing"
)

func TestParseRejections(t *testing.T) {
	out := "=== RUN   TestX\n" +
		// The hook loader's error, as a Go test logs it (6.1 wording).
		"    hook_privileged_test.go:90: rejected as expected: loading hook_broken: verifier rejected the program: " +
		"8: (85) call bpf_map_lookup_elem#1    ; R0=map_value(map=counter,ks=4,vs=8) | 10: (79) r1 = *(u64 *)(r0 +8) | " +
		"invalid access to map value, value_size=8 off=8 size=8 | R0 min value is outside of the allowed memory range | " +
		"processed 10 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0: " +
		"program hook_broken: load program: permission denied: invalid access to map value (12 line(s) omitted)\n" +
		// The same again (a second test): reported once.
		"    x_test.go:1: loading hook_broken: verifier rejected the program: 10: (79) r1 = *(u64 *)(r0 +8) | invalid access to map value, value_size=8 off=8 size=8 | R0 min value is outside of the allowed memory range: program hook_broken: load program: x\n" +
		// As a collector's slog line (quoted), with a 5.10 register-state line before the reason.
		`time=x level=INFO msg="attach mode unavailable" reason="loading tcp_recv_tp: verifier rejected the program: ; instruction poisoned by CO-RE | R0=map_value(id=0,off=0,ks=4,vs=8,imm=0) R10=fp0 | invalid func unknown#195896080: program tcp_recv_tp: load program: bad CO-RE relocation"` + "\n" +
		"loading x: no such program\n"
	got := ParseRejections(out)
	want := []Rejection{
		{Program: "hook_broken", Excerpt: "10: (79) r1 = *(u64 *)(r0 +8) | invalid access to map value, value_size=8 off=8 size=8 | R0 min value is outside of the allowed memory range"},
		{Program: "tcp_recv_tp", Excerpt: "; instruction poisoned by CO-RE | invalid func unknown#195896080"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
}

package vmtest

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseProgStats(t *testing.T) {
	out := strings.Join([]string{
		"OTELBEE-PROGSTAT collector=tcp program=tcp_sendmsg mode=fentry insns=812 load_us=1234",
		"    tcp_test.go:40: OTELBEE-PROGSTAT collector=tcp program=tcp_close mode=kprobe insns=n/a load_us=77 run_cnt=5",
		"OTELBEE-PROGSTAT collector=tcp mode=kprobe insns=1", // no program: dropped
		"OTELBEE-PROGSTATS collector=x program=y mode=z",     // other marker: ignored
		"unrelated",
	}, "\n")
	got := ParseProgStats(out)
	want := []ProgStat{
		{Collector: "tcp", Program: "tcp_sendmsg", Mode: "fentry", Insns: 812, LoadUS: 1234},
		{Collector: "tcp", Program: "tcp_close", Mode: "kprobe", Insns: -1, LoadUS: 77, Extra: map[string]string{"run_cnt": "5"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestRenderKernelTable(t *testing.T) {
	recs := []ProgStat{
		{Kernel: "5.10", Release: "5.10.0-32-cloud-amd64", Collector: "tcp", Program: "sendmsg", Mode: "kprobe", Insns: -1, LoadUS: 6100},
		{Kernel: "6.1", Release: "6.1.0-56-cloud-amd64", Collector: "tcp", Program: "sendmsg", Mode: "fentry", Insns: 812, LoadUS: 2500},
		{Kernel: "6.1", Release: "6.1.0-56-cloud-amd64", Collector: "tcp", Program: "sendmsg", Mode: "fentry", Insns: 812, LoadUS: 900}, // second load: faster wins
		{Kernel: "6.1", Release: "6.1.0-56-cloud-amd64", Collector: "dns", Program: "udp|recv", Mode: "tracepoint", Insns: 40, LoadUS: 1_500_000},
		{Kernel: "host", Release: "6.18.44", Collector: "tcp", Program: "sendmsg", Mode: "tracepoint", Insns: 15, LoadUS: -1},
	}
	got := RenderKernelTable(recs)
	want := `| Collector | Program | Mode | 5.10 | 6.1 | host |
|---|---|---|---|---|---|
| dns | udp\|recv | tracepoint | not loaded | 40 insns, 1.50 s | not loaded |
| tcp | sendmsg | fentry | not loaded | 812 insns, 900 µs | not loaded |
| tcp | sendmsg | kprobe | n/a insns, 6.1 ms | not loaded | not loaded |
| tcp | sendmsg | tracepoint | not loaded | not loaded | 15 insns, n/a |

Cells: instructions processed by the verifier, load time (n/a: not reported). Kernels: 5.10 = ` + "`5.10.0-32-cloud-amd64`" + `, 6.1 = ` + "`6.1.0-56-cloud-amd64`" + `, host = ` + "`6.18.44`" + `.
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := RenderKernelTable(nil); !strings.Contains(got, "No BPF programs") {
		t.Errorf("empty table: %q", got)
	}
}

package agent

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMissingCaps(t *testing.T) {
	bit := func(bs ...int) uint64 {
		var m uint64
		for _, b := range bs {
			m |= 1 << uint(b)
		}
		return m
	}
	tests := []struct {
		eff  uint64
		want string
	}{
		{0, "CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN"},
		{bit(unix.CAP_BPF, unix.CAP_PERFMON), "CAP_NET_ADMIN"},
		{bit(unix.CAP_SYS_ADMIN), "CAP_NET_ADMIN"}, // CAP_SYS_ADMIN covers BPF and PERFMON
		{bit(unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_NET_ADMIN), ""},
		{bit(unix.CAP_BPF, unix.CAP_NET_ADMIN), "CAP_PERFMON"},
	}
	for _, tt := range tests {
		if got := strings.Join(missingCaps(tt.eff), ","); got != tt.want {
			t.Errorf("missingCaps(%#x) = %q, want %q", tt.eff, got, tt.want)
		}
	}
}

func TestTracefsState(t *testing.T) {
	const line = "36 24 0:12 / %s rw,nosuid,nodev,noexec,relatime shared:15 - %s tracefs rw\n"
	tests := []struct {
		mountinfo, want string
	}{
		{"", "not mounted"},
		{strings.Replace(strings.Replace(line, "%s", "/sys/fs/cgroup", 1), "%s", "cgroup2", 1), "not mounted"},
		{strings.Replace(strings.Replace(line, "%s", t.TempDir(), 1), "%s", "tracefs", 1), "but unusable"}, // no events/
	}
	for _, tt := range tests {
		if got := tracefsState(tt.mountinfo); !strings.Contains(got, tt.want) {
			t.Errorf("tracefsState(%q) = %q, want it to contain %q", tt.mountinfo, got, tt.want)
		}
	}
}

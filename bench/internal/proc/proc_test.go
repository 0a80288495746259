package proc

import (
	"os"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       float64
		err        bool
	}{
		{"plain", "1234 (otelbee) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 1 1", 3, false},
		{"name with spaces and parentheses", "1 (a b) (c)) R 1 1 1 0 -1 0 0 0 0 0 7 3 0 0", 0.1, false},
		{"truncated", "1 (x) S 1 2", 0, true},
		{"no name", "garbage", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU(tc.stat)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("parseStatCPU = %v, %v; want %v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	s := "Name:\totelbee\nVmHWM:\t  120000 kB\nVmRSS:\t   90000 kB\n"
	if got := parseStatusKB(s, "VmRSS"); got != 90000 {
		t.Fatalf("VmRSS = %v, want 90000", got)
	}
	if got := parseStatusKB(s, "VmHWM"); got != 120000 {
		t.Fatalf("VmHWM = %v, want 120000", got)
	}
	if got := parseStatusKB(s, "RssAnon"); got != 0 {
		t.Fatalf("absent field = %v, want 0", got)
	}
}

func TestOwnProcess(t *testing.T) {
	if _, err := CPUSeconds(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if StatusKB(os.Getpid(), "VmRSS") <= 0 {
		t.Fatal("no VmRSS for this process")
	}
}

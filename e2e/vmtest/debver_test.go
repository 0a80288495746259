package vmtest

import "testing"

func TestCompareDebianVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"6.1.192-2", "6.1.176-1", 1},
		{"6.1.176-1", "6.1.192-2", -1},
		{"6.12.117-1~deb12u1", "6.12.100-1~deb12u1", 1},
		{"6.12.9-1~deb12u1", "6.12.100-1~deb12u1", -1}, // numeric, not lexical
		{"6.12.117-1~deb12u1", "6.12.117-1", -1},       // ~ sorts before the end
		{"1.0~rc1", "1.0", -1},
		{"1.0~rc1", "1.0~rc2", -1},
		{"1.0~~", "1.0~", -1},
		{"1:0.1", "2.0", 1}, // epoch wins
		{"0:2.0", "2.0", 0},
		{"2.0", "2.0", 0},
		{"2.0-1", "2.0-01", 0}, // leading zeros
		{"2.0a", "2.0", 1},
		{"2.0a", "2.0+", -1}, // letters before other characters
		{"5.10.223-1", "5.10.218-1", 1},
		{"1.2-3+deb12u1", "1.2-3", 1},
		{"", "0", 0},
	}
	for _, tt := range tests {
		got := CompareDebianVersions(tt.a, tt.b)
		if sign(got) != tt.want {
			t.Errorf("CompareDebianVersions(%q, %q) = %d, want sign %d", tt.a, tt.b, got, tt.want)
		}
		if back := CompareDebianVersions(tt.b, tt.a); sign(back) != -tt.want {
			t.Errorf("CompareDebianVersions(%q, %q) = %d, want sign %d (antisymmetry)", tt.b, tt.a, back, -tt.want)
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestMemoryLimit: the floor while the live heap is small, twice the live
// heap plus the runtime's extras past it, so a large heap keeps the
// default pacing instead of collecting back to back.
func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int64
	}{
		{0, memoryFloor},
		{10 << 20, memoryFloor},
		{16 << 20, memoryFloor},
		{20 << 20, 56 << 20},
		{200 << 20, 416 << 20},
	} {
		if got := memoryLimit(tc.live); got != tc.want {
			t.Errorf("memoryLimit(%d MiB) = %d MiB, want %d MiB", tc.live>>20, got>>20, tc.want>>20)
		}
	}
}

// TestGCPercent: GOGC from the environment wins over the default.
func TestGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "200")
	setGCPercent()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: GC percent %d, want the runtime's own (100 here)", got)
	}
	os.Unsetenv("GOGC")
	setGCPercent()
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, defaultGCPercent)
	}
}

package tls

import (
	"runtime"
	"testing"
)

// BenchmarkInspect measures one uncached discovery per file kind; the
// reported peak-heap-MB is the live heap right after it, a bound on what
// discovery holds of a file at once.
func BenchmarkInspect(b *testing.B) {
	goBin := buildGo(&testing.T{}, "goserver", goToolchains[0])
	for name, path := range map[string]string{
		"libssl3":     libssl3,
		"node":        "/usr/bin/node",
		"go-full":     goBin.full,
		"go-stripped": goBin.stripped,
		"true":        "/usr/bin/true",
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var peak uint64
			for b.Loop() {
				tg := Inspect(path)
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
				runtime.KeepAlive(tg)
			}
			b.ReportMetric(float64(peak)/(1<<20), "heap-MB")
		})
	}
}

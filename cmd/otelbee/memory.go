package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The soft limit on the Go runtime's memory, unless GOMEMLIMIT sets one.
// The agent's live heap is ~10-20 MB on a small host, but discovery (the
// TLS collector reading binaries' symbol tables) makes tens of MB of
// garbage at once, which the default pacing (GOGC=100) lets the heap
// double past before collecting: a limit of memoryFloor collects it
// instead. Where the live heap is large (many series), the limit follows
// it at twice the live heap plus the runtime's other memory, so the
// collector never runs back to back (docs/benchmarks.md "Second pass").
const (
	memoryFloor   = 48 << 20
	memoryRetune  = 10 * time.Second
	runtimeExtras = 16 << 20 // stacks, runtime metadata, fragmentation
)

// memoryLimit is the limit for a live heap of live bytes.
func memoryLimit(live uint64) int64 {
	return max(memoryFloor, int64(2*live)+runtimeExtras)
}

// setMemoryLimit applies memoryLimit from now on, unless GOMEMLIMIT is set,
// and logs the Go runtime's memory at debug level every memoryRetune.
func setMemoryLimit(logger *slog.Logger) {
	_, userLimit := os.LookupEnv("GOMEMLIMIT")
	if !userLimit {
		debug.SetMemoryLimit(memoryFloor)
	}
	go func() {
		samples := make([]metrics.Sample, len(memoryMetrics))
		for i, m := range memoryMetrics {
			samples[i].Name = m
		}
		for range time.Tick(memoryRetune) {
			metrics.Read(samples)
			v := func(i int) uint64 {
				if samples[i].Value.Kind() == metrics.KindUint64 {
					return samples[i].Value.Uint64()
				}
				return 0
			}
			if !userLimit && samples[0].Value.Kind() == metrics.KindUint64 {
				debug.SetMemoryLimit(memoryLimit(v(0)))
			}
			logger.Debug("memory", "component", "agent", "heap_live", v(0), "heap_goal", v(1),
				"heap_objects", v(2), "heap_free", v(3), "heap_released", v(4), "stacks", v(5),
				"runtime_other", v(6), "total_mapped", v(7), "limit", debug.SetMemoryLimit(-1))
		}
	}()
}

// memoryMetrics are what the debug log reports; the live heap first, the
// limit follows it.
var memoryMetrics = []string{
	"/gc/heap/live:bytes",
	"/gc/heap/goal:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/other:bytes",
	"/memory/classes/total:bytes",
}

// defaultGCPercent is the Go runtime's GOGC unless the environment sets
// one: the heap may grow to 1.5× the live heap before a collection rather
// than 2×. At idle the live heap is ~13 MB, so this is ~6 MB of RSS (the
// agent's anonymous memory 27-33 MiB under `make bench`'s load instead of
// 31-42) for about twice as many collections, each marking the same live
// heap: +0.3-0.55 µs of agent CPU per request with every request a span
// (docs/benchmarks.md, Memory).
const defaultGCPercent = 50

func setGCPercent() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(defaultGCPercent)
	}
}

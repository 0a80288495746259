package otlp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// slowExporter blocks until released (or its context ends, then it fails),
// so the queue fills up.
type slowExporter struct {
	mu       sync.Mutex
	release  chan struct{}
	exported int
	failed   int
}

func (e *slowExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	select {
	case <-e.release:
	case <-ctx.Done():
		e.mu.Lock()
		e.failed += len(spans)
		e.mu.Unlock()
		return ctx.Err()
	}
	e.mu.Lock()
	e.exported += len(spans)
	e.mu.Unlock()
	return nil
}
func (e *slowExporter) Shutdown(context.Context) error { return nil }

func endN(tp *sdktrace.TracerProvider, n int) {
	for range n {
		_, s := tp.Tracer("t").Start(context.Background(), "span")
		s.End()
	}
}

// TestSpanQueueCountsDrops: every ended span is either exported or counted
// as dropped because the queue was full.
func TestSpanQueueCountsDrops(t *testing.T) {
	exp := &slowExporter{release: make(chan struct{})}
	q := NewSpanQueue(exp, QueueSettings{MaxQueueSize: 10, MaxExportBatchSize: 5, ScheduleDelay: 10 * time.Millisecond})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(q))
	const n = 100
	endN(tp, n)
	close(exp.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if q.DroppedBy(ReasonQueueFull) == 0 {
		t.Fatalf("a 10-span queue behind a blocked exporter dropped nothing of %d", n)
	}
	if got := uint64(exp.exported) + q.Dropped(); got != n || q.Queued() != uint64(exp.exported) {
		t.Fatalf("exported %d + dropped %d != %d ended (queued %d)", exp.exported, q.Dropped(), n, q.Queued())
	}
}

// TestSpanQueueShutdownDeadline: an exporter that never answers cannot
// hold Shutdown past its deadline, and every span is accounted for: the
// batch in flight failed (the exporter's count), the rest queued counted
// dropped for shutdown, spans ended afterwards too.
func TestSpanQueueShutdownDeadline(t *testing.T) {
	exp := &slowExporter{release: make(chan struct{})} // never released
	q := NewSpanQueue(exp, QueueSettings{MaxQueueSize: 100, MaxExportBatchSize: 10, ScheduleDelay: time.Hour, ExportTimeout: time.Hour})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(q))
	endN(tp, 35) // three full batches go to the exporter one by one; it blocks on the first
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = q.Shutdown(ctx)
	if took := time.Since(start); took > 600*time.Millisecond {
		t.Fatalf("Shutdown took %v with a 300ms deadline", took)
	}
	endN(tp, 5) // after shutdown
	exp.mu.Lock()
	failed, exported := exp.failed, exp.exported
	exp.mu.Unlock()
	if exported != 0 || failed != 10 {
		t.Errorf("exporter exported %d, failed %d; want 0 and the 10 of the batch in flight", exported, failed)
	}
	if q.Queued() != 35 || q.DroppedBy(ReasonShutdown) != 25+5 || q.DroppedBy(ReasonQueueFull) != 0 {
		t.Errorf("queued %d, dropped shutdown %d, queue full %d; want 35, 30, 0",
			q.Queued(), q.DroppedBy(ReasonShutdown), q.DroppedBy(ReasonQueueFull))
	}
}

// TestFailureLogOncePerInterval: a failure that lasts logs one line per
// interval with what was lost meanwhile, and one line on recovery.
func TestFailureLogOncePerInterval(t *testing.T) {
	var buf bytes.Buffer
	f := newFailureLog(slog.New(slog.NewTextHandler(&buf, nil)), "spans")
	f.interval = 50 * time.Millisecond
	boom := errors.New(strings.Repeat("x", 10_000))
	for range 100 {
		f.failure(boom, 1, 7)
	}
	time.Sleep(60 * time.Millisecond)
	f.failure(boom, 1, 7)
	f.success()
	f.success()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3 (first failure, still failing, recovered):\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "lost=7 ") || !strings.Contains(lines[1], "failed_requests=100 lost=700 ") ||
		!strings.Contains(lines[2], "recovered") {
		t.Errorf("log lines do not carry the losses:\n%s", buf.String())
	}
	if len(lines[0]) > 1000 {
		t.Errorf("a 10 kB error made a %d-byte log line", len(lines[0]))
	}
}

type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkSpanQueueOnEnd is the cost the queue adds to every ended span.
func BenchmarkSpanQueueOnEnd(b *testing.B) {
	q := NewSpanQueue(discardExporter{}, QueueSettings{MaxQueueSize: 1 << 16, MaxExportBatchSize: 512, ScheduleDelay: time.Millisecond})
	tp := sdktrace.NewTracerProvider()
	_, s := tp.Tracer("t").Start(context.Background(), "span")
	s.End()
	ro := s.(sdktrace.ReadOnlySpan)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		q.OnEnd(ro)
	}
	b.StopTimer()
	_ = q.Shutdown(context.Background())
}

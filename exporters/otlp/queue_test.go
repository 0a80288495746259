package otlp

import (
	"context"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// slowExporter blocks until released, so the queue fills up.
type slowExporter struct {
	mu       sync.Mutex
	release  chan struct{}
	exported int
}

func (e *slowExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	<-e.release
	e.mu.Lock()
	e.exported += len(spans)
	e.mu.Unlock()
	return nil
}
func (e *slowExporter) Shutdown(context.Context) error { return nil }

// TestSpanQueueCountsDrops: every ended span is either exported or counted
// as dropped.
func TestSpanQueueCountsDrops(t *testing.T) {
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
	t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	exp := &slowExporter{release: make(chan struct{})}
	q := NewSpanQueue(exp)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(q))
	const n = 100
	for range n {
		_, s := tp.Tracer("t").Start(context.Background(), "span")
		s.End()
	}
	close(exp.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if q.Dropped() == 0 {
		t.Fatalf("a 10-span queue behind a blocked exporter dropped nothing of %d", n)
	}
	if got := uint64(exp.exported) + q.Dropped(); got != n || q.Queued() != uint64(exp.exported) {
		t.Fatalf("exported %d + dropped %d != %d ended (queued %d)", exp.exported, q.Dropped(), n, q.Queued())
	}
}

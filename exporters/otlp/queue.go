package otlp

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// SpanQueue is a batching span processor that counts what it drops. The
// SDK's batch processor drops spans silently when its queue is full; an
// agent that must lose nothing silently cannot use it.
type SpanQueue struct {
	exporter  sdktrace.SpanExporter
	queue     chan sdktrace.ReadOnlySpan
	batchSize int
	delay     time.Duration
	timeout   time.Duration

	queued  atomic.Uint64
	dropped atomic.Uint64

	flush    chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// NewSpanQueue starts a queue in front of exporter. Sizes and delays come
// from the standard OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
// OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_EXPORT_TIMEOUT (milliseconds), with
// the SDK's defaults.
func NewSpanQueue(exporter sdktrace.SpanExporter) *SpanQueue {
	q := &SpanQueue{
		exporter:  exporter,
		queue:     make(chan sdktrace.ReadOnlySpan, envInt("OTEL_BSP_MAX_QUEUE_SIZE", 2048)),
		batchSize: envInt("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
		delay:     time.Duration(envInt("OTEL_BSP_SCHEDULE_DELAY", 5000)) * time.Millisecond,
		timeout:   time.Duration(envInt("OTEL_BSP_EXPORT_TIMEOUT", 30000)) * time.Millisecond,
		flush:     make(chan chan struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	go q.run()
	return q
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// OnStart implements sdktrace.SpanProcessor.
func (q *SpanQueue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or counts it dropped when the queue is full.
func (q *SpanQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case q.queue <- s:
		q.queued.Add(1)
	default:
		q.dropped.Add(1)
	}
}

// Queued and Dropped count the spans that entered the queue and those
// refused because it was full.
func (q *SpanQueue) Queued() uint64  { return q.queued.Load() }
func (q *SpanQueue) Dropped() uint64 { return q.dropped.Load() }

func (q *SpanQueue) run() {
	defer close(q.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, q.batchSize)
	timer := time.NewTimer(q.delay)
	defer timer.Stop()
	export := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), q.timeout)
		// Failures are counted by the exporter (TraceExporter.Failures).
		_ = q.exporter.ExportSpans(ctx, batch)
		cancel()
		batch = batch[:0]
	}
	drain := func() {
		for {
			select {
			case s := <-q.queue:
				batch = append(batch, s)
				if len(batch) == q.batchSize {
					export()
				}
			default:
				export()
				return
			}
		}
	}
	for {
		select {
		case s := <-q.queue:
			batch = append(batch, s)
			if len(batch) == q.batchSize {
				export()
			}
		case <-timer.C:
			export()
			timer.Reset(q.delay)
		case ack := <-q.flush:
			drain()
			close(ack)
		case <-q.stop:
			drain()
			return
		}
	}
}

// ForceFlush exports everything queued so far.
func (q *SpanQueue) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case q.flush <- ack:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued and shuts the exporter down.
func (q *SpanQueue) Shutdown(ctx context.Context) error {
	q.stopOnce.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return errors.Join(ctx.Err(), q.exporter.Shutdown(ctx))
	}
	return q.exporter.Shutdown(ctx)
}

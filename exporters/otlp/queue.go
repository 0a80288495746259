package otlp

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// SpanQueue is a batching span processor that counts what it drops. The
// SDK's batch processor drops spans silently when its queue is full; an
// agent that must lose nothing silently cannot use it.
//
// Every sampled span that ends is, exactly once: queued (then exported or
// counted dropped by the exporter), dropped because the queue was full, or
// dropped at shutdown (ended after it, or still queued when the shutdown
// deadline ran out).
type SpanQueue struct {
	exporter  sdktrace.SpanExporter
	queue     chan sdktrace.ReadOnlySpan
	batchSize int
	delay     time.Duration
	timeout   time.Duration

	queued  atomic.Uint64
	dropped [numReasons]atomic.Uint64

	// base is the parent of every export's context; the shutdown deadline
	// cancels it (cause errShutdown) so no export outlives Shutdown.
	base       context.Context
	cancelBase context.CancelCauseFunc

	stopped  atomic.Bool
	flush    chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// QueueSettings are the span queue's sizes and delays: OTEL_BSP_* as read
// and bounded by the agent's configuration (agent.BSPSettings).
type QueueSettings struct {
	MaxQueueSize       int
	MaxExportBatchSize int
	ScheduleDelay      time.Duration
	ExportTimeout      time.Duration
}

// DefaultQueueSettings are the OpenTelemetry specification's defaults.
func DefaultQueueSettings() QueueSettings {
	return QueueSettings{MaxQueueSize: 2048, MaxExportBatchSize: 512, ScheduleDelay: 5 * time.Second, ExportTimeout: 30 * time.Second}
}

// NewSpanQueue starts a queue in front of exporter. Zero fields of s take
// the defaults; a batch is never larger than the queue.
func NewSpanQueue(exporter sdktrace.SpanExporter, s QueueSettings) *SpanQueue {
	d := DefaultQueueSettings()
	if s.MaxQueueSize <= 0 {
		s.MaxQueueSize = d.MaxQueueSize
	}
	if s.MaxExportBatchSize <= 0 {
		s.MaxExportBatchSize = d.MaxExportBatchSize
	}
	s.MaxExportBatchSize = min(s.MaxExportBatchSize, s.MaxQueueSize)
	if s.ScheduleDelay <= 0 {
		s.ScheduleDelay = d.ScheduleDelay
	}
	if s.ExportTimeout <= 0 {
		s.ExportTimeout = d.ExportTimeout
	}
	base, cancel := context.WithCancelCause(context.Background())
	q := &SpanQueue{
		exporter:   exporter,
		queue:      make(chan sdktrace.ReadOnlySpan, s.MaxQueueSize),
		batchSize:  s.MaxExportBatchSize,
		delay:      s.ScheduleDelay,
		timeout:    s.ExportTimeout,
		base:       base,
		cancelBase: cancel,
		flush:      make(chan chan struct{}),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	go q.run()
	return q
}

// OnStart implements sdktrace.SpanProcessor.
func (q *SpanQueue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or counts it dropped when the queue is full
// or shut down.
func (q *SpanQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	if q.stopped.Load() {
		q.dropped[ReasonShutdown].Add(1)
		return
	}
	select {
	case q.queue <- s:
		q.queued.Add(1)
	default:
		q.dropped[ReasonQueueFull].Add(1)
	}
}

// Queued counts the spans that entered the queue; Dropped those refused
// (queue full, shut down) or left in it when the shutdown deadline ran out.
func (q *SpanQueue) Queued() uint64 { return q.queued.Load() }
func (q *SpanQueue) Dropped() uint64 {
	var n uint64
	for i := range q.dropped {
		n += q.dropped[i].Load()
	}
	return n
}

// DroppedBy returns the spans the queue lost for reason r (ReasonQueueFull
// or ReasonShutdown; export failures are the exporter's).
func (q *SpanQueue) DroppedBy(r Reason) uint64 { return q.dropped[r].Load() }

func (q *SpanQueue) run() {
	defer close(q.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, q.batchSize)
	timer := time.NewTimer(q.delay)
	defer timer.Stop()
	export := func() {
		if len(batch) == 0 {
			return
		}
		if q.base.Err() != nil {
			q.dropped[ReasonShutdown].Add(uint64(len(batch)))
		} else {
			ctx, cancel := context.WithTimeout(q.base, q.timeout)
			// Failures are counted and logged by the exporter
			// (TraceExporter), which knows why.
			_ = q.exporter.ExportSpans(ctx, batch)
			cancel()
		}
		clear(batch) // let the spans be collected
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
			// A span that raced with stopped being set is counted
			// rather than left in the channel.
			for {
				select {
				case <-q.queue:
					q.dropped[ReasonShutdown].Add(1)
				default:
					return
				}
			}
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

// Shutdown exports what is queued and shuts the exporter down, within ctx:
// when its deadline comes, the export in flight is cancelled and what is
// still queued is counted dropped (ReasonShutdown).
func (q *SpanQueue) Shutdown(ctx context.Context) error {
	q.stopOnce.Do(func() {
		q.stopped.Store(true)
		close(q.stop)
	})
	stopCancel := context.AfterFunc(ctx, func() { q.cancelBase(errShutdown) })
	defer stopCancel()
	select {
	case <-q.done:
	case <-ctx.Done():
		// The export in flight sees base cancelled and returns; the
		// rest is counted. Wait for that accounting, briefly.
		select {
		case <-q.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
	return q.exporter.Shutdown(ctx)
}

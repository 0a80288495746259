package otlp

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Reason says why a span or data point did not reach the backend. Every
// loss in this package is counted under exactly one reason.
type Reason int

const (
	// ReasonExportFailed: the export request failed after the OTLP
	// exporter's retries (receiver down, refused, timed out, rejected).
	ReasonExportFailed Reason = iota
	// ReasonQueueFull: the span queue was full (OTEL_BSP_MAX_QUEUE_SIZE).
	ReasonQueueFull
	// ReasonShutdown: the agent was shutting down and the deadline
	// (--shutdown-timeout) left no time to send it.
	ReasonShutdown
	// ReasonRejected: the receiver accepted the request but rejected
	// these items (an OTLP partial success: rejected_data_points,
	// rejected_spans), which are not retried.
	ReasonRejected
	numReasons
)

// Reasons lists every Reason, for self-telemetry.
var Reasons = []Reason{ReasonExportFailed, ReasonQueueFull, ReasonShutdown, ReasonRejected}

func (r Reason) String() string {
	switch r {
	case ReasonExportFailed:
		return "export_failed"
	case ReasonQueueFull:
		return "queue_full"
	case ReasonShutdown:
		return "shutdown"
	case ReasonRejected:
		return "rejected"
	}
	return "unknown"
}

// drops counts losses by reason.
type drops [numReasons]atomic.Int64

func (d *drops) add(r Reason, n int64) { d[r].Add(n) }

func (d *drops) total() int64 {
	var t int64
	for i := range d {
		t += d[i].Load()
	}
	return t
}

// ErrReported marks an export error this package has already counted and
// logged (see failureLog): whoever receives it need not log it again.
var ErrReported = errors.New("otlp export failed (counted and logged by the exporter)")

// reasonFor tells a failure caused by the shutdown deadline from a
// backend failure: the span queue and the final flush cancel ctx when
// --shutdown-timeout runs out.
func reasonFor(ctx context.Context) Reason {
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), errShutdown) {
		return ReasonShutdown
	}
	return ReasonExportFailed
}

// ErrShutdownDeadline is the cancellation cause to give an export's
// context (context.WithDeadlineCause) when the agent's shutdown deadline
// cuts it short: what it loses is then counted as ReasonShutdown.
var ErrShutdownDeadline = errors.New("shutdown deadline reached")

var errShutdown = ErrShutdownDeadline

// failureLogInterval is how often a sustained failure is logged.
const failureLogInterval = time.Minute

// maxLoggedError bounds the error text in a log line: a receiver's error
// message is not ours to size.
const maxLoggedError = 512

// failureLog logs an exporter's failures at most once per interval, with
// what was lost since the last line, and once when export recovers. One
// line per interval for the whole exporter, not one per request.
type failureLog struct {
	logger   *slog.Logger
	what     string // "spans" or "metric points"
	interval time.Duration

	mu          sync.Mutex
	failing     bool
	lastLog     time.Time
	lastPartial time.Time // the last partial success logged
	requests    int64     // failed requests since the last line
	lost        int64     // items lost since the last line
	lastError   string
}

func newFailureLog(logger *slog.Logger, what string) *failureLog {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &failureLog{logger: logger, what: what, interval: failureLogInterval}
}

func (f *failureLog) failure(err error, requests, lost int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests += requests
	f.lost += lost
	f.lastError = truncate(err.Error(), maxLoggedError)
	now := time.Now()
	if f.failing && now.Sub(f.lastLog) < f.interval {
		return
	}
	msg := "otlp export failing; lost " + f.what + " are counted in otelbee.exporter.*.dropped"
	if f.failing {
		msg = "otlp export still failing"
	}
	f.logger.Warn(msg, "failed_requests", f.requests, "lost", f.lost, "next_log_in", f.interval, "error", f.lastError)
	f.failing, f.lastLog, f.requests, f.lost = true, now, 0, 0
}

// partial logs a partial success (items the receiver rejected, or its
// warning), at most once per interval.
func (f *failureLog) partial(rejected int64, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if !f.lastPartial.IsZero() && now.Sub(f.lastPartial) < f.interval {
		return
	}
	f.lastPartial = now
	f.logger.Warn("otlp receiver rejected part of a request; rejected "+f.what+" are counted in otelbee.exporter.*.dropped{reason=rejected}",
		"rejected", rejected, "message", truncate(message, maxLoggedError), "next_log_in", f.interval)
}

func (f *failureLog) success() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failing {
		return
	}
	f.logger.Info("otlp export recovered", "failed_requests_since_last_log", f.requests, "lost_since_last_log", f.lost)
	f.failing, f.requests, f.lost = false, 0, 0
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…(truncated)"
}

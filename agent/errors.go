package agent

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/otelbee/otelbee/exporters/otlp"
)

// errorHandler receives the OpenTelemetry SDK's asynchronous errors (a
// failed periodic export, a failing callback). Export failures were
// counted and logged by the exporters already (otlp.ErrReported): they go
// to debug. Others are logged at warn, at most once per interval, with the
// number suppressed meanwhile: the SDK repeats them every export.
type errorHandler struct {
	log      *slog.Logger
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func newErrorHandler(l *slog.Logger) *errorHandler {
	return &errorHandler{log: l, interval: time.Minute}
}

func (h *errorHandler) Handle(err error) {
	if errors.Is(err, otlp.ErrReported) {
		h.log.Debug("opentelemetry sdk", "error", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := time.Now(); now.Sub(h.last) >= h.interval {
		h.log.Warn("opentelemetry sdk error (repeats within a minute are counted, not logged)", "error", truncate(err.Error(), maxMessage), "suppressed", h.suppressed)
		h.last, h.suppressed = now, 0
		return
	}
	h.suppressed++
}

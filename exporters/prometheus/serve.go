package prometheus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"
)

// shutdownTimeout bounds how long a scrape in flight may delay shutdown.
const shutdownTimeout = 5 * time.Second

// Listen binds addr (e.g. "127.0.0.1:9464") for Serve. It is separate so
// the agent can claim the port during start-up, before attaching probes,
// and fail early with a clear message.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("prometheus endpoint: address %s is already in use (another otelbee or exporter?); choose another address: %w", addr, err)
		}
		return nil, fmt.Errorf("prometheus endpoint: listening on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve listens on addr and serves /metrics (and a link page at /) until
// ctx ends, then shuts down gracefully. It returns nil after a shutdown
// caused by ctx, and an error if the address cannot be bound (for example
// when it is already in use) or the server fails.
func (e *Exporter) Serve(ctx context.Context, addr string) error {
	ln, err := Listen(ctx, addr)
	if err != nil {
		return err
	}
	return e.ServeListener(ctx, ln)
}

// ServeListener is Serve on a listener from Listen. It closes ln.
func (e *Exporter) ServeListener(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", e.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprint(w, indexPage)
	})
	srv := &http.Server{
		Handler: mux,
		// Bounded everything: a slow or stuck client must not pin a
		// goroutine and a connection forever.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(e.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	e.logger.Info("prometheus endpoint listening", "address", ln.Addr().String(), "path", "/metrics")

	select {
	case err := <-errc:
		return fmt.Errorf("prometheus endpoint on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Scrapes still running after the deadline are cut off.
		_ = srv.Close()
		e.logger.Warn("prometheus endpoint: forced shutdown", "error", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("prometheus endpoint on %s: %w", ln.Addr(), err)
	}
	return nil
}

const indexPage = `<!doctype html>
<html><head><title>otelbee</title></head>
<body><h1>otelbee</h1><p><a href="/metrics">Metrics</a></p></body></html>
`

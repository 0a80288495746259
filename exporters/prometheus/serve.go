package prometheus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// shutdownTimeout bounds how long a scrape in flight may delay shutdown
// in ServeListener (the agent passes its own deadline to Server's Shutdown).
const shutdownTimeout = 5 * time.Second

// Limits of the /metrics server. Anyone on the host can connect to it, so
// no client may hold what others need: a slot to render a scrape is held
// only while collecting (text formats, which then stream the answer, each
// chunk with its own write deadline) or rendering into memory (protobuf),
// not while a slow reader drains the answer; connections are capped (at the cap the oldest one without a
// request in progress is closed), and every phase of a connection has a
// timeout.
const (
	// MaxConnections caps the open connections. Scrapers are few;
	// connections beyond the cap evict idle ones.
	MaxConnections = 64
	// renderSlots bounds the scrapes rendering at once (each walks every
	// series); slotWait is how long a scrape waits for one before 503.
	renderSlots = maxConcurrentScrapes
	slotWait    = 10 * time.Second

	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	// writeTimeout cuts off a reader too slow to take one answer in time.
	writeTimeout = 30 * time.Second
	// idleTimeout is longer than a scrape interval, so a scraper's
	// keep-alive connection survives between scrapes.
	idleTimeout = 90 * time.Second
)

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
	srv := e.Server()
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

// Server returns an http.Server for /metrics (and a link page at /) with
// the limits above. The caller serves it on a listener and shuts it down.
func (e *Exporter) Server() *http.Server {
	limit := newConnLimit(MaxConnections)
	mux := http.NewServeMux()
	inner := e.Handler()
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Tell the connection limit when this connection only writes
		// an answer out (see connLimit.draining).
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			r = r.WithContext(context.WithValue(r.Context(), drainKey{}, func() { limit.draining(c) }))
		}
		inner.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprint(w, indexPage)
	})
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnState:         limit.track,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(e.logger.Handler(), slog.LevelDebug),
	}
}

// bufferedHandler renders the inner handler's answer into memory while
// holding one of a few slots, then writes it out without the slot: a
// client that never reads blocks only its own connection (until the write
// timeout), not the scrapes of others.
type bufferedHandler struct {
	inner http.Handler
	slots chan struct{}
	wait  time.Duration
	pool  sync.Pool
}

func newBufferedHandler(inner http.Handler, slots int, wait time.Duration) *bufferedHandler {
	return &bufferedHandler{inner: inner, slots: make(chan struct{}, slots), wait: wait,
		pool: sync.Pool{New: func() any { return new(bytes.Buffer) }}}
}

// connKey is the request context key of the request's connection.
type connKey struct{}

func (h *bufferedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := time.NewTimer(h.wait)
	select {
	case h.slots <- struct{}{}:
		t.Stop()
	case <-t.C:
		http.Error(w, "too many scrapes in progress", http.StatusServiceUnavailable)
		return
	case <-r.Context().Done():
		t.Stop()
		return
	}
	buf := h.pool.Get().(*bytes.Buffer)
	buf.Reset()
	rec := &recorder{header: http.Header{}, body: buf, status: http.StatusOK}
	h.inner.ServeHTTP(rec, r)
	<-h.slots
	if hook, ok := r.Context().Value(drainKey{}).(func()); ok {
		hook()
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(buf.Bytes())
	if buf.Cap() <= 16<<20 { // keep the usual size, not a freak one
		h.pool.Put(buf)
	}
}

// recorder is the in-memory ResponseWriter the inner handler writes to.
type recorder struct {
	header http.Header
	body   *bytes.Buffer
	status int
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}

// connLimit keeps at most max connections open. At the cap, a new
// connection closes the oldest one that has no request in progress (new
// or idle); if every one is busy, the new one is closed.
type connLimit struct {
	max int

	mu      sync.Mutex
	conns   map[net.Conn]*connEntry
	seq     uint64
	evicted atomic.Int64
}

type connEntry struct {
	busy     bool
	draining bool   // busy only writing a rendered answer out
	seq      uint64 // order of the last state change: lower is older
}

// draining marks c as writing out an answer already rendered: at the cap
// it may be closed (after the idle ones), so that slow readers cannot
// keep every connection busy.
func (l *connLimit) draining(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.conns[c]; e != nil {
		l.seq++
		e.draining, e.seq = true, l.seq
	}
}

func newConnLimit(max int) *connLimit {
	return &connLimit{max: max, conns: make(map[net.Conn]*connEntry, max)}
}

// track is the server's ConnState hook.
func (l *connLimit) track(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	switch s {
	case http.StateNew:
		l.conns[c] = &connEntry{seq: l.seq}
		if len(l.conns) > l.max {
			l.evictLocked(c)
		}
	case http.StateActive:
		if e := l.conns[c]; e != nil {
			e.busy = true
		}
	case http.StateIdle:
		if e := l.conns[c]; e != nil {
			e.busy, e.draining, e.seq = false, false, l.seq
		}
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
	}
}

func (l *connLimit) evictLocked(newest net.Conn) {
	// Oldest without a request in progress first, then the oldest only
	// draining an answer, else the newcomer.
	var victim net.Conn
	var oldest uint64
	rank := 2
	for c, e := range l.conns {
		r := 2
		switch {
		case c == newest:
		case !e.busy:
			r = 0
		case e.draining:
			r = 1
		}
		if r < rank || (r == rank && r < 2 && e.seq < oldest) {
			victim, oldest, rank = c, e.seq, r
		}
	}
	if victim == nil {
		victim = newest
	}
	// Closing makes the server report StateClosed, which removes it.
	delete(l.conns, victim)
	_ = victim.Close()
	l.evicted.Add(1)
}

const indexPage = `<!doctype html>
<html><head><title>otelbee</title></head>
<body><h1>otelbee</h1><p><a href="/metrics">Metrics</a></p></body></html>
`

// Package httpc is the HTTP collector (directory collectors/http): RED
// metrics and one span per HTTP/1.x request, server and client side, from
// the read/write system calls of the observed programs, with no change to
// them. HTTP/1 is a protocol of the L7 layer: the kernel's L7 capture
// (bpf/l7.c, loaded by package capture) decides which connections carry it
// and sends a bounded prefix of every read and write on them, with segments
// past it; the engine hands them here in order, and the pure-Go parser
// (parser.go) frames them into requests and responses.
package httpc

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/collectors/l7/capture"
	"github.com/otelbee/otelbee/collectors/series"
	"github.com/otelbee/otelbee/exporters/spans"
)

// Name is the collector's name on the command line.
const Name = "http"

// Hooks is the attach plan: the L7 capture's, shared by every L7 protocol.
func Hooks() []hook.Hook { return capture.Hooks() }

type connKey struct {
	tgid, fd uint32
	start    uint64
}

// connState is one HTTP connection in user space.
type connState struct {
	key      connKey
	parser   Conn
	server   bool
	peer     netip.Addr
	peerPort uint16
	local    uint16
	unix     bool   // a Unix domain socket: no addresses or ports
	tls      bool   // plaintext from a TLS source (url.scheme https)
	proc     uint32 // the process its requests are credited to (the engine's Conn.PID)
	stats    *procStats
	// the last request's path, route and series: a connection mostly
	// repeats itself, and comparing is cheaper than folding and hashing
	lastPath   [maxPath]byte
	lastLen    int
	lastRoute  string
	lastSeries *httpSeries
	svc        string // service namespace/name: the route cap's scope
	// client: the last request's Host header and the server.address and
	// port it gave ("": none, the peer's)
	lastHost     [maxValue]byte
	hostLen      int
	hostName     string
	hostPort     uint16
	hostOverflow bool
	// the last sampled span's Host and User-Agent values, as strings: a
	// connection mostly sends the same ones, so a span rarely allocates them
	spanHost, spanUserAgent string
}

// Collector is the HTTP collector.
type Collector struct {
	deps collectors.Deps
	cfg  Config
	log  *slog.Logger

	// eng is the L7 capture this collector's connections come from
	// (shared with the agent's other L7 collectors, or its own); loader
	// and counters are its kernel object's.
	eng      *capture.Engine
	ownEng   bool
	reports  bool // reports the engine's pipeline stages
	loader   *hook.Loader
	counters *ebpf.Map

	reg           metric.Registration
	unobservedReg metric.Registration
	emitter       spans.Emitter // nil: no spans
	spans         chan spanRecord
	spanKVs       []attribute.KeyValue // the span worker's (endSpan)
	spanBuf       []byte               // the span worker's: its strings' bytes
	wg            sync.WaitGroup

	// Owned by the Run goroutine.
	free   []*connState
	routes *Routes
	// series is written by the Run goroutine and read by Produce.
	series *series.Table[seriesKey, histograms]
	start  time.Time
	cur    *connState
	// curConn is the layer's connection of cur (an h2c upgrade is noted on it).
	curConn *capture.Conn
	sinkFn  func(*Exchange)

	statsMu sync.Mutex
	procs   map[uint32]*procStats // per process: drops, incomplete, malformed
	svcs    map[string]*svcStats  // their sums per service, reported (procstats.go)

	orphans        atomic.Uint64 // data of connections whose open was lost (the engine counts)
	recorded       atomic.Uint64 // exchanges recorded
	spanDrops      atomic.Uint64
	seriesOverflow atomic.Uint64 // series not kept (MaxSeries)
	spansQueued    atomic.Uint64
	routeOverflow  atomic.Uint64

	closeOnce   sync.Once
	observeSelf bool // tests: the agent's own process is not left out
}

// New returns an unloaded HTTP collector on its own L7 capture.
func New(deps collectors.Deps, cfg Config) *Collector {
	c := NewOn(nil, deps, cfg)
	return c
}

// NewOn returns an unloaded HTTP collector on the agent's shared L7 capture
// eng (nil: its own, made at Load from cfg). It registers itself with eng,
// so it is made before eng's first Acquire.
func NewOn(eng *capture.Engine, deps collectors.Deps, cfg Config) *Collector {
	c := &Collector{
		deps:  deps,
		cfg:   cfg,
		log:   deps.Logger,
		eng:   eng,
		procs: map[uint32]*procStats{},
		series: series.New[seriesKey, histograms](series.Config{
			Name: Name, MaxSeries: cfg.MaxSeries, Groups: 2,
			Processes: deps.Processes, Budget: deps.SeriesBudget, RetainDead: series.DefaultRetainDead,
		}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.sinkFn = c.onExchange
	if eng != nil {
		eng.Register(capture.ProtoHTTP1, c)
	}
	return c
}

// CaptureConfig is the L7 capture's configuration this collector's
// settings give (an agent running HTTP shares one capture made from it).
func CaptureConfig(cfg Config) capture.Config {
	return capture.Config{
		CaptureBytes:    cfg.CaptureBytes,
		MaxConnections:  cfg.MaxConnections,
		RingBufferBytes: cfg.RingBufferBytes,
		Include:         cfg.Include,
		Exclude:         cfg.Exclude,
		PickUpExisting:  cfg.PickUpExisting,
		MaxSeries:       cfg.MaxSeries,
		Spans:           cfg.Spans,
	}
}

// Name implements collectors.Collector.
func (c *Collector) Name() string { return Name }

// Load loads the programs, fills the filter maps and attaches the hooks.
func (c *Collector) Load(ctx context.Context) error {
	var err error
	c.routes, err = NewRoutes(c.cfg.Routes, c.cfg.MaxRoutes)
	if err != nil {
		return err
	}
	if err := SetKnownMethods(c.cfg.KnownMethods); err != nil {
		return err
	}
	if c.eng == nil {
		cc := CaptureConfig(c.cfg)
		cc.ObserveSelf = c.observeSelf
		c.eng = capture.NewEngine(c.deps, cc)
		c.eng.SelfComms = c.selfComms()
		c.eng.Register(capture.ProtoHTTP1, c)
		c.ownEng = true
	}
	c.reports = c.eng.Loader() == nil
	if err := c.eng.Acquire(ctx); err != nil {
		return err
	}
	c.loader = c.eng.Loader()
	c.counters = c.eng.Counters()
	if err := c.selfInstruments(); err != nil {
		c.Close()
		return err
	}
	if err := c.registerUnobserved(); err != nil {
		c.Close()
		return err
	}
	c.start = time.Now()
	if c.deps.Producers != nil {
		c.deps.Producers.Add(c)
	}
	c.setupTracing()
	return nil
}

func (c *Collector) setupTracing() {
	tp := c.deps.TracerProvider
	if tp == nil || !c.cfg.Spans {
		return
	}
	if _, ok := tp.(noop.TracerProvider); ok {
		return
	}
	c.emitter = spans.EmitterOf(tp.Tracer("github.com/otelbee/otelbee/collectors/http"))
	c.spans = make(chan spanRecord, c.cfg.SpanQueue)
}

func (c *Collector) wall(mono uint64) time.Time {
	if c.eng == nil {
		return time.Unix(0, int64(mono))
	}
	return c.eng.Wall(mono)
}

// Run drains the L7 capture (shared: the first L7 collector's Run does)
// until ctx ends or Close is called, and ends sampled spans meanwhile.
func (c *Collector) Run(ctx context.Context) error {
	if c.spans != nil {
		c.wg.Add(1)
		go c.spanWorker(ctx)
		defer func() {
			close(c.spans)
			c.wg.Wait()
		}()
	}
	return c.eng.Run(ctx)
}

// Open implements capture.Handler: a connection the kernel decided is
// HTTP/1.
func (c *Collector) Open(cc *capture.Conn, r *capture.Record) {
	st, _ := cc.State.(*connState)
	if st == nil {
		st = c.newConn(connKey{tgid: r.TGID, fd: r.FD, start: r.StartNs})
		cc.State = st
	}
	st.key = connKey{tgid: r.TGID, fd: r.FD, start: r.StartNs}
	st.server = r.Server()
	st.peer = cc.Peer.Addr()
	st.peerPort = cc.Peer.Port()
	st.local = cc.Local.Port()
	st.unix = cc.Unix
	st.tls = cc.Source.TLS()
	st.lastLen, st.lastRoute, st.lastSeries = -1, "", nil
	st.hostLen, st.hostName, st.hostPort, st.hostOverflow = 0, "", 0, false
	st.proc = cc.PID
	st.svc = c.serviceOf(st.proc)
	st.stats = c.statsFor(st.proc)
	st.parser.Reset(st.server, &st.stats.Stats, c.sinkFn)
}

// Data implements capture.Handler.
func (c *Collector) Data(cc *capture.Conn, r *capture.Record) {
	st, _ := cc.State.(*connState)
	if st == nil {
		return
	}
	c.cur, c.curConn = st, cc
	if r.Total == 0 && r.Errno != 0 { // the call failed: transport.go
		st.parser.Fail(r.Errno, r.ExitNs)
	} else {
		st.parser.FeedSegments(r.Read, r.Data, r.Segs, r.Total, callTimes{enter: r.EnterNs, exit: r.ExitNs})
	}
	c.cur, c.curConn = nil, nil
}

// Lost implements capture.Handler.
func (c *Collector) Lost(cc *capture.Conn) {
	if st, _ := cc.State.(*connState); st != nil {
		st.parser.Lost()
	}
}

// End implements capture.Handler: the connection closed, or its process
// exited.
func (c *Collector) End(cc *capture.Conn, _ uint64, lostStart, exited bool) {
	st, _ := cc.State.(*connState)
	if st == nil {
		return
	}
	if lostStart {
		// A request whose first record was dropped (and counted) got no
		// response before the close or the exit: it was cut off, not lost.
		if exited {
			c.statsMu.Lock()
			st.stats.refunds++
			c.statsMu.Unlock()
		}
		st.stats.Incomplete.Add(1)
	}
	c.cur = st
	st.parser.Close()
	c.cur = nil
	cc.State = nil
	c.release(st)
}

// Housekeep implements capture.Handler: the series and counters of
// processes that exited.
func (c *Collector) Housekeep(isDead func(uint32) bool, now time.Time) {
	c.retireSeries(isDead, now)
	c.retireProcs(isDead, now)
}

func (c *Collector) newConn(k connKey) *connState {
	var st *connState
	if n := len(c.free); n > 0 {
		st = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		st = &connState{}
	}
	st.key = k
	return st
}

func (c *Collector) release(st *connState) {
	if len(c.free) < 1024 {
		c.free = append(c.free, st)
	}
}

// retireSeries forgets the series of processes gone for retainDead: until
// then their last values are still reported, so a short-lived client's
// requests are exported even if it exits before the next collection.
func (c *Collector) retireSeries(isDead func(uint32) bool, now time.Time) {
	c.series.Housekeep(isDead, now)
}

// serviceOf names the service of a process for the route cap.
func (c *Collector) serviceOf(tgid uint32) string {
	if c.deps.Processes == nil {
		return strconv.FormatUint(uint64(tgid), 10)
	}
	p := c.deps.Processes.Lookup(tgid)
	return p.ServiceNamespace + "/" + p.ServiceName
}

func (c *Collector) alive(tgid uint32) bool {
	if c.eng != nil {
		return c.eng.Alive(tgid)
	}
	return c.deps.Processes == nil || c.deps.Processes.Alive(tgid)
}

// Close detaches the programs (the shared capture's last user does) and
// ends Run. Idempotent.
func (c *Collector) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.reg != nil {
			c.reg.Unregister()
		}
		if c.unobservedReg != nil {
			c.unobservedReg.Unregister()
		}
		if c.loader != nil {
			err = c.eng.Release()
		}
	})
	return err
}

// PipelineStats implements collectors.PipelineReporter: the capture's
// stages when this collector loaded it, and the span queue.
func (c *Collector) PipelineStats() []collectors.StageStats {
	var out []collectors.StageStats
	if c.reports && c.eng != nil {
		out = c.eng.PipelineStats()
	}
	return append(out, collectors.StageStats{
		Stage:     "span_queue",
		Produced:  c.spansQueued.Load() + c.spanDrops.Load(),
		Delivered: c.spansQueued.Load(),
		Dropped:   c.spanDrops.Load(),
	})
}

// DroppedRequests is the number of requests lost on the way: records that
// began a request and found the ring buffer full (less those cut off by a
// close or an exit), requests given up after lost records, and pipelined
// requests past the parser's queue.
func (c *Collector) DroppedRequests() uint64 {
	t := c.observeProcs(nil, nil, nil, nil)
	return t.droppedStarts + t.lost + t.overflow
}

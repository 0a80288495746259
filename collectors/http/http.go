// Package httpc is the HTTP collector (directory collectors/http): RED
// metrics and one span per HTTP/1.x request, server and client side, from
// the read/write system calls of the observed programs, with no change to
// them. bpf/http.c tracks sockets from accept and connect and sends a
// bounded prefix of every read and write on connections that carry HTTP;
// the pure-Go parser (parser.go) frames them into requests and responses.
package httpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
)

// Name is the collector's name on the command line.
const Name = "http"

type syscallHook struct {
	name         string
	enter, exit  string // program names; enter may be ""
	enterTP, tp  string // tracepoint names
	required     bool
	enterProgram string
}

// Hooks is the attach plan. Every hook is a pair of syscall tracepoints
// (entry remembers the buffer, exit knows the length); this path is complete
// on its own and is the one this kernel family runs. Socket tracking
// (accept, connect, close) is required; each read/write hook that fails
// only loses that call's traffic.
func Hooks() []hook.Hook {
	tp := func(name string) hook.AttachFunc { return hook.Tracepoint("syscalls", name) }
	pair := func(name, enter, exit string) hook.Hook {
		return hook.Hook{Name: name, Links: []hook.Link{{Mode: hook.ModeTracepoint, Programs: []hook.Program{
			{Name: enter, Attach: tp("sys_enter_" + name)},
			{Name: exit, Attach: tp("sys_exit_" + name)},
		}}}}
	}
	one := func(name, prog, event string) hook.Hook {
		return hook.Hook{Name: name, Links: []hook.Link{{Mode: hook.ModeTracepoint, Programs: []hook.Program{
			{Name: prog, Attach: tp(event)},
		}}}}
	}
	return []hook.Hook{
		one("accept4", httpProgHttpAccept4Exit, "sys_exit_accept4"),
		one("accept", httpProgHttpAcceptExit, "sys_exit_accept"),
		pair("connect", httpProgHttpConnectEnter, httpProgHttpConnectExit),
		one("close", httpProgHttpCloseEnter, "sys_enter_close"),
		{Name: "fork", Links: []hook.Link{{Mode: hook.ModeTracepoint, Programs: []hook.Program{
			{Name: httpProgHttpFork, Attach: hook.Tracepoint("sched", "sched_process_fork")},
		}}}},
		pair("read", httpProgHttpReadEnter, httpProgHttpReadExit),
		pair("recvfrom", httpProgHttpRecvfromEnter, httpProgHttpRecvfromExit),
		pair("readv", httpProgHttpReadvEnter, httpProgHttpReadvExit),
		pair("recvmsg", httpProgHttpRecvmsgEnter, httpProgHttpRecvmsgExit),
		pair("write", httpProgHttpWriteEnter, httpProgHttpWriteExit),
		pair("sendto", httpProgHttpSendtoEnter, httpProgHttpSendtoExit),
		pair("writev", httpProgHttpWritevEnter, httpProgHttpWritevExit),
		pair("sendmsg", httpProgHttpSendmsgEnter, httpProgHttpSendmsgExit),
		pair("sendfile64", httpProgHttpSendfileEnter, httpProgHttpSendfileExit),
	}
}

// afUnix is AF_UNIX, as the kernel reports a connection's family.
const afUnix = 1

// readPollInterval is the longest a record waits in the ring buffer.
const readPollInterval = 100 * time.Millisecond

var requiredHooks = map[string]bool{"accept4": true, "connect": true, "close": true}

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
	proc     uint32 // the process its requests are credited to (identityOf)
	nextSeq  uint32
	respSeen uint32 // records of the response direction received
	stats    *procStats
	// the last request's path, route and series: a connection mostly
	// repeats itself, and comparing is cheaper than folding and hashing
	lastPath   [maxPath]byte
	lastLen    int
	lastRoute  string
	lastSeries *series
	svc        string // service namespace/name: the route cap's scope
	// client: the last request's Host header and the server.address and
	// port it gave ("": none, the peer's)
	lastHost     [maxValue]byte
	hostLen      int
	hostName     string
	hostPort     uint16
	hostOverflow bool
}

// Collector is the HTTP collector.
type Collector struct {
	deps collectors.Deps
	cfg  Config
	log  *slog.Logger

	loader   *hook.Loader
	reader   *ringbuf.Reader
	counters *ebpf.Map

	reg           metric.Registration
	unobservedReg metric.Registration
	tracer        trace.Tracer
	spans         chan spanRecord
	wg            sync.WaitGroup

	// Owned by the Run goroutine.
	conns  map[connKey]*connState
	free   []*connState
	routes *Routes
	// series is written by the Run goroutine under seriesMu and read by
	// Produce; seriesDead remembers when a process with series was found
	// gone (Run goroutine only).
	series     map[seriesKey]*series
	seriesMu   sync.Mutex
	seriesDead map[uint32]time.Time
	overflow   [2]*histograms // [client, server]: beyond MaxSeries
	start      time.Time
	cur        *connState
	sinkFn     func(*Exchange)
	clockNs    atomic.Int64 // wall - monotonic, ns

	statsMu sync.Mutex
	procs   map[uint32]*procStats // per process: drops, incomplete, malformed
	svcs    map[string]*svcStats  // their sums per service, reported (procstats.go)

	received       atomic.Uint64
	malformed      atomic.Uint64
	orphans        atomic.Uint64 // data of connections whose open was lost
	recorded       atomic.Uint64 // exchanges recorded
	spanDrops      atomic.Uint64
	seriesOverflow atomic.Uint64 // series not kept (MaxSeries)
	spansQueued    atomic.Uint64
	connsOver      atomic.Uint64
	routeOverflow  atomic.Uint64

	closeOnce   sync.Once
	observeSelf bool // tests: the agent's own process is not left out
}

// selfTgid is the process the kernel leaves out: the agent, whose own
// exporters speak HTTP.
func (c *Collector) selfTgid() uint32 {
	if c.observeSelf {
		return 0
	}
	return uint32(os.Getpid())
}

// New returns an unloaded HTTP collector.
func New(deps collectors.Deps, cfg Config) *Collector {
	c := &Collector{
		deps:       deps,
		cfg:        cfg,
		log:        deps.Logger,
		conns:      map[connKey]*connState{},
		series:     map[seriesKey]*series{},
		seriesDead: map[uint32]time.Time{},
		procs:      map[uint32]*procStats{},
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.sinkFn = c.onExchange
	return c
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
	spec, err := loadHttp()
	if err != nil {
		return fmt.Errorf("loading http object: %w", err)
	}
	anyFilter := !c.cfg.Include.empty() || !c.cfg.Exclude.empty()
	b2u := func(b bool) uint8 {
		if b {
			return 1
		}
		return 0
	}
	for name, v := range map[string]any{
		httpVarCaptureBytes:  c.cfg.CaptureBytes,
		httpVarSelfTgid:      c.selfTgid(),
		httpVarAnyFilter:     b2u(anyFilter),
		httpVarIncludeComm:   b2u(len(c.cfg.Include.Executables) > 0),
		httpVarIncludePort:   b2u(len(c.cfg.Include.Ports) > 0),
		httpVarIncludeCgroup: b2u(len(c.cfg.Include.Cgroups) > 0),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	opts := c.deps.Attach
	opts.MaxEntries = map[string]uint32{
		httpMapConns:  c.cfg.MaxConnections,
		httpMapEvents: c.cfg.RingBufferBytes,
	}
	c.loader, err = hook.NewLoader(Name, spec, opts, c.deps.Probes, c.deps.Hooks, c.log)
	if err != nil {
		return err
	}
	if err := c.fillFilters(); err != nil {
		c.loader.Close()
		return err
	}
	if err := c.fillSelf(); err != nil { // self.go
		c.loader.Close()
		return err
	}
	for _, h := range Hooks() {
		if _, err := c.loader.Attach(h); err != nil {
			if requiredHooks[h.Name] {
				c.loader.Close()
				return err
			}
			c.log.Warn("running degraded: a hook could not be attached", "hook", h.Name, "error", err)
		}
	}
	c.counters = c.loader.Map(httpMapCounters)
	c.reader, err = ringbuf.NewReader(c.loader.Map(httpMapEvents))
	if err != nil {
		c.loader.Close()
		return fmt.Errorf("opening the http ring buffer: %w", err)
	}
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
	c.syncClock()
	if c.cfg.PickUpExisting {
		n, err := c.pickUpExisting()
		if err != nil {
			c.log.Warn("connections open before the start are not parsed", "error", err)
		} else {
			c.log.Debug("picked up connections open before the start", "connections", n)
		}
	}
	return nil
}

func (c *Collector) fillFilters() error {
	put := func(m *ebpf.Map, key any, action httpFilterAction) error {
		return m.Put(key, uint8(action))
	}
	for _, f := range []struct {
		filter Filter
		action httpFilterAction
	}{{c.cfg.Include, httpFilterActionFILTER_INCLUDE}, {c.cfg.Exclude, httpFilterActionFILTER_EXCLUDE}} {
		for _, e := range f.filter.Executables {
			if err := put(c.loader.Map(httpMapFilterComm), commKey(e), f.action); err != nil {
				return fmt.Errorf("http filter %q: %w", e, err)
			}
		}
		for _, p := range f.filter.Ports {
			if err := put(c.loader.Map(httpMapFilterPort), uint16(p), f.action); err != nil {
				return fmt.Errorf("http filter port %d: %w", p, err)
			}
		}
		for _, cg := range f.filter.Cgroups {
			id, err := cgroupID(cg)
			if err != nil {
				return fmt.Errorf("http filter: %w", err)
			}
			if err := put(c.loader.Map(httpMapFilterCgroup), id, f.action); err != nil {
				return fmt.Errorf("http filter cgroup %s: %w", cg, err)
			}
		}
	}
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
	c.tracer = tp.Tracer("github.com/otelbee/otelbee/collectors/http")
	c.spans = make(chan spanRecord, c.cfg.SpanQueue)
}

// syncClock measures wall - monotonic, to turn kernel timestamps into time.
func (c *Collector) syncClock() {
	var ts unix.Timespec
	before := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return
	}
	c.clockNs.Store(before.UnixNano() - ts.Nano())
}

func (c *Collector) wall(mono uint64) time.Time {
	return time.Unix(0, int64(mono)+c.clockNs.Load())
}

// Run drains the ring buffer until ctx ends or Close is called.
func (c *Collector) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.reader.Close() })
	defer stop()
	if c.spans != nil {
		c.wg.Add(1)
		go c.spanWorker(ctx)
		defer func() {
			close(c.spans)
			c.wg.Wait()
		}()
	}
	var (
		rec ringbuf.Record
		r   record
	)
	housekeep := time.Now().Add(10 * time.Second)
	// The kernel wakes us only for batches (bpf/http.c wakeup_flags); the
	// deadline bounds how long a lone record waits. ReadInto drains the ring
	// without waiting, so the deadline is renewed only when it fired.
	c.reader.SetDeadline(time.Now().Add(readPollInterval))
	n := 0
	for {
		err := c.reader.ReadInto(&rec)
		if n++; err != nil || n%8192 == 0 {
			now := time.Now()
			if now.After(housekeep) {
				c.housekeeping()
				housekeep = now.Add(10 * time.Second)
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.reader.SetDeadline(time.Now().Add(readPollInterval))
				continue
			}
			if errors.Is(err, os.ErrClosed) || errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading http events: %w", err)
		}
		c.received.Add(1)
		if err := decodeRecord(rec.RawSample, &r); err != nil {
			c.malformed.Add(1)
			continue
		}
		c.handle(ctx, &r)
	}
}

// handle applies one record to its connection.
func (c *Collector) handle(ctx context.Context, r *record) {
	k := connKey{tgid: r.tgid, fd: r.fd, start: r.startNs}
	st := c.conns[k]
	if st == nil && r.typ == uint8(httpHttpEventTypeEVENT_DATA) {
		// The connection's open record was lost: its description is
		// still in the kernel's table.
		var info httpConnInfo
		if err := c.loader.Map(httpMapConns).Lookup(uint64(r.tgid)<<32|uint64(r.fd), &info); err == nil && info.StartNs == r.startNs {
			open := *r
			open.typ = uint8(httpHttpEventTypeEVENT_OPEN)
			open.role, open.peer, open.peerPort, open.localPort = info.Role, info.Peer, info.PeerPort, info.LocalPort
			open.seq = r.seq - 1 // the data record's own sequence is checked below
			c.handle(ctx, &open)
			if st = c.conns[k]; st != nil {
				// response records so far, less this one if it is one
				// (counted below)
				st.respSeen = info.RespRecords
				if (r.dir == 1) == st.server && st.respSeen > 0 {
					st.respSeen--
				}
			}
		}
	}
	switch r.typ {
	case uint8(httpHttpEventTypeEVENT_OPEN):
		if st == nil {
			if uint32(len(c.conns)) >= c.cfg.MaxConnections {
				c.connsOver.Add(1)
				return
			}
			st = c.newConn(k)
		}
		st.server = r.role == uint8(httpHttpRoleROLE_SERVER)
		st.peer = netip.AddrFrom16(r.peer).Unmap()
		st.peerPort = r.peerPort
		st.local = r.localPort
		st.unix = r.family == afUnix
		if st.unix {
			st.peer = netip.Addr{} // no address: the series say network.transport=unix
		}
		st.nextSeq = r.seq + 1
		st.respSeen = 0
		st.lastLen, st.lastRoute, st.lastSeries = -1, "", nil
		st.hostLen, st.hostName, st.hostPort, st.hostOverflow = 0, "", 0, false
		st.proc = c.identityOf(r)
		st.svc = c.serviceOf(st.proc)
		st.stats = c.statsFor(st.proc)
		st.parser.Reset(st.server, &st.stats.Stats, c.sinkFn)
		return
	case uint8(httpHttpEventTypeEVENT_DATA):
		if st == nil {
			c.orphans.Add(1)
			return
		}
		if r.seq != st.nextSeq {
			st.parser.Lost()
		}
		st.nextSeq = r.seq + 1
		if (r.dir == 1) == st.server { // a server writes responses, a client reads them
			st.respSeen++
		}
		c.cur = st
		if r.total == 0 && r.errno != 0 { // the call failed: transport.go
			st.parser.Fail(r.errno, r.exitNs)
		} else {
			st.parser.FeedSegments(r.dir == 0, r.data, r.segs, r.total, callTimes{enter: r.enterNs, exit: r.exitNs})
		}
		c.cur = nil
	case uint8(httpHttpEventTypeEVENT_CLOSE):
		if st == nil {
			return
		}
		// Records were lost since the last one seen. If none of them was a
		// response record, the requests waiting never got an answer: they
		// are incomplete (Close counts them), not lost.
		if r.seq != st.nextSeq && r.respRecords != st.respSeen {
			st.parser.Lost()
		}
		if r.lostStart {
			// A request whose first record was dropped (and counted) got no
			// response before the close: it was cut off, not lost.
			st.stats.Incomplete.Add(1)
		}
		c.cur = st
		st.parser.Close()
		c.cur = nil
		c.release(st)
	}
}

// identityOf is the process a connection's requests are credited to: the
// one that accepted (or connected) it, when a forked child serves it and
// that process still runs. A child forked per connection (ForkingMixIn)
// lives for one request: it would be a new process, often gone before its
// identity is read, for every request.
func (c *Collector) identityOf(r *record) uint32 {
	if r.owner != 0 && r.owner != r.tgid && c.alive(r.owner) {
		return r.owner
	}
	return r.tgid
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
	c.conns[k] = st
	return st
}

func (c *Collector) release(st *connState) {
	delete(c.conns, st.key)
	if len(c.free) < 1024 {
		c.free = append(c.free, st)
	}
}

// housekeeping runs in the Run goroutine every 10 s: it forgets the
// connections of processes that exited (their descriptors closed without
// close(2)), and re-measures the clock offset.
func (c *Collector) housekeeping() {
	c.syncClock()
	dead := map[uint32]bool{}
	isDead := func(tgid uint32) bool {
		d, seen := dead[tgid]
		if !seen {
			d = !c.alive(tgid)
			dead[tgid] = d
		}
		return d
	}
	conns := c.loader.Map(httpMapConns)
	for k, st := range c.conns {
		if isDead(k.tgid) {
			// The process exited: its descriptors closed without close(2),
			// so the kernel's entry is still there. A request start dropped
			// on it was cut off by the exit; then forget the entry.
			kkey := uint64(k.tgid)<<32 | uint64(k.fd)
			var info httpConnInfo
			err := conns.Lookup(kkey, &info)
			if err == nil && info.StartNs == k.start {
				if info.LostStart != 0 {
					c.statsMu.Lock()
					st.stats.refunds++
					c.statsMu.Unlock()
					st.stats.Incomplete.Add(1)
				}
				conns.Delete(kkey)
			}
			c.cur = st
			st.parser.Close()
			c.cur = nil
			c.release(st)
		}
	}
	c.retireSeries(isDead, time.Now())
	c.retireProcs(isDead, time.Now())
}

// retireSeries forgets the series of processes gone for retainDead: until
// then their last values are still reported, so a short-lived client's
// requests are exported even if it exits before the next collection.
func (c *Collector) retireSeries(isDead func(uint32) bool, now time.Time) {
	var expired []seriesKey
	for k := range c.series {
		if !isDead(k.tgid) {
			delete(c.seriesDead, k.tgid) // a reused pid starts anew
			continue
		}
		since, ok := c.seriesDead[k.tgid]
		if !ok {
			c.seriesDead[k.tgid] = now
		} else if now.Sub(since) >= retainDead {
			expired = append(expired, k)
		}
	}
	c.seriesMu.Lock()
	for _, k := range expired {
		delete(c.series, k)
	}
	c.seriesMu.Unlock()
	for tgid, since := range c.seriesDead {
		if now.Sub(since) >= retainDead {
			delete(c.seriesDead, tgid)
		}
	}
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
	if c.deps.Processes != nil {
		return c.deps.Processes.Alive(tgid)
	}
	_, err := os.Stat(fmt.Sprintf("/proc/%d", tgid))
	return err == nil
}

// Close detaches the programs and ends Run. Idempotent.
func (c *Collector) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.reg != nil {
			c.reg.Unregister()
		}
		if c.unobservedReg != nil {
			c.unobservedReg.Unregister()
		}
		if c.reader != nil {
			c.reader.Close()
		}
		if c.loader != nil {
			err = c.loader.Close()
		}
	})
	return err
}

// PipelineStats implements collectors.PipelineReporter.
func (c *Collector) PipelineStats() []collectors.StageStats {
	k := hook.SumCounters(c.counters, int(httpHttpCounterHC_MAX))
	recv := c.received.Load()
	return []collectors.StageStats{
		{
			Stage:     "ringbuf",
			Produced:  k[httpHttpCounterHC_EVENTS_SUBMITTED] + k[httpHttpCounterHC_DROP_RINGBUF_FULL],
			Delivered: recv,
			Dropped:   k[httpHttpCounterHC_DROP_RINGBUF_FULL],
		},
		{Stage: "decode", Produced: recv, Delivered: recv - c.malformed.Load(), Dropped: c.malformed.Load()},
		{Stage: "conns_map", Dropped: k[httpHttpCounterHC_DROP_CONNS_FULL] + c.connsOver.Load()},
		{Stage: "calls_map", Dropped: k[httpHttpCounterHC_DROP_ARGS_FULL]},
		{
			Stage:     "span_queue",
			Produced:  c.spansQueued.Load() + c.spanDrops.Load(),
			Delivered: c.spansQueued.Load(),
			Dropped:   c.spanDrops.Load(),
		},
	}
}

// DroppedRequests is the number of requests lost on the way: records that
// began a request and found the ring buffer full (less those cut off by a
// close or an exit), requests given up after lost records, and pipelined
// requests past the parser's queue.
func (c *Collector) DroppedRequests() uint64 {
	t := c.observeProcs(nil, nil, nil, nil)
	return t.droppedStarts + t.lost + t.overflow
}

// Package tcp is the TCP collector: connections opened, closed and failed,
// active connections, exact payload bytes, connection duration, smoothed RTT,
// retransmitted segments and resets, per process, peer and server port.
package tcp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/process/identity"
)

// Name is the collector's name on the command line.
const Name = "tcp"

// Config sizes the collector's kernel state.
type Config struct {
	// MaxConnections bounds the connections tracked at once (socks map).
	MaxConnections uint32
	// MaxSeries bounds distinct (process, peer, server port, direction)
	// series (conn_stats map).
	MaxSeries uint32
	// MaxPeersPerProcess bounds the distinct peer addresses a process's
	// series keep; further peers fold into network.peer.address="_OTHER".
	MaxPeersPerProcess int
	// RetireAfter is how long the series of an exited process keep being
	// reported before they are dropped from the kernel map.
	RetireAfter time.Duration
	// PeerHistograms keeps the duration and RTT histograms per series
	// (peer address and server port), as the counters; by default they
	// are per instance and direction (histGroup), since two histograms
	// are 47 of a series' 55 exposition lines.
	PeerHistograms bool
}

// DefaultConfig matches the map sizes compiled into bpf/tcp.c.
func DefaultConfig() Config {
	return Config{MaxConnections: 65536, MaxSeries: 16384, MaxPeersPerProcess: 100, RetireAfter: 2 * time.Minute}
}

// Validate reports a setting that cannot work.
func (c Config) Validate() error {
	if c.MaxConnections < 64 || c.MaxConnections > 1<<22 {
		return fmt.Errorf("tcp.max_connections must be between 64 and 4194304, got %d", c.MaxConnections)
	}
	if c.MaxSeries < 16 || c.MaxSeries > 1<<20 {
		return fmt.Errorf("tcp.max_series must be between 16 and 1048576, got %d", c.MaxSeries)
	}
	if c.MaxPeersPerProcess < 1 {
		return fmt.Errorf("tcp.max_peers_per_process must be at least 1, got %d", c.MaxPeersPerProcess)
	}
	if c.RetireAfter < 0 {
		return fmt.Errorf("tcp.retire_after must not be negative, got %s", c.RetireAfter)
	}
	return nil
}

// Hooks is the TCP collector's attach plan: for each kernel event, the ways
// to attach it, best first. tp_btf comes first where it exists: it is the
// cheapest entry (no trampoline, no breakpoint) and gives typed access to the
// socket. For payload bytes, kernels before 6.4 have no sock_*_length
// tracepoints, so fexit/fentry and then kprobes take over there.
func Hooks() []hook.Hook {
	tp := hook.TracepointProgram
	tr := hook.Tracing()
	one := func(name string, at hook.AttachFunc) []hook.Program {
		return []hook.Program{{Name: name, Attach: at}}
	}
	return []hook.Hook{
		// Before state: a connection's record, kept past its close, is
		// only ever freed here.
		{Name: "destroy", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: one(tcpProgTcpDestroyBtf, tr)},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{tp(tcpProgTcpDestroyTp, "tcp", "tcp_destroy_sock")}},
		}},
		{Name: "state", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: one(tcpProgTcpStateBtf, tr)},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{tp(tcpProgTcpStateTp, "sock", "inet_sock_set_state")}},
		}},
		{Name: "send", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: one(tcpProgTcpSendBtf, tr)},
			{Mode: hook.ModeFentry, Programs: one(tcpProgTcpSendFexit, tr)},
			{Mode: hook.ModeKprobe, Programs: []hook.Program{
				{Name: tcpProgTcpSendKprobe, Attach: hook.Kprobe("tcp_sendmsg")},
				{Name: tcpProgTcpSendKretprobe, Attach: hook.Kretprobe("tcp_sendmsg")},
			}},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{tp(tcpProgTcpSendTp, "sock", "sock_send_length")}},
		}},
		{Name: "recv", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: one(tcpProgTcpRecvBtf, tr)},
			{Mode: hook.ModeFentry, Programs: one(tcpProgTcpRecvFentry, tr)},
			{Mode: hook.ModeKprobe, Programs: one(tcpProgTcpRecvKprobe, hook.Kprobe("tcp_cleanup_rbuf"))},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{tp(tcpProgTcpRecvTp, "sock", "sock_recv_length")}},
		}},
		{Name: "retransmit", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: one(tcpProgTcpRetransmitBtf, tr)},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{tp(tcpProgTcpRetransmitTp, "tcp", "tcp_retransmit_skb")}},
		}},
		{Name: "reset_sent", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: one(tcpProgTcpResetSentBtf, tr)},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{tp(tcpProgTcpResetSentTp, "tcp", "tcp_send_reset")}},
		}},
		{Name: "reset_received", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: one(tcpProgTcpResetReceivedBtf, tr)},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{tp(tcpProgTcpResetReceivedTp, "tcp", "tcp_receive_reset")}},
		}},
	}
}

// Collector is the TCP collector.
type Collector struct {
	deps collectors.Deps
	cfg  Config
	log  *slog.Logger

	loader   *hook.Loader
	stats    *ebpf.Map
	hists    *ebpf.Map
	counters *ebpf.Map
	socks    *ebpf.Map
	// The kernel's peer budget: admitted (process, peer) pairs and their
	// count per process, forgotten with the process's series.
	peerSet    *ebpf.Map
	peerCounts *ebpf.Map
	// Readers of stats and hists at each collection.
	statsReader *mapReader[tcpConnKey, tcpConnCounters]
	histsReader *mapReader[tcpConnKey, tcpConnHist]

	reg   metric.Registration
	start time.Time // start of the cumulative histograms

	mu     sync.Mutex
	series map[tcpConnKey]*seriesAttrs // kernel key -> its series
	shared map[tcpConnKey]*seriesAttrs // by instance (owner) key
	// overflow gathers the series the series budget refused.
	overflow *seriesAttrs
	idle     map[*seriesAttrs]struct{}        // series no kernel key feeds
	groups   map[groupKey]*histGroup          // the histograms' series
	peers    map[uint32]map[[16]byte]struct{} // distinct peers per process
	folded   atomic.Uint64                    // kernel series folded into _OTHER
	retired  map[uint32]time.Time             // pid -> when it was seen gone

	closeOnce sync.Once
}

// New returns an unloaded TCP collector.
func New(deps collectors.Deps, cfg Config) *Collector {
	return &Collector{
		deps:    deps,
		cfg:     cfg,
		log:     deps.Logger,
		series:  map[tcpConnKey]*seriesAttrs{},
		shared:  map[tcpConnKey]*seriesAttrs{},
		idle:    map[*seriesAttrs]struct{}{},
		groups:  map[groupKey]*histGroup{},
		peers:   map[uint32]map[[16]byte]struct{}{},
		retired: map[uint32]time.Time{},
	}
}

// Name implements collectors.Collector.
func (c *Collector) Name() string { return Name }

// Load loads the maps, attaches every hook through its chain and creates the
// instruments. The state hook is required; without the others the collector
// runs degraded (their counters stay at zero) and says so.
func (c *Collector) Load(ctx context.Context) error {
	spec, err := loadTcp()
	if err != nil {
		return fmt.Errorf("loading tcp object: %w", err)
	}
	if err := setBounds(spec); err != nil {
		return err
	}
	if err := spec.Variables[tcpVarMaxPeersPerProcess].Set(uint32(c.cfg.MaxPeersPerProcess)); err != nil {
		return fmt.Errorf("setting the peer budget: %w", err)
	}
	opts := c.deps.Attach
	opts.MaxEntries = map[string]uint32{
		tcpMapSocks:      c.cfg.MaxConnections,
		tcpMapConnStats:  c.cfg.MaxSeries,
		tcpMapPeers:      c.cfg.MaxSeries,
		tcpMapPeerCounts: c.cfg.MaxSeries,
	}
	c.loader, err = hook.NewLoader(Name, spec, opts, c.deps.Probes, c.deps.Hooks, c.log)
	if err != nil {
		return err
	}
	// Seeded before the hooks attach, so that the first bytes on a
	// connection older than the agent already see its listener, and again
	// after, so that no listen() falls in between.
	c.seedListeners()
	for _, h := range Hooks() {
		if _, err := c.loader.Attach(h); err != nil {
			if h.Name == "state" || h.Name == "destroy" {
				c.loader.Close()
				return err
			}
			c.log.Warn("running degraded: a hook could not be attached", "hook", h.Name, "error", err)
		}
	}
	c.stats = c.loader.Map(tcpMapConnStats)
	c.hists = c.loader.Map(tcpMapConnHists)
	c.counters = c.loader.Map(tcpMapCounters)
	c.socks = c.loader.Map(tcpMapSocks)
	c.peerSet = c.loader.Map(tcpMapPeers)
	c.peerCounts = c.loader.Map(tcpMapPeerCounts)
	if c.statsReader, err = newMapReader[tcpConnKey, tcpConnCounters](c.stats); err == nil {
		c.histsReader, err = newMapReader[tcpConnKey, tcpConnHist](c.hists)
	}
	if err != nil {
		c.loader.Close()
		return err
	}
	c.seedListeners()
	c.recordExisting()
	c.start = time.Now()
	if err := c.instruments(); err != nil {
		c.Close()
		return err
	}
	if c.deps.Producers != nil {
		c.deps.Producers.Add(c)
	}
	return nil
}

func (c *Collector) seedListeners() {
	if n, err := seedListeners("/proc", c.loader.Map(tcpMapListeners)); err != nil {
		c.log.Warn("could not read the sockets listening before start; their inbound connections count as unknown_service", "error", err)
	} else {
		c.log.Debug("seeded listening sockets", "count", n)
	}
}

// recordExisting runs the socket iterator once, so that connections opened
// before the agent started keep the direction and server port of how they
// were set up. Without it they are classed by their local port each time
// they move bytes, which a close makes wrong.
func (c *Collector) recordExisting() {
	h := hook.Hook{Name: "existing", Links: []hook.Link{
		// Iterators are BTF-typed tracing programs like tp_btf (5.8+).
		{Mode: hook.ModeTPBTF, Programs: []hook.Program{{Name: tcpProgTcpExisting, Attach: runIterator}}},
	}}
	if _, err := c.loader.Attach(h); err != nil {
		c.log.Warn("connections open before start are classed by their local port, not by how they were set up", "error", err)
		return
	}
	k := c.kernelCounters()
	c.log.Debug("recorded connections open before start", "count", k[tcpTcpCounterCOUNTER_EXISTING])
}

// runIterator attaches a socket iterator and runs it to the end: reading it
// runs the program once per socket.
func runIterator(p *ebpf.Program) (link.Link, error) {
	it, err := link.AttachIter(link.IterOptions{Program: p})
	if err != nil {
		return nil, fmt.Errorf("attaching the socket iterator: %w", err)
	}
	r, err := it.Open()
	if err != nil {
		it.Close()
		return nil, fmt.Errorf("opening the socket iterator: %w", err)
	}
	_, err = io.Copy(io.Discard, r)
	r.Close()
	if err != nil {
		it.Close()
		return nil, fmt.Errorf("running the socket iterator: %w", err)
	}
	return it, nil
}

// Run retires the series of exited processes until ctx ends. Everything
// else happens in the kernel and when metrics are collected.
func (c *Collector) Run(ctx context.Context) error {
	// Exits are found by the resolver's own sweep, which runs whatever
	// collectors are enabled.
	stop := c.deps.Processes.Subscribe(func(e identity.Event) {
		if e.Kind != identity.ProcessExit {
			return
		}
		c.mu.Lock()
		if _, ok := c.retired[e.PID]; !ok {
			c.retired[e.PID] = time.Now()
		}
		c.mu.Unlock()
	})
	defer stop()
	<-ctx.Done()
	return nil
}

// Close detaches the programs and ends Run. Idempotent.
func (c *Collector) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.reg != nil {
			c.reg.Unregister()
		}
		if c.loader != nil {
			err = c.loader.Close()
		}
	})
	return err
}

// PipelineStats implements collectors.PipelineReporter from the kernel's
// counters: what could not be recorded because a map was full.
func (c *Collector) PipelineStats() []collectors.StageStats {
	k := c.kernelCounters()
	return []collectors.StageStats{
		{Stage: "hist_map", Produced: k[tcpTcpCounterCOUNTER_CLOSES] + k[tcpTcpCounterCOUNTER_DROP_HIST_FULL],
			Delivered: k[tcpTcpCounterCOUNTER_CLOSES], Dropped: k[tcpTcpCounterCOUNTER_DROP_HIST_FULL]},
		{Stage: "socks_map", Dropped: k[tcpTcpCounterCOUNTER_DROP_SOCKS_FULL]},
		{Stage: "stats_map", Dropped: k[tcpTcpCounterCOUNTER_DROP_STATS_FULL]},
		{Stage: "listeners_map", Dropped: k[tcpTcpCounterCOUNTER_DROP_LISTENERS_FULL]},
	}
}

// seriesAttrs caches the attributes of one exported series, so that a
// collection builds no attribute set it built before. Several kernel series
// map to one: a process's peers folded into _OTHER, and the processes of
// one service instance (identity.Resolver.Owner), whose kernel series are
// per pid.
type seriesAttrs struct {
	set      attribute.Set
	failed   [tcpConnectFailureFAILURE_MAX]metric.ObserveOption
	sent     metric.ObserveOption
	received metric.ObserveOption
	obsBase  metric.ObserveOption

	// Under Collector.mu:
	key  tcpConnKey // its key in Collector.shared: Tgid is the owner
	refs int        // kernel series in Collector.series that map here
	// What kernel series retired since were worth: a pid's series are
	// deleted from the kernel when it exits, but the instance's series
	// goes on (other processes of it still feed it), so their last values
	// stay in it, exactly, not lost and not counted twice. Their
	// histograms stay in the series' histGroup.
	carried tcpConnCounters
	group   *histGroup
}

// histGroup is the series of the duration and RTT histograms: by default
// one per instance and direction, which several counter series (its
// peers and server ports) feed, so that a peer costs its eight counters
// in the exposition, not two histograms of 43 buckets more
// (docs/metrics.md); with Config.PeerHistograms one per counter series.
type histGroup struct {
	set attribute.Set
	// Under Collector.mu:
	key     groupKey
	refs    int         // counter series (seriesAttrs) in it
	carried tcpConnHist // what retired kernel series counted
}

// groupKey names a histGroup: the instance's series key with the peer
// and port cleared unless Config.PeerHistograms; overflow for the
// budget's overflow series.
type groupKey struct {
	key      tcpConnKey
	overflow bool
}

// otherPeer marks the series that gathers a process's peers beyond
// MaxPeersPerProcess.
var otherPeer = [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// attrsFor returns the attributes of a kernel series. The kernel folds a
// process's peers beyond MaxPeersPerProcess into its otherPeer series; the
// same budget here covers the few peers that CPUs admitting at the same
// instant let past it. Folded series share one set, with
// network.peer.address="_OTHER", and the series of the processes of one
// instance share theirs: several kernel series can map to the same
// attributes, so callers sum by the returned pointer.
func (c *Collector) attrsFor(k tcpConnKey) *seriesAttrs {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.series[k]; ok {
		return a
	}
	fk := k
	if k.Peer != otherPeer {
		ps := c.peers[k.Tgid]
		if ps == nil {
			ps = map[[16]byte]struct{}{}
			c.peers[k.Tgid] = ps
		}
		if _, known := ps[k.Peer]; !known {
			if len(ps) >= c.cfg.MaxPeersPerProcess {
				fk.Peer = otherPeer
				c.folded.Add(1)
			} else {
				ps[k.Peer] = struct{}{}
			}
		}
	}
	a := c.sharedAttrs(fk)
	a.refs++
	c.series[k] = a
	return a
}

// sharedAttrs returns the series of kernel key k's instance; c.mu is held.
func (c *Collector) sharedAttrs(k tcpConnKey) *seriesAttrs {
	sk := k
	sk.Tgid = c.deps.Processes.Owner(k.Tgid)
	if a, ok := c.shared[sk]; ok {
		return a
	}
	// The agent-wide series budget (collectors/budget) past the kernel
	// map's own cap: refused series are counted together, exactly, in
	// one otel.metric.overflow series.
	if b := c.deps.SeriesBudget; b != nil && !b.Admit(Name, sk.Tgid) {
		if c.overflow == nil {
			kv := []attribute.KeyValue{attribute.Bool("otel.metric.overflow", true)}
			c.overflow = c.buildAttrsFrom(kv)
			c.overflow.group = c.groupOf(groupKey{overflow: true}, kv)
		}
		return c.overflow
	}
	proc := c.deps.Processes.Lookup(sk.Tgid).Attributes()
	a := c.buildAttrsFrom(append(append([]attribute.KeyValue{}, proc...), keyAttributes(sk)...))
	a.key = sk
	gk := groupKey{key: sk}
	if !c.cfg.PeerHistograms {
		gk.key = tcpConnKey{Tgid: sk.Tgid, Direction: sk.Direction}
	}
	a.group = c.groupOf(gk, append(append([]attribute.KeyValue{}, proc...), groupAttributes(gk.key, c.cfg.PeerHistograms)...))
	c.shared[sk] = a
	return a
}

// groupOf returns the histogram series gk, made of kv if new, with one
// more reference; c.mu is held.
func (c *Collector) groupOf(gk groupKey, kv []attribute.KeyValue) *histGroup {
	g := c.groups[gk]
	if g == nil {
		g = &histGroup{set: attribute.NewSet(kv...), key: gk}
		c.groups[gk] = g
	}
	g.refs++
	return g
}

// forget drops a series from the shared ones and gives it back to the
// budget; c.mu is held.
func (c *Collector) forget(a *seriesAttrs) {
	delete(c.shared, a.key)
	// Its group's last series gone (they share its owner), the group
	// goes too: its values were reported.
	if g := a.group; g != nil && a != c.overflow {
		if g.refs--; g.refs <= 0 {
			delete(c.groups, g.key)
		}
	}
	if b := c.deps.SeriesBudget; b != nil && a != c.overflow {
		b.Release(Name, a.key.Tgid, 1)
	}
}

// unref drops kernel key k's reference to its series, keeping what it
// counted (sum, and its histogram h if any) in the series; c.mu is held.
// A series without kernel series left is forgotten once its owner is gone
// (forgetIdle).
func (c *Collector) unref(k tcpConnKey, sum *tcpConnCounters, h *tcpConnHist) {
	a, ok := c.series[k]
	if !ok {
		return
	}
	delete(c.series, k)
	if sum != nil {
		addCounters(&a.carried, sum)
	}
	if h != nil {
		addHist(&a.group.carried, h)
	}
	a.refs--
	switch {
	case a.refs > 0:
	case a.key.Tgid == k.Tgid:
		// Its own process's series (not shared): that process is gone.
		c.forget(a)
	default:
		// Also the budget's overflow series (owner 0, always alive):
		// what it counted stays reported.
		c.idle[a] = struct{}{}
	}
}

// forgetIdle forgets the series that no kernel series feeds any more and
// whose owner is gone: their last values were reported; c.mu is held.
func (c *Collector) forgetIdle() {
	for a := range c.idle {
		if a.refs > 0 {
			delete(c.idle, a)
			continue
		}
		if !c.deps.Processes.Alive(a.key.Tgid) {
			delete(c.idle, a)
			c.forget(a)
		}
	}
}

func addCounters(dst, src *tcpConnCounters) {
	dst.Opened += src.Opened
	dst.Closed += src.Closed
	for f := range dst.Failed {
		dst.Failed[f] += src.Failed[f]
	}
	dst.BytesSent += src.BytesSent
	dst.BytesReceived += src.BytesReceived
	dst.Retransmits += src.Retransmits
	dst.ResetsSent += src.ResetsSent
	dst.ResetsReceived += src.ResetsReceived
}

// buildAttrsFrom makes a series of the attributes kv.
func (c *Collector) buildAttrsFrom(kv []attribute.KeyValue) *seriesAttrs {
	set := attribute.NewSet(kv...)
	with := func(extra attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(append(kv[:len(kv):len(kv)], extra)...))
	}
	a := &seriesAttrs{
		set:      set,
		obsBase:  metric.WithAttributeSet(set),
		sent:     with(keyIODirection.String("transmit")),
		received: with(keyIODirection.String("receive")),
	}
	for i := range a.failed {
		a.failed[i] = with(keyErrorType.String(failureNames[i]))
	}
	return a
}

// kernelCounters sums the kernel's counters over the CPUs.
func (c *Collector) kernelCounters() []uint64 {
	return hook.SumCounters(c.counters, int(tcpTcpCounterCOUNTER_MAX))
}

// Package dns is the DNS collector: every lookup on the host (UDP and TCP,
// any client library), with its question, answer code, answer count,
// resolver, kernel-measured latency and the process that asked. A lookup
// without an answer ends when its client's socket fails (refused,
// unreachable), when the client closes it, or at the timeout, whichever
// comes first.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/exporters/spans"
)

// Name is the collector's name on the command line.
const Name = "dns"

// Config is the DNS collector's section of the agent configuration.
type Config struct {
	// Ports are the DNS server ports watched, over UDP and TCP.
	Ports []uint16
	// Timeout is how long a query waits for its answer before it counts as
	// a timeout and its state is freed.
	Timeout time.Duration
	// MaxNamesPerService bounds the distinct dns.question.name values of
	// each service; further names are folded into OverflowName.
	MaxNamesPerService int
	// MaxPending bounds the queries waiting for an answer (kernel map).
	MaxPending uint32
	// RingBufferBytes sizes the kernel -> agent ring buffer (a power of two).
	RingBufferBytes uint32
	// Spans emits one client span per lookup (off by default).
	Spans bool
	// RetireAfter is how long the series of an exited process keep being
	// reported before they are forgotten.
	RetireAfter time.Duration
	// MaxSeries caps the metric series kept; lookups of series beyond it
	// are recorded in one series marked otel.metric.overflow=true, as the
	// OpenTelemetry SDK does.
	MaxSeries int
	// DurationBuckets are the upper bounds of dns.lookup.duration's
	// buckets, in seconds; the default is what the conventions advise.
	DurationBuckets []float64
}

// DefaultConfig matches the sizes compiled into bpf/dns.c.
func DefaultConfig() Config {
	return Config{
		Ports:              []uint16{53},
		Timeout:            5 * time.Second,
		MaxNamesPerService: 100,
		MaxPending:         16384,
		RingBufferBytes:    2 << 20, // docs/benchmarks.md "Second pass"
		RetireAfter:        2 * time.Minute,
		MaxSeries:          20000,
		DurationBuckets:    slices.Clone(conventionDurationBuckets),
	}
}

// Validate reports a setting that cannot work.
func (c Config) Validate() error {
	if len(c.Ports) == 0 {
		return errors.New("dns.ports must list at least one port")
	}
	for _, p := range c.Ports {
		if p == 0 {
			return errors.New("dns.ports: 0 is not a port")
		}
	}
	if c.MaxSeries < 1 || c.MaxSeries > 1<<20 {
		return fmt.Errorf("dns.max_series must be between 1 and 1048576, got %d", c.MaxSeries)
	}
	if c.Timeout < 10*time.Millisecond || c.Timeout > 10*time.Minute {
		return fmt.Errorf("dns.timeout must be between 10ms and 10m, got %s", c.Timeout)
	}
	if c.MaxNamesPerService < 1 || c.MaxNamesPerService > 100000 {
		return fmt.Errorf("dns.max_names_per_service must be between 1 and 100000, got %d", c.MaxNamesPerService)
	}
	if c.MaxPending < 64 || c.MaxPending > 1<<22 {
		return fmt.Errorf("dns.max_pending must be between 64 and 4194304, got %d", c.MaxPending)
	}
	rb := c.RingBufferBytes
	if rb < 1<<16 || rb > 1<<30 || rb&(rb-1) != 0 {
		return fmt.Errorf("dns.ring_buffer_bytes must be a power of two between 65536 and 1073741824, got %d", rb)
	}
	if err := validBuckets(c.DurationBuckets); err != nil {
		return fmt.Errorf("dns.duration_buckets: %w", err)
	}
	if c.RetireAfter < 0 {
		return fmt.Errorf("dns.retire_after must not be negative, got %s", c.RetireAfter)
	}
	return nil
}

// validBuckets accepts 1 to 64 finite, non-negative, strictly increasing
// bounds.
func validBuckets(b []float64) error {
	if len(b) == 0 || len(b) > 64 {
		return fmt.Errorf("want 1 to 64 bounds, got %d", len(b))
	}
	for i, v := range b {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("bound %v is not a finite duration in seconds", v)
		}
		if i > 0 && v <= b[i-1] {
			return fmt.Errorf("bounds must increase: %v after %v", v, b[i-1])
		}
	}
	return nil
}

// Hooks is the DNS collector's attach plan.
//
// The packet path is the robust one: cgroup_skb programs on the cgroup v2
// root see every socket's packets in every network namespace, whatever the
// client library (glibc, Go's resolver, dig, raw sockets excepted), need no
// kprobes, fentry or per-interface setup, and carry the socket (its cookie)
// for matching and attribution. Process attribution comes from cgroup
// sock_addr programs (connect, sendmsg) that run in the calling process;
// without them lookups are still seen and credited to unknown_service.
// sock_release frees attribution state early (the map is LRU anyway) and
// ends the queries a client gave up on when it closes their socket; without
// it they end at the agent's timeout.
//
// Socket errors (errors hook): the inet_sk_error_report tracepoint (Linux
// 5.14+) sees a connected UDP socket get an ICMP error (port unreachable:
// "connection refused") or a TCP socket a reset, so such a lookup ends
// then with its error. Without it (older kernels) the client's close ends it
// as a timeout.
//
// Fallback (no cgroup v2): the net:net_dev_queue and net:netif_receive_skb
// tracepoints, which every packet leaving or entering a device passes. The
// socket is not known there: queries and answers are matched by network
// namespace, client and server address and port and DNS id, and the process
// is the one sending (current task at net_dev_queue, which for UDP and for
// TCP data written by the process is the client). Forwarded DNS traffic is
// seen too on that path, credited to whatever ran.
func Hooks() []hook.Hook {
	cg := hook.Cgroup
	return []hook.Hook{
		{Name: "packets", Links: []hook.Link{
			{Mode: hook.ModeCgroupSkb, Programs: []hook.Program{
				{Name: dnsProgDnsEgress, Attach: cg(ebpf.AttachCGroupInetEgress)},
				{Name: dnsProgDnsIngress, Attach: cg(ebpf.AttachCGroupInetIngress)},
			}},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{
				{Name: dnsProgDnsDevQueueTp, Attach: hook.Tracepoint("net", "net_dev_queue")},
				{Name: dnsProgDnsReceiveTp, Attach: hook.Tracepoint("net", "netif_receive_skb")},
			}},
		}},
		{Name: "owners", Links: []hook.Link{
			{Mode: hook.ModeCgroupSock, Programs: []hook.Program{
				{Name: dnsProgDnsConnect4, Attach: cg(ebpf.AttachCGroupInet4Connect)},
				{Name: dnsProgDnsConnect6, Attach: cg(ebpf.AttachCGroupInet6Connect)},
				{Name: dnsProgDnsSendmsg4, Attach: cg(ebpf.AttachCGroupUDP4Sendmsg)},
				{Name: dnsProgDnsSendmsg6, Attach: cg(ebpf.AttachCGroupUDP6Sendmsg)},
			}},
		}},
		{Name: "release", Links: []hook.Link{
			{Mode: hook.ModeCgroupSock, Programs: []hook.Program{
				{Name: dnsProgDnsSockRelease, Attach: cg(ebpf.AttachCgroupInetSockRelease)},
			}},
		}},
		{Name: "errors", Links: []hook.Link{
			{Mode: hook.ModeTPBTF, Programs: []hook.Program{
				{Name: dnsProgDnsSkError, Attach: hook.Tracing()},
			}},
		}},
	}
}

// Collector is the DNS collector.
type Collector struct {
	deps collectors.Deps
	cfg  Config
	log  *slog.Logger

	loader   *hook.Loader
	reader   *ringbuf.Reader
	counters *ebpf.Map
	pendMap  *ebpf.Map
	drops    *ebpf.Map

	// packetMode is how the packet hook attached; DNS over TCP is only
	// seen reliably on cgroup_skb (the tracepoint path reads the linear
	// part of an skb, and TCP data usually sits in page fragments).
	packetMode hook.Mode
	// errorsAttached: socket errors end lookups (else their close does).
	// releaseAttached: a client's close ends its lookups. Both only on
	// cgroup_skb, where queries are keyed by socket cookie.
	errorsAttached, releaseAttached bool

	inst instruments
	reg  metric.Registration
	// emitter makes the spans (nil: off)
	emitter spans.Emitter

	// Owned by the Run goroutine.
	st *state

	// Read by the metrics callback.
	stats stats

	start time.Time

	closeOnce sync.Once
}

// stats are the agent-side counters, readable from any goroutine.
type stats struct {
	received          atomic.Uint64 // ring buffer records read
	malformedRecords  atomic.Uint64 // records too short to decode
	queriesParsed     atomic.Uint64
	queriesBad        atomic.Uint64
	responsesParsed   atomic.Uint64
	responsesBad      atomic.Uint64
	timeouts          atomic.Uint64 // no answer by the agent's timeout
	clientGaveUp      atomic.Uint64 // no answer when the client closed its socket
	failed            atomic.Uint64 // ended by a socket error (refused, unreachable, reset)
	socketErrors      atomic.Uint64 // error records read
	closes            atomic.Uint64 // close records read
	unmatched         atomic.Uint64 // answers the agent had no query for
	answerLost        atomic.Uint64 // answered in the kernel, record dropped there
	folded            atomic.Uint64
	seriesOverflow    atomic.Uint64 // lookups recorded in the overflow series
	pendingFullAgent  atomic.Uint64
	orphans           atomic.Uint64
	pendingAgentCount atomic.Int64
}

// New returns an unloaded DNS collector.
func New(deps collectors.Deps, cfg Config) *Collector {
	c := &Collector{deps: deps, cfg: cfg, log: deps.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Name implements collectors.Collector.
func (c *Collector) Name() string { return Name }

// portBitmap is the dns_ports variable of bpf/dns.c.
func portBitmap(ports []uint16) [1024]uint64 {
	var bm [1024]uint64
	for _, p := range ports {
		bm[p>>6] |= 1 << (p & 63)
	}
	return bm
}

// Load loads the maps, attaches the hooks and creates the instruments. The
// packet hook is required; without the owner hooks lookups are credited to
// unknown_service.
func (c *Collector) Load(ctx context.Context) error {
	if err := c.cfg.Validate(); err != nil {
		return err
	}
	spec, err := loadDns()
	if err != nil {
		return fmt.Errorf("loading dns object: %w", err)
	}
	v, ok := spec.Variables[dnsVarDnsPorts]
	if !ok {
		return errors.New("dns object has no dns_ports variable")
	}
	if err := v.Set(portBitmap(c.cfg.Ports)); err != nil {
		return fmt.Errorf("setting dns ports: %w", err)
	}
	opts := c.deps.Attach
	opts.MaxEntries = map[string]uint32{
		dnsMapPending: c.cfg.MaxPending,
		dnsMapEvents:  c.cfg.RingBufferBytes,
	}
	c.loader, err = hook.NewLoader(Name, spec, opts, c.deps.Probes, c.deps.Hooks, c.log)
	if err != nil {
		return err
	}
	for _, h := range Hooks() {
		st, err := c.loader.Attach(h)
		switch h.Name {
		case "packets":
			c.packetMode = st.Mode
		case "errors":
			c.errorsAttached = st.Attached()
		case "release":
			c.releaseAttached = st.Attached()
		}
		if err != nil {
			if h.Name == "packets" {
				c.loader.Close()
				return err
			}
			c.log.Warn("running degraded: a hook could not be attached", "hook", h.Name, "error", err)
		}
	}
	c.counters = c.loader.Map(dnsMapCounters)
	c.pendMap = c.loader.Map(dnsMapPending)
	c.drops = c.loader.Map(dnsMapDropsByProc)
	c.reader, err = ringbuf.NewReader(c.loader.Map(dnsMapEvents))
	if err != nil {
		c.loader.Close()
		return fmt.Errorf("opening dns events ring buffer: %w", err)
	}
	if err := c.createInstruments(); err != nil {
		c.Close()
		return err
	}
	if c.cfg.Spans && c.deps.TracerProvider != nil {
		c.emitter = spans.EmitterOf(c.deps.TracerProvider.Tracer("github.com/otelbee/otelbee/collectors/dns"))
	}
	c.st = newState(c)
	c.start = time.Now()
	if c.deps.Producers != nil {
		c.deps.Producers.Add(c)
	}
	return nil
}

// endsEarly tells whether lookups without an answer can end before the
// timeout: at their socket's close (and error, with errorsAttached).
func (c *Collector) endsEarly() bool {
	return c.packetMode == hook.ModeCgroupSkb && c.releaseAttached
}

// sweepEvery is how often pending queries are checked for timeouts.
func (c *Collector) sweepEvery() time.Duration {
	return min(max(c.cfg.Timeout/5, 20*time.Millisecond), time.Second)
}

// drainEvery is how often the ring buffer is drained. The kernel wakes the
// reader only when the ring is an eighth full (bpf/dns.c submit_flags), so
// records are read in batches; latency is measured in the kernel, so the
// delay costs no accuracy.
const drainEvery = 50 * time.Millisecond

// Run drains the ring buffer until Close closes the reader or ctx ends.
// Timeouts are swept in the same goroutine, between reads, so the pending
// state needs no lock.
func (c *Collector) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.reader.Close() })
	defer stop()
	var (
		rec ringbuf.Record
		ev  event
	)
	every := c.sweepEvery()
	nextSweep := time.Now().Add(every)
	c.reader.SetDeadline(time.Now().Add(drainEvery))
	var n uint
	for {
		err := c.reader.ReadInto(&rec)
		if err == nil {
			c.stats.received.Add(1)
			if decodeEvent(rec.RawSample, &ev) != nil {
				c.stats.malformedRecords.Add(1)
			} else {
				c.st.handle(ctx, &ev)
			}
			// A ring that never runs dry must not starve the sweep.
			if n++; n%1024 == 0 {
				if now := time.Now(); !now.Before(nextSweep) {
					c.st.sweep(ctx, monotonicNow())
					nextSweep = now.Add(every)
				}
			}
			continue
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The ring is drained (ReadInto returns this only then).
		case errors.Is(err, os.ErrClosed):
			return nil
		default:
			return fmt.Errorf("reading dns events: %w", err)
		}
		now := time.Now()
		if !now.Before(nextSweep) {
			c.st.sweep(ctx, monotonicNow())
			nextSweep = now.Add(every)
		}
		c.reader.SetDeadline(now.Add(drainEvery))
	}
}

// monotonicNow is CLOCK_MONOTONIC in nanoseconds, bpf_ktime_get_ns's clock.
func monotonicNow() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Close detaches the programs and ends Run. Idempotent.
func (c *Collector) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.reg != nil {
			c.reg.Unregister()
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
	k := hook.SumCounters(c.counters, int(dnsDnsCounterCOUNTER_MAX))
	rbDropped := k[dnsDnsCounterCOUNTER_DROP_QUERY_RINGBUF] + k[dnsDnsCounterCOUNTER_DROP_RESPONSE_RINGBUF] +
		k[dnsDnsCounterCOUNTER_DROP_END_RINGBUF]
	submitted := k[dnsDnsCounterCOUNTER_QUERIES_SUBMITTED] + k[dnsDnsCounterCOUNTER_RESPONSES_SUBMITTED] +
		k[dnsDnsCounterCOUNTER_ENDS_SUBMITTED]
	received := c.stats.received.Load()
	parsed := c.stats.queriesParsed.Load() + c.stats.responsesParsed.Load() +
		c.stats.socketErrors.Load() + c.stats.closes.Load() // nothing to parse: delivered as read
	bad := c.stats.queriesBad.Load() + c.stats.responsesBad.Load() + c.stats.malformedRecords.Load()
	return []collectors.StageStats{
		{Stage: "ringbuf", Produced: submitted + rbDropped, Delivered: received, Dropped: rbDropped},
		{Stage: "parse", Produced: received, Delivered: parsed, Dropped: bad},
		{Stage: "pending_map", Dropped: k[dnsDnsCounterCOUNTER_DROP_PENDING_FULL] + c.stats.pendingFullAgent.Load()},
		{Stage: "socks_map", Dropped: k[dnsDnsCounterCOUNTER_DROP_SOCKS_FULL]},
	}
}

// PendingInKernel counts the queries waiting for an answer in the kernel map.
func (c *Collector) PendingInKernel() (int, error) {
	if c.pendMap == nil {
		return 0, nil
	}
	var (
		k dnsPendingKey
		n int
	)
	it := c.pendMap.Iterate()
	var v dnsPendingVal
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}

// portsString is for logs.
func portsString(ports []uint16) string {
	s := slices.Clone(ports)
	slices.Sort(s)
	return fmt.Sprint(s)
}

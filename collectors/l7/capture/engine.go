// Package capture is the L7 layer's user-space half: it loads the kernel's
// protocol-neutral capture (bpf/l7.c) once for every L7 protocol the agent
// runs, drains its ring buffer, decodes the records (layouts from the
// bpf2go-generated types), owns the connection table and its housekeeping,
// keeps the clocks, accounts for drops, and hands each connection's records
// in order to the handler of the protocol the kernel decided for it.
// Protocols written against package l7 get their parser per connection, a
// Sink that records their exchanges on the metrics they declare (one series
// table: sink.go) and spans when sampled.
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/collectors/l7"
	tlsc "github.com/otelbee/otelbee/collectors/tls"
)

// Hooks is the attach plan: one set of programs for every protocol, each
// hook taking the best data source the kernel allows. Kernel functions
// first (fentry/fexit, then kprobes: bpf/l7/kfunc.h): the system call
// functions for the lifecycle, the socket layer's send and receive
// functions for the data, so that no syscalls:* tracepoint is attached,
// which would put every system call of every process on the kernel's slow
// path. For the data, between fentry and kprobes, the socket tracepoints
// (tp_btf sock_send_length/sock_recv_length, 6.5+: bpf/l7/socktp.h): one
// program per socket call, none on other reads and writes, where a kprobe
// pair costs two runs and the calls map. Then the syscall tracepoints: a read/write program at the syscall's
// exit reading the call's arguments from the task's saved registers
// (bpf_task_pt_regs, 5.15+), else the pairs (entry remembers the buffer,
// exit knows the length). Socket tracking (accept, connect, close) is
// required; send and recv lose only their traffic when they fail. Each of
// send and recv is one source or none (two sources would see each call
// twice); they and the lifecycle hooks may take different sources, since
// every source tracks connections into the same table.
func Hooks() []hook.Hook {
	tp := func(name string) hook.AttachFunc { return hook.Tracepoint("syscalls", name) }
	tr := hook.Tracing()
	sys := func(name string) string { return syscallPrefix + name }
	// sendfile before 6.5 went through tcp_sendpage and unix_stream_sendpage
	// (from 6.5 a sendmsg of kernel pages); the send links with them come
	// first, those without them serve the kernels that removed them.
	sendpage := func(fentry bool) []hook.Program {
		req, ureq := hook.KernelFunctionExists("tcp_sendpage"), hook.KernelFunctionExists("unix_stream_sendpage")
		if fentry {
			return []hook.Program{
				{Name: l7ProgL7SendpageFentry, Attach: tr, Requires: req},
				{Name: l7ProgL7UsendpageFentry, Attach: tr, Requires: ureq},
				{Name: l7ProgL7SendpageFexit, Attach: tr},
				{Name: l7ProgL7UsendpageFexit, Attach: tr},
			}
		}
		return []hook.Program{
			{Name: l7ProgL7SendpageKprobe, Attach: hook.Kprobe("tcp_sendpage"), Requires: req},
			{Name: l7ProgL7UsendpageKprobe, Attach: hook.Kprobe("unix_stream_sendpage"), Requires: ureq},
			{Name: l7ProgL7SendpageKretprobe, Attach: hook.Kretprobe("tcp_sendpage")},
			{Name: l7ProgL7UsendpageKretprobe, Attach: hook.Kretprobe("unix_stream_sendpage")},
		}
	}
	sendF := []hook.Program{
		{Name: l7ProgL7SendFentry, Attach: tr}, {Name: l7ProgL7SendFexit, Attach: tr},
		{Name: l7ProgL7UsendFentry, Attach: tr}, {Name: l7ProgL7UsendFexit, Attach: tr},
	}
	sendK := []hook.Program{
		{Name: l7ProgL7SendKprobe, Attach: hook.Kprobe("tcp_sendmsg")},
		{Name: l7ProgL7SendKretprobe, Attach: hook.Kretprobe("tcp_sendmsg")},
		{Name: l7ProgL7UsendKprobe, Attach: hook.Kprobe("unix_stream_sendmsg")},
		{Name: l7ProgL7UsendKretprobe, Attach: hook.Kretprobe("unix_stream_sendmsg")},
	}
	recvF := []hook.Program{
		{Name: l7ProgL7Recv4Fentry, Attach: tr}, {Name: l7ProgL7Recv4Fexit, Attach: tr},
		{Name: l7ProgL7Recv6Fentry, Attach: tr}, {Name: l7ProgL7Recv6Fexit, Attach: tr},
		{Name: l7ProgL7UrecvFentry, Attach: tr}, {Name: l7ProgL7UrecvFexit, Attach: tr},
	}
	recvK := []hook.Program{
		{Name: l7ProgL7Recv4Kprobe, Attach: hook.Kprobe("inet_recvmsg")},
		{Name: l7ProgL7Recv4Kretprobe, Attach: hook.Kretprobe("inet_recvmsg")},
		{Name: l7ProgL7Recv6Kprobe, Attach: hook.Kprobe("inet6_recvmsg")},
		{Name: l7ProgL7Recv6Kretprobe, Attach: hook.Kretprobe("inet6_recvmsg")},
		{Name: l7ProgL7UrecvKprobe, Attach: hook.Kprobe("unix_stream_recvmsg")},
		{Name: l7ProgL7UrecvKretprobe, Attach: hook.Kretprobe("unix_stream_recvmsg")},
	}
	// the syscall tracepoints of a direction: single programs, else pairs
	type rw struct{ call, one, enter, exit string }
	syscalls := func(calls ...rw) []hook.Link {
		single := hook.Link{Mode: hook.ModeTracepoint}
		pairs := hook.Link{Mode: hook.ModeTracepoint}
		for _, c := range calls {
			single.Programs = append(single.Programs, hook.Program{Name: c.one, Attach: tp("sys_exit_" + c.call), Requires: haveTaskPtRegs})
			pairs.Programs = append(pairs.Programs,
				hook.Program{Name: c.enter, Attach: tp("sys_enter_" + c.call)},
				hook.Program{Name: c.exit, Attach: tp("sys_exit_" + c.call)})
		}
		if os.Getenv("OTELBEE_L7_SYSCALL_PAIRS") != "" {
			// measurements and the kernel matrix: the pairs' path where
			// the single programs would load
			return []hook.Link{pairs}
		}
		return []hook.Link{single, pairs}
	}
	lifecycle := func(name string, fentry, kprobe []hook.Program, tracepoint ...hook.Program) hook.Hook {
		return hook.Hook{Name: name, Links: []hook.Link{
			{Mode: hook.ModeFentry, Programs: fentry},
			{Mode: hook.ModeKprobe, Programs: kprobe},
			{Mode: hook.ModeTracepoint, Programs: tracepoint},
		}}
	}
	return []hook.Hook{
		{Name: "accept", Links: []hook.Link{
			{Mode: hook.ModeFentry, Programs: []hook.Program{
				{Name: l7ProgL7Accept4Fexit, Attach: tr}, {Name: l7ProgL7AcceptFexit, Attach: tr},
			}},
			{Mode: hook.ModeFentry, Programs: []hook.Program{{Name: l7ProgL7SysAccept4Fexit, Attach: tr}}},
			{Mode: hook.ModeKprobe, Programs: []hook.Program{
				{Name: l7ProgL7Accept4Kretprobe, Attach: hook.Kretprobe(sys("accept4"))},
				{Name: l7ProgL7AcceptKretprobe, Attach: hook.Kretprobe(sys("accept"))},
			}},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{
				{Name: l7ProgHttpAccept4Exit, Attach: tp("sys_exit_accept4")},
				{Name: l7ProgHttpAcceptExit, Attach: tp("sys_exit_accept")},
			}},
		}},
		{Name: "connect", Links: []hook.Link{
			{Mode: hook.ModeFentry, Programs: []hook.Program{{Name: l7ProgL7ConnectFexit, Attach: tr}}},
			{Mode: hook.ModeFentry, Programs: []hook.Program{{Name: l7ProgL7SysConnectFexit, Attach: tr}}},
			{Mode: hook.ModeKprobe, Programs: []hook.Program{
				{Name: l7ProgL7ConnectKprobe, Attach: hook.Kprobe(sys("connect"))},
				{Name: l7ProgL7ConnectKretprobe, Attach: hook.Kretprobe(sys("connect"))},
			}},
			{Mode: hook.ModeTracepoint, Programs: []hook.Program{
				{Name: l7ProgHttpConnectEnter, Attach: tp("sys_enter_connect")},
				{Name: l7ProgHttpConnectExit, Attach: tp("sys_exit_connect")},
			}},
		}},
		lifecycle("close",
			[]hook.Program{{Name: l7ProgL7CloseFentry, Attach: tr}},
			[]hook.Program{{Name: l7ProgL7CloseKprobe, Attach: hook.Kprobe(sys("close"))}},
			hook.Program{Name: l7ProgHttpCloseEnter, Attach: tp("sys_enter_close")}),
		{Name: "fork", Links: []hook.Link{{Mode: hook.ModeTracepoint, Programs: []hook.Program{
			{Name: l7ProgHttpFork, Attach: hook.Tracepoint("sched", "sched_process_fork")},
		}}}},
		{Name: "send", Links: append([]hook.Link{
			{Mode: hook.ModeFentry, Programs: append(sendpage(true), sendF...)},
			{Mode: hook.ModeFentry, Programs: sendF},
			{Mode: hook.ModeTPBTF, Programs: []hook.Program{{Name: l7ProgL7SockSend, Attach: tr, Requires: sockTracepoints}}},
			{Mode: hook.ModeKprobe, Programs: append(sendpage(false), sendK...)},
			{Mode: hook.ModeKprobe, Programs: sendK},
		}, syscalls(
			rw{"write", l7ProgHttpWriteExit1, l7ProgHttpWriteEnter, l7ProgHttpWriteExit},
			rw{"sendto", l7ProgHttpSendtoExit1, l7ProgHttpSendtoEnter, l7ProgHttpSendtoExit},
			rw{"writev", l7ProgHttpWritevExit1, l7ProgHttpWritevEnter, l7ProgHttpWritevExit},
			rw{"sendmsg", l7ProgHttpSendmsgExit1, l7ProgHttpSendmsgEnter, l7ProgHttpSendmsgExit},
			rw{"sendfile64", l7ProgHttpSendfile64Exit1, l7ProgHttpSendfileEnter, l7ProgHttpSendfileExit},
		)...)},
		{Name: "recv", Links: append([]hook.Link{
			{Mode: hook.ModeFentry, Programs: recvF},
			{Mode: hook.ModeTPBTF, Programs: []hook.Program{{Name: l7ProgL7SockRecv, Attach: tr, Requires: sockTracepoints}}},
			{Mode: hook.ModeKprobe, Programs: recvK},
		}, syscalls(
			rw{"read", l7ProgHttpReadExit1, l7ProgHttpReadEnter, l7ProgHttpReadExit},
			rw{"recvfrom", l7ProgHttpRecvfromExit1, l7ProgHttpRecvfromEnter, l7ProgHttpRecvfromExit},
			rw{"readv", l7ProgHttpReadvExit1, l7ProgHttpReadvEnter, l7ProgHttpReadvExit},
			rw{"recvmsg", l7ProgHttpRecvmsgExit1, l7ProgHttpRecvmsgEnter, l7ProgHttpRecvmsgExit},
		)...)},
	}
}

// sockTracepoints says whether the socket tracepoints see every call on a
// socket (bpf/l7/socktp.h): they exist (6.3+) and sendfile goes through
// them (6.5+: before, it went through tcp_sendpage and
// unix_stream_sendpage, which they do not see).
func sockTracepoints() error {
	if err := hook.TracepointExists("sock", "sock_send_length")(); err != nil {
		return err
	}
	if hook.KernelFunctionExists("tcp_sendpage")() == nil {
		return fmt.Errorf("%w: sendfile goes through tcp_sendpage here, which the socket tracepoints do not see (before 6.5)", hook.ErrUnavailable)
	}
	return nil
}

// haveTaskPtRegs says whether tracepoint programs may read a task's saved
// registers. Asked before loading a single-program hook: a kernel without
// the helpers would reject it only after verifying all of it (tens of
// seconds on a slow machine), then verify the pair again.
func haveTaskPtRegs() error {
	for _, fn := range []asm.BuiltinFunc{asm.FnGetCurrentTaskBtf, asm.FnTaskPtRegs} {
		if err := features.HaveProgramHelper(ebpf.TracePoint, fn); err != nil {
			return fmt.Errorf("tracepoint programs cannot call %v: %w", fn, err)
		}
	}
	return nil
}

// syscallPrefix names the system call functions the kernel-function
// source's lifecycle programs attach to (their sections say the same).
var syscallPrefix = map[string]string{"amd64": "__x64_sys_", "arm64": "__arm64_sys_"}[runtime.GOARCH]

var requiredHooks = map[string]bool{"accept": true, "connect": true, "close": true}

// afUnix is AF_UNIX, as the kernel reports a connection's family.
const afUnix = 1

// readPollInterval is the longest a record waits in the ring buffer.
const readPollInterval = 100 * time.Millisecond

// housekeepEvery is how often exited processes' connections are forgotten
// and the clock offset re-measured.
const housekeepEvery = 10 * time.Second

type connKey struct {
	tgid, fd uint32
	start    uint64
}

// Conn is one tracked connection: the l7.Conn a parser is handed, and what
// the engine keeps about it.
type Conn struct {
	l7.Conn
	Proto Proto
	Unix  bool // a Unix domain socket: no addresses or ports
	// State is the handler's per-connection state (a parser), set in Open.
	State any

	key connKey
	h   Handler
	// recv is the number each direction's next record has (request,
	// response): the kernel numbers the directions apart (bpf/l7.c
	// conn_info.req_records).
	recv [2]uint32
	// h2Upgrade: an HTTP/2 handler takes an h2c upgrade over; upgrade is
	// the request noted at the 101 (upgrade.go).
	h2Upgrade bool
	upgrade   *pendingUpgrade
}

// Engine is the L7 capture of one agent: one kernel object, one ring
// buffer, one connection table, whichever protocols run on it. Its
// protocols' collectors share it (Acquire, Run, Release).
type Engine struct {
	deps collectors.Deps
	cfg  Config
	log  *slog.Logger
	// SelfComms are the executables whose traffic is the agents' own (set
	// before the first Acquire; nil: SelfComms("otelbee")).
	SelfComms []string

	handlers   [protoMax]Handler
	enabled    uint32 // protocols classified in the kernel (bits by Proto)
	policies   [protoMax]l7.Capture
	clientSide atomic.Uint32 // bits by Proto: policies[p].ClientSide (read by the self-metrics)
	// bits by Proto: policies[p].Multiplexed (read by Handle)
	multiplexed atomic.Uint32

	mu      sync.Mutex // Acquire, Release, Run
	refs    int
	running bool
	done    chan struct{} // closed when Run's drain ends

	loader   *hook.Loader
	tlsMulti bool // the TLS programs are loaded for uprobe_multi links

	// tlsLoadFault, when set (tests), fails the load of the TLS programs
	// it returns an error for, as a verifier rejection would.
	tlsLoadFault func(program string) error
	// tlsAttach, when set (tests), adjusts the TLS attacher's configuration.
	tlsAttach func(*tlsc.AttachConfig)

	reader   *ring
	counters *ebpf.Map
	seen     *seenMarks // nil: seenErr says why (the pick-up is then skipped)
	seenErr  error
	selfReg  metric.Registration
	start    time.Time
	clockNs  atomic.Int64 // wall - monotonic, ns

	// Owned by the Run goroutine.
	conns  map[connKey]*Conn
	free   []*Conn
	nextID uint64
	rec    l7.Record // the record handed to adapted parsers

	received   atomic.Uint64
	malformed  atomic.Uint64
	orphans    atomic.Uint64 // data of connections whose open was lost
	connsOver  atomic.Uint64
	records    [protoMax]atomic.Uint64 // data records received, by protocol
	unhandled  atomic.Uint64           // records of a protocol no handler took
	handedOver atomic.Uint64           // h2c upgrades handed from HTTP/1 to HTTP/2
	// selfPickedUp: the agents' connections open at the start, left out
	selfPickedUp atomic.Uint64

	tls *tlsState // the HTTPS plaintext source (tls.go), when on

	sources map[string]hook.Mode // each hook's attached mode ("": none), set at load
}

// Source is the mode a hook of Hooks() attached in ("" before the load or
// when it did not attach): for "send" and "recv", the data source.
func (e *Engine) Source(hookName string) hook.Mode { return e.sources[hookName] }

// kernelData reports whether some data hook runs on kernel functions or the
// socket tracepoints, which find (or check) a connection by its socket.
func (e *Engine) kernelData() bool {
	kf := func(m hook.Mode) bool { return m == hook.ModeFentry || m == hook.ModeKprobe || m == hook.ModeTPBTF }
	return kf(e.sources["send"]) || kf(e.sources["recv"])
}

// socketsOfExisting runs the kernel's iterator over every process's
// descriptors that gives the connections pickUpExisting put in the table
// their socket (bpf/l7/kfunc.h l7_existing_socks): the kernel-function
// source finds connections by socket, /proc gives only the descriptor.
func (e *Engine) socketsOfExisting() error {
	prog, err := e.loader.LoadProgram(l7ProgL7ExistingSocks)
	if err != nil {
		return err
	}
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attaching the descriptor iterator: %w", err)
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return fmt.Errorf("running the descriptor iterator: %w", err)
	}
	defer rd.Close()
	if _, err := io.Copy(io.Discard, rd); err != nil {
		return fmt.Errorf("running the descriptor iterator: %w", err)
	}
	return nil
}

// KernelFunctions reports whether the layer takes its data from kernel
// functions (fentry or kprobes) rather than from syscall tracepoints.
func (e *Engine) KernelFunctions() bool {
	kf := func(m hook.Mode) bool { return m == hook.ModeFentry || m == hook.ModeKprobe }
	return kf(e.sources["send"]) && kf(e.sources["recv"])
}

// NewEngine returns an unloaded engine.
func NewEngine(deps collectors.Deps, cfg Config) *Engine {
	e := &Engine{deps: deps, cfg: cfg, log: deps.Logger, conns: map[connKey]*Conn{}}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e
}

// Register makes h the handler of p's connections and enables p's
// classification. Before Run; before the first Acquire unless p was
// enabled already (Enable), for the kernel's classifier is set at load.
func (e *Engine) Register(p Proto, h Handler) {
	if p > ProtoUndecided && p < protoMax {
		e.handlers[p] = h
		e.enabled |= 1 << p
	}
}

// SetCapture makes pol p's capture policy in the kernel: at load, or at
// once when the engine is loaded (it applies to connections decided from
// then on).
func (e *Engine) SetCapture(p Proto, pol l7.Capture) error {
	if p <= ProtoUndecided || p >= protoMax {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policies[p] = pol
	if pol.ClientSide {
		e.clientSide.Or(1 << p)
	} else {
		e.clientSide.And(^uint32(1 << p))
	}
	if pol.Multiplexed {
		e.multiplexed.Or(1 << p)
	} else {
		e.multiplexed.And(^uint32(1 << p))
	}
	if e.loader == nil {
		return nil
	}
	return e.writePolicy(p)
}

// writePolicy writes p's policy into the kernel's proto_policy.
func (e *Engine) writePolicy(p Proto) error {
	pol := e.policies[p]
	v := l7L7Policy{CaptureBytes: uint32(min(max(pol.Bytes, 0), maxCapture))}
	if pol.ClientSide {
		v.Flags |= policyClientSide
	}
	if err := e.loader.Map(l7MapProtoPolicy).Put(uint32(p), v); err != nil {
		return fmt.Errorf("writing the %s capture policy: %w", p, err)
	}
	return nil
}

// The kernel's bounds and flags (bpf/l7.c MAX_CAPTURE, l7/policy.h).
const (
	maxCapture       = 4096
	policyClientSide = 1
)

// Enable makes the kernel classify p from the first Acquire on, before
// its handler registers: an agent enables every L7 protocol it will run,
// then makes and loads their collectors one by one. Records of p before
// its handler registers are counted as unhandled.
func (e *Engine) Enable(p Proto) {
	if p > ProtoUndecided && p < protoMax {
		e.enabled |= 1 << p
	}
}

// Loader is the loaded object (nil before Acquire).
func (e *Engine) Loader() *hook.Loader { return e.loader }

// Counters is the kernel's counter array.
func (e *Engine) Counters() *ebpf.Map { return e.counters }

// Start is when the engine loaded.
func (e *Engine) Start() time.Time { return e.start }

// Acquire loads the kernel side on the first call (every registered
// protocol enabled); later calls share it. Each successful Acquire is paired
// with a Release.
func (e *Engine) Acquire(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refs > 0 {
		e.refs++
		return nil
	}
	if err := e.load(ctx); err != nil {
		return err
	}
	e.refs = 1
	return nil
}

// Release drops one Acquire; the last one detaches everything and ends Run.
func (e *Engine) Release() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refs == 0 {
		return nil
	}
	if e.refs--; e.refs > 0 {
		return nil
	}
	return e.unload()
}

func (e *Engine) protoMask() uint32 { return e.enabled }

func (e *Engine) load(ctx context.Context) error {
	spec, err := loadL7()
	if err != nil {
		return fmt.Errorf("loading the l7 object: %w", err)
	}
	anyFilter := !e.cfg.Include.Empty() || !e.cfg.Exclude.Empty()
	b2u := func(b bool) uint8 {
		if b {
			return 1
		}
		return 0
	}
	self := uint32(os.Getpid())
	if e.cfg.ObserveSelf {
		self = 0
	}
	for name, v := range map[string]any{
		l7VarCaptureBytes:  e.cfg.CaptureBytes,
		l7VarSelfTgid:      self,
		l7VarAnyFilter:     b2u(anyFilter),
		l7VarIncludeComm:   b2u(len(e.cfg.Include.Executables) > 0),
		l7VarIncludePort:   b2u(len(e.cfg.Include.Ports) > 0),
		l7VarIncludeCgroup: b2u(len(e.cfg.Include.Cgroups) > 0),
		l7VarProtoMask:     e.protoMask(),
		l7VarDataRoom:      dataRoom(e.cfg.RingBufferBytes),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	opts := e.deps.Attach
	opts.MaxEntries = map[string]uint32{
		l7MapConns:    e.cfg.MaxConnections,
		l7MapSockKeys: e.cfg.MaxConnections,
		l7MapEvents:   e.cfg.RingBufferBytes,
	}
	// The hooks are registered under the first protocol's collector name
	// ("http" when it runs: --collectors=http reads as it always did).
	owner := "l7"
	for _, h := range e.handlers {
		if n, ok := h.(interface{ Name() string }); ok {
			owner = n.Name()
			break
		}
	}
	e.prepareTLS(spec)
	e.loader, err = hook.NewLoader(owner, spec, opts, e.deps.Probes, e.deps.Hooks, e.log)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		e.loader.Close()
		e.loader = nil
		return err
	}
	if err := e.fillFilters(); err != nil {
		return fail(err)
	}
	if v := spec.Variables[l7VarConnsSeen]; v != nil {
		e.seen, e.seenErr = newSeenMarks(v, e.loader.Map(v.SectionName))
	} else {
		e.seen, e.seenErr = nil, fmt.Errorf("finding the per-process marks: not in the object")
	}
	if err := e.fillSelf(); err != nil {
		return fail(err)
	}
	for p := ProtoHTTP1; p < protoMax; p++ {
		if err := e.writePolicy(p); err != nil {
			return fail(err)
		}
	}
	e.sources = map[string]hook.Mode{}
	for _, h := range Hooks() {
		st, err := e.loader.Attach(h)
		e.sources[h.Name] = st.Mode
		if err != nil {
			if requiredHooks[h.Name] {
				return fail(err)
			}
			e.log.Warn("running degraded: a hook could not be attached", "hook", h.Name, "error", err)
		}
	}
	e.log.Info("l7 data source", "send", e.sources["send"], "recv", e.sources["recv"],
		"lifecycle", e.sources["accept"], "kernel_functions", e.KernelFunctions())
	e.counters = e.loader.Map(l7MapCounters)
	e.startTLS()
	e.reader, err = newRing(e.loader.Map(l7MapEvents))
	if err != nil {
		return fail(err)
	}
	if e.deps.Meter != nil {
		if e.selfReg, err = e.selfMetrics(e.deps.Meter); err != nil {
			e.reader.Close()
			return fail(fmt.Errorf("registering the l7 self-metrics: %w", err))
		}
	}
	e.start = time.Now()
	e.done = make(chan struct{})
	e.running = false
	e.syncClock()
	if e.cfg.PickUpExisting {
		n, err := e.pickUpExisting()
		if err != nil {
			e.log.Warn("connections open before the start are not parsed", "error", err)
		} else {
			e.log.Debug("picked up connections open before the start", "connections", n)
			if n > 0 && e.kernelData() {
				if err := e.socketsOfExisting(); err != nil {
					e.log.Warn("connections open before the start are not parsed: their sockets could not be found for the kernel-function source", "error", err)
				}
			}
		}
	}
	return nil
}

func (e *Engine) unload() error {
	e.closeTLS() // its probes before the programs they run
	if e.selfReg != nil {
		e.selfReg.Unregister()
		e.selfReg = nil
	}
	if e.reader != nil {
		e.reader.Close()
	}
	var err error
	if e.loader != nil {
		err = e.loader.Close()
	}
	return err
}

func (e *Engine) fillFilters() error {
	put := func(m *ebpf.Map, key any, action l7FilterAction) error {
		return m.Put(key, uint8(action))
	}
	for _, f := range []struct {
		filter Filter
		action l7FilterAction
	}{{e.cfg.Include, l7FilterActionFILTER_INCLUDE}, {e.cfg.Exclude, l7FilterActionFILTER_EXCLUDE}} {
		for _, x := range f.filter.Executables {
			if err := put(e.loader.Map(l7MapFilterComm), commKey(x), f.action); err != nil {
				return fmt.Errorf("l7 filter %q: %w", x, err)
			}
		}
		for _, p := range f.filter.Ports {
			if err := put(e.loader.Map(l7MapFilterPort), uint16(p), f.action); err != nil {
				return fmt.Errorf("l7 filter port %d: %w", p, err)
			}
		}
		for _, cg := range f.filter.Cgroups {
			id, err := CgroupID(cg)
			if err != nil {
				return fmt.Errorf("l7 filter: %w", err)
			}
			if err := put(e.loader.Map(l7MapFilterCgroup), id, f.action); err != nil {
				return fmt.Errorf("l7 filter cgroup %s: %w", cg, err)
			}
		}
	}
	return nil
}

// SelfComms are the comm names whose processes are otelbee agents: every
// agent's (executable, "" for none), and this agent's own when it runs under
// another name (so copies of it running renamed are left out too).
func SelfComms(executable string) []string {
	var names []string
	if executable != "" {
		names = append(names, executable)
	}
	if b, err := os.ReadFile("/proc/self/comm"); err == nil {
		if own := strings.TrimSpace(string(b)); own != "" && own != executable {
			names = append(names, own)
		}
	}
	return names
}

// fillSelf marks the agents' executables in the kernel's executable filter:
// their connections are not tracked, and the server side of their client
// connections (a local collector receiving their export) is left out,
// counted as connections ignored for reason "self" (bpf/l7.c, self_ends).
func (e *Engine) fillSelf() error {
	m := e.loader.Map(l7MapFilterComm)
	for _, name := range e.selfNames() {
		if err := m.Put(commKey(name), uint8(l7FilterActionFILTER_SELF)); err != nil {
			return fmt.Errorf("marking the agent's executable %q: %w", name, err)
		}
	}
	return nil
}

// selfNames are the executables whose processes are agents.
func (e *Engine) selfNames() []string {
	if e.SelfComms == nil && !e.cfg.ObserveSelf {
		return SelfComms("otelbee")
	}
	return e.SelfComms
}

// SelfPickedUp is how many connections of the agents open at the start
// were left out (the kernel counts the later ones, CounterConnsSelf).
func (e *Engine) SelfPickedUp() uint64 { return e.selfPickedUp.Load() }

// syncClock measures wall - monotonic, to turn kernel timestamps into time.
func (e *Engine) syncClock() {
	var ts unix.Timespec
	before := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return
	}
	e.clockNs.Store(before.UnixNano() - ts.Nano())
}

// Wall turns a kernel timestamp (CLOCK_MONOTONIC ns) into time.
func (e *Engine) Wall(mono uint64) time.Time {
	return time.Unix(0, int64(mono)+e.clockNs.Load())
}

// Run drains the ring buffer until ctx ends or the last Release. Every
// protocol collector sharing the engine calls it: the first drains, the
// others wait until the drain ends (or their ctx does).
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running || e.reader == nil {
		done := e.done
		e.mu.Unlock()
		if done == nil {
			return nil
		}
		select {
		case <-done:
		case <-ctx.Done():
		}
		return nil
	}
	e.running = true
	e.runTLS(ctx)
	reader, done := e.reader, e.done
	e.mu.Unlock()
	defer close(done)
	return e.drain(ctx, reader)
}

func (e *Engine) drain(ctx context.Context, reader *ring) error {
	stop := context.AfterFunc(ctx, func() { reader.Close() })
	defer stop()
	var r Record
	handle := func(b []byte) {
		e.received.Add(1)
		if err := Decode(b, &r); err != nil {
			e.malformed.Add(1)
			return
		}
		e.Handle(&r)
	}
	housekeep := time.Now().Add(housekeepEvery)
	for {
		// The kernel wakes us only for batches (bpf/l7.c wakeup_flags);
		// readPollInterval bounds how long a lone record waits.
		_, err := reader.read(readPollInterval, handle)
		if err != nil {
			if errors.Is(err, errRingClosed) {
				return nil
			}
			return fmt.Errorf("reading l7 events: %w", err)
		}
		if now := time.Now(); now.After(housekeep) {
			e.housekeeping()
			housekeep = now.Add(housekeepEvery)
		}
	}
}

// Handle applies one record to its connection (the Run goroutine; tests).
func (e *Engine) Handle(r *Record) {
	k := connKey{tgid: r.TGID, fd: r.FD, start: r.StartNs}
	c := e.conns[k]
	if c == nil && r.Type == TypeData && e.loader != nil {
		// The connection's open record was lost: its description is
		// still in the kernel's table.
		var info l7ConnInfo
		if err := e.loader.Map(l7MapConns).Lookup(uint64(r.TGID)<<32|uint64(r.FD), &info); err == nil && info.StartNs == r.StartNs {
			open := *r
			open.Type = TypeOpen
			open.Role, open.Peer, open.PeerPort, open.LocalPort = info.Role, info.Peer, info.PeerPort, info.LocalPort
			open.Local, open.Family, open.Owner = info.Local, info.Family, info.Owner
			open.Proto, open.Source, open.Midstream = Proto(info.Proto), l7.Source(info.Source), info.Midstream != 0
			// the counts before this record (open.ReqRecords and
			// RespRecords are its): nothing lost up to it
			e.Handle(&open)
			c = e.conns[k]
		}
	}
	switch r.Type {
	case TypeOpen:
		h := e.handlerOf(r.Proto)
		if h == nil {
			e.unhandled.Add(1)
			return
		}
		if c == nil {
			if uint32(len(e.conns)) >= e.cfg.MaxConnections {
				e.connsOver.Add(1)
				return
			}
			c = e.newConn(k)
		}
		e.fill(c, r)
		c.h = h
		h.Open(c, r)
	case TypeData:
		if c == nil {
			e.orphans.Add(1)
			return
		}
		if r.Proto < protoMax {
			e.records[r.Proto].Add(1)
		}
		e.sequence(c, r)
		if r.Source != 0 {
			c.Source = r.Source
		}
		if r.Proto == ProtoHTTP2 && c.Proto == ProtoHTTP1 {
			e.handOver(c, r.EnterNs) // h2c: the kernel re-decided it at the 101
		}
		c.h.Data(c, r)
		if c.upgrade != nil {
			c.noteRest(r)
		}
	case TypeClose:
		if c == nil {
			return
		}
		e.lostAtEnd(c, r.RespRecords)
		c.h.End(c, r.ExitNs, r.LostStart, false)
		e.release(c)
	}
}

// lostAtEnd tells c's handler, as its connection ends, that response
// records were lost since the last one received (resp: the kernel's count
// then): the requests waiting lost their answers. When only request
// records were lost, the requests waiting never got an answer: they are
// incomplete (End counts them), not lost.
func (e *Engine) lostAtEnd(c *Conn, resp uint32) {
	if resp > c.recv[1] {
		c.h.Lost(c)
	}
}

func (e *Engine) handlerOf(p Proto) Handler {
	if p < protoMax {
		return e.handlers[p]
	}
	return nil
}

// fill describes c from its open record.
func (e *Engine) fill(c *Conn, r *Record) {
	e.nextID++
	role := l7.RoleClient
	if r.Server() {
		role = l7.RoleServer
	}
	c.Conn = l7.Conn{
		ID:        e.nextID,
		PID:       e.identityOf(r),
		Role:      role,
		Source:    r.Source,
		Midstream: r.Midstream,
	}
	c.Unix = r.Family == afUnix
	if !c.Unix {
		c.Local = netip.AddrPortFrom(netip.AddrFrom16(r.Local).Unmap(), r.LocalPort)
		c.Peer = netip.AddrPortFrom(netip.AddrFrom16(r.Peer).Unmap(), r.PeerPort)
	}
	if c.Source == 0 {
		c.Source = l7.SourceSyscall
	}
	c.Proto = r.Proto
	c.recv = [2]uint32{r.ReqRecords, r.RespRecords}
	c.h2Upgrade = e.handlers[ProtoHTTP2] != nil
	c.upgrade = nil
}

// identityOf is the process a connection's requests are credited to: the
// one that accepted (or connected) it, when a forked child serves it and
// that process still runs. A child forked per connection (ForkingMixIn)
// lives for one request: it would be a new process, often gone before its
// identity is read, for every request.
func (e *Engine) identityOf(r *Record) uint32 {
	if r.Owner != 0 && r.Owner != r.TGID && e.Alive(r.Owner) {
		return r.Owner
	}
	return r.TGID
}

func (e *Engine) newConn(k connKey) *Conn {
	var c *Conn
	if n := len(e.free); n > 0 {
		c = e.free[n-1]
		e.free = e.free[:n-1]
	} else {
		c = &Conn{}
	}
	c.key = k
	e.conns[k] = c
	return c
}

func (e *Engine) release(c *Conn) {
	delete(e.conns, c.key)
	state := c.State
	*c = Conn{State: state} // the handler may reuse its state
	if len(e.free) < 1024 {
		e.free = append(e.free, c)
	}
}

// dataRoom is how much of a ring of ringBytes data records may fill: the
// last sixteenth is kept for open and close records (bpf/l7.c data_room), so
// that a full ring drops data, which is counted and told per connection, and
// not the close record that says where a connection's records end.
func dataRoom(ringBytes uint32) uint32 { return ringBytes - ringBytes/16 }

// Conns is the number of connections in the table.
func (e *Engine) Conns() int { return len(e.conns) }

// housekeeping runs in the Run goroutine: it forgets the connections of
// processes that exited (their descriptors closed without close(2)),
// re-measures the clock offset, and lets every handler retire what exited
// processes left.
func (e *Engine) housekeeping() {
	e.syncClock()
	dead := map[uint32]bool{}
	isDead := func(tgid uint32) bool {
		d, seen := dead[tgid]
		if !seen {
			d = !e.Alive(tgid)
			dead[tgid] = d
		}
		return d
	}
	conns := e.loader.Map(l7MapConns)
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	for k, c := range e.conns {
		if !isDead(k.tgid) {
			continue
		}
		// The process exited: its descriptors closed without close(2), so
		// the kernel's entry is still there. A request start dropped on it
		// was cut off by the exit; then forget the entry.
		kkey := uint64(k.tgid)<<32 | uint64(k.fd)
		var info l7ConnInfo
		lostStart := false
		if err := conns.Lookup(kkey, &info); err == nil && info.StartNs == k.start {
			lostStart = info.LostStart != 0
			e.lostAtEnd(c, info.RespRecords)
			conns.Delete(kkey)
		}
		c.h.End(c, uint64(ts.Nano()), lostStart, true)
		e.release(c)
	}
	now := time.Now()
	for _, h := range e.handlers {
		if h != nil {
			h.Housekeep(isDead, now)
		}
	}
}

// Alive reports whether a process runs.
func (e *Engine) Alive(tgid uint32) bool {
	if e.deps.Processes != nil {
		return e.deps.Processes.Alive(tgid)
	}
	_, err := os.Stat(fmt.Sprintf("/proc/%d", tgid))
	return err == nil
}

// Kernel counter slots (bpf/l7.c enum http_counter).
const (
	CounterEventsSubmitted  = int(l7HttpCounterHC_EVENTS_SUBMITTED)
	CounterDropRingbufFull  = int(l7HttpCounterHC_DROP_RINGBUF_FULL)
	CounterDropConnsFull    = int(l7HttpCounterHC_DROP_CONNS_FULL)
	CounterDropArgsFull     = int(l7HttpCounterHC_DROP_ARGS_FULL)
	CounterSockCallsSkipped = int(l7HttpCounterHC_SOCK_CALLS_SKIPPED)
	// CounterSlots is the counter array's length: the named counters, then
	// per protocol the connections decided and the records dropped.
	// server-side connections given up because their client end records
	// them (l7/policy.h).
	CounterSlots = int(l7HttpCounterHC_MAX) + 3*int(protoMax)
)

func protoConnsSlot(p Proto) int { return int(l7HttpCounterHC_MAX) + int(p) }
func protoDropsSlot(p Proto) int { return int(l7HttpCounterHC_MAX) + int(protoMax) + int(p) }
func protoClientSideSlot(p Proto) int {
	return int(l7HttpCounterHC_MAX) + 2*int(protoMax) + int(p)
}

// PipelineStats are the engine's stages, for the collector that reports
// them (the first protocol's).
func (e *Engine) PipelineStats() []collectors.StageStats {
	k := hook.SumCounters(e.counters, CounterSlots)
	recv := e.received.Load()
	return []collectors.StageStats{
		{
			Stage:     "ringbuf",
			Produced:  k[CounterEventsSubmitted] + k[CounterDropRingbufFull],
			Delivered: recv,
			Dropped:   k[CounterDropRingbufFull],
		},
		{Stage: "decode", Produced: recv, Delivered: recv - e.malformed.Load(), Dropped: e.malformed.Load()},
		{Stage: "conns_map", Dropped: k[CounterDropConnsFull] + e.connsOver.Load()},
		{Stage: "calls_map", Dropped: k[CounterDropArgsFull]},
		// socket calls the socket tracepoints could not attribute to a
		// read/write system call (io_uring, splice, sendmmsg): not captured
		{Stage: "sock_calls", Dropped: k[CounterSockCallsSkipped]},
	}
}

// Orphans is the number of data records whose connection was unknown.
func (e *Engine) Orphans() uint64 { return e.orphans.Load() }

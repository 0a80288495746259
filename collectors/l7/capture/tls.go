package capture

import (
	"context"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/collectors/hook"
	tlsc "github.com/otelbee/otelbee/collectors/tls"
)

// HTTPS in plaintext: the uprobe programs of bpf/l7/tls.h, attached per
// library or executable by the tls attacher (collectors/tls), hand their
// plaintext to the same capture as the syscall programs; records say which
// source they came from (url.scheme https). See docs/tls.md.

// tlsState is the collector's TLS data source, when on.
type tlsState struct {
	attacher *tlsc.Attacher
	reg      metric.Registration // the attacher's metrics
	reg2     metric.Registration // the kernel counters
	counters *ebpf.Map
}

// tlsStack is one TLS stack's uprobe programs, loaded as a set: one that
// fails turns off that stack only.
type tlsStack struct {
	stack tlsc.Stack
	hook  string // its hook status (doctor, otelbee.bpf.program.attached)
	progs func(p *tlsc.Programs) map[string]**ebpf.Program
}

// tlsStacks names each uprobe program of the object by its place in
// tlsc.Programs, per stack.
var tlsStacks = []tlsStack{
	{tlsc.StackOpenSSL, "tls_openssl", func(p *tlsc.Programs) map[string]**ebpf.Program {
		return map[string]**ebpf.Program{
			"tls_ssl_read_enter":      &p.SSLReadEntry,
			"tls_ssl_read_ex_enter":   &p.SSLReadExEntry,
			"tls_ssl_read_exit":       &p.SSLReadReturn,
			"tls_ssl_write_enter":     &p.SSLWriteEntry,
			"tls_ssl_write_ex_enter":  &p.SSLWriteExEntry,
			"tls_ssl_write_exit":      &p.SSLWriteReturn,
			"tls_ssl_handshake_enter": &p.SSLHandshakeEntry,
			"tls_ssl_handshake_exit":  &p.SSLHandshakeReturn,
		}
	}},
	{tlsc.StackGo, "tls_go", func(p *tlsc.Programs) map[string]**ebpf.Program {
		return map[string]**ebpf.Program{
			"tls_go_read_enter":     &p.GoReadEntry,
			"tls_go_read_exit":      &p.GoReadReturn,
			"tls_go_read_copy":      &p.GoReadCopy,
			"tls_go_read_copy_slot": &p.GoReadCopySlot,
			"tls_go_write_enter":    &p.GoWriteEntry,
		}
	}},
}

// tlsPrograms names every uprobe program of the object.
func tlsPrograms(p *tlsc.Programs) map[string]**ebpf.Program {
	out := map[string]**ebpf.Program{}
	for _, s := range tlsStacks {
		for name, dst := range s.progs(p) {
			out[name] = dst
		}
	}
	return out
}

// loadTLSStack loads one stack's programs into progs, all or none.
func (e *Engine) loadTLSStack(s tlsStack, progs *tlsc.Programs) error {
	var set tlsc.Programs
	dsts := s.progs(&set)
	names := make([]string, 0, len(dsts))
	for name := range dsts {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if e.tlsLoadFault != nil {
			if err := e.tlsLoadFault(name); err != nil {
				return fmt.Errorf("loading %s: %w", name, err)
			}
		}
		p, err := e.loader.LoadProgram(name)
		if err != nil {
			return err
		}
		*dsts[name] = p
	}
	for name, dst := range s.progs(progs) {
		*dst = *dsts[name]
	}
	return nil
}

// prepareTLS has the TLS programs loaded for uprobe_multi links where the
// kernel has them (6.6+): a perf-event uprobe's removal holds the kernel's
// event mutex across its grace periods, so hundreds of them are removed one
// after another (about 80 ms each on a 2-core VM, seconds in all, past the
// agent's shutdown deadline); uprobe_multi links are removed concurrently.
func (e *Engine) prepareTLS(spec *ebpf.CollectionSpec) {
	if !e.cfg.TLS.Enabled || features.HaveBPFLinkUprobeMulti() != nil {
		return
	}
	for name := range tlsPrograms(&tlsc.Programs{}) {
		if ps := spec.Programs[name]; ps != nil {
			ps.AttachType = ebpf.AttachTraceUprobeMulti
		}
	}
	e.tlsMulti = true
}

// tlsCookies says whether the kernel has bpf_get_attach_cookie (5.15+),
// which carries an OpenSSL file's gate slot to its programs.
func (e *Engine) tlsCookies() bool {
	return features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetAttachCookie) == nil
}

// startTLS loads the uprobe programs and starts the attacher. TLS that
// cannot be set up leaves the collector running on plaintext HTTP: it is
// logged, never fatal.
func (e *Engine) startTLS() {
	if !e.cfg.TLS.Enabled {
		return
	}
	// Attach cookies (5.15+) carry an OpenSSL file's gate to its
	// programs; without them (5.10) the programs compile the check out.
	progs := tlsc.Programs{Multi: e.tlsMulti, Off: map[tlsc.Stack]bool{}, Cookies: e.tlsCookies()}
	mode := hook.ModeUprobe
	for _, s := range tlsStacks {
		st := hook.Status{Hook: s.hook, Declared: []hook.Mode{mode}}
		if err := e.loadTLSStack(s, &progs); err != nil {
			// That stack's processes are counted as unobserved
			// (program_failed), once per file; the other stacks run.
			e.log.Warn("HTTPS plaintext of one TLS stack unavailable: its uprobe programs could not be loaded",
				"stack", s.stack, "error", err)
			progs.Off[s.stack] = true
			st.Attempts = []hook.Attempt{{Mode: mode, Err: err}}
		} else {
			st.Mode = mode
		}
		e.loader.Record(st)
	}
	// One component per record: the engine's logger carries its first
	// collector's (component=http).
	log := e.log
	if e.deps.RootLogger != nil {
		log = e.deps.RootLogger.With("component", "tls")
	}
	k := &tlsKernel{tgids: e.loader.Map(l7MapTlsTgids), offsets: e.loader.Map(l7MapGoFdOffsets), membio: e.loader.Map(l7MapMembioTgids),
		files: e.loader.Map(l7MapTlsFiles)}
	ac := e.cfg.TLS.AttachConfig()
	if e.tlsAttach != nil {
		e.tlsAttach(&ac)
	}
	a, err := tlsc.NewAttacher(ac, progs, e.deps.Processes, k, log)
	if err != nil {
		e.log.Warn("HTTPS plaintext unavailable", "error", err)
		return
	}
	if err := a.Start(); err != nil {
		e.log.Warn("HTTPS plaintext: running processes not instrumented (new ones are)", "error", err)
	}
	st := &tlsState{attacher: a, counters: e.loader.Map(l7MapTlsCounters)}
	if e.deps.Meter != nil {
		if st.reg, err = a.RegisterMetrics(e.deps.Meter); err == nil {
			err = st.registerCounters(e.deps.Meter)
		}
		if err != nil {
			e.log.Warn("TLS self-metrics not registered", "error", err)
		}
	}
	s := a.Stats()
	log.Info("HTTPS plaintext capture on", "files", s.Files, "probes", s.Probes)
	e.tls = st
}

// runTLS follows execs and exits until ctx ends.
func (e *Engine) runTLS(ctx context.Context) {
	if e.tls != nil {
		go e.tls.attacher.Run(ctx) // until ctx ends or the attacher closes
	}
}

// closeTLS removes the probes; before the programs and maps are freed.
func (e *Engine) closeTLS() {
	if e.tls == nil {
		return
	}
	for _, r := range []metric.Registration{e.tls.reg, e.tls.reg2} {
		if r != nil {
			r.Unregister()
		}
	}
	e.tls.attacher.Close()
	e.tls = nil
}

// registerCounters exports the kernel side's counters: plaintext calls
// captured, and those lost by reason.
func (st *tlsState) registerCounters(m metric.Meter) error {
	calls, err := m.Int64ObservableCounter("otelbee.tls.calls", metric.WithUnit("{call}"),
		metric.WithDescription("TLS read and write calls whose plaintext went to the capture."))
	if err != nil {
		return err
	}
	dropped, err := m.Int64ObservableCounter("otelbee.tls.calls.dropped", metric.WithUnit("{call}"),
		metric.WithDescription("TLS read and write calls whose plaintext was lost, by reason."))
	if err != nil {
		return err
	}
	reasons := []struct {
		slot   l7TlsCounter
		reason attribute.Set
	}{
		{l7TlsCounterTLS_DROP_NO_FD, attribute.NewSet(attribute.String("reason", "no_fd"))},
		{l7TlsCounterTLS_DROP_ARGS_FULL, attribute.NewSet(attribute.String("reason", "calls_full"))},
		{l7TlsCounterTLS_DROP_NO_OFFSETS, attribute.NewSet(attribute.String("reason", "no_offsets"))},
		{l7TlsCounterTLS_DROP_BAD_FD, attribute.NewSet(attribute.String("reason", "bad_fd"))},
		{l7TlsCounterTLS_DROP_ATTACHING, attribute.NewSet(attribute.String("reason", "attaching"))},
	}
	membio, err := m.Int64ObservableCounter("otelbee.tls.membio.descriptors", metric.WithUnit("{event}"),
		metric.WithDescription("Memory-BIO TLS programs (Node): SSL objects given the descriptor of the read before their SSL_read (learned), and SSL_reads of a known SSL object that followed a read on another connection (mismatch)."))
	if err != nil {
		return err
	}
	learned := attribute.NewSet(attribute.String("outcome", "learned"))
	mismatch := attribute.NewSet(attribute.String("outcome", "mismatch"))
	st.reg2, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		k := hook.SumCounters(st.counters, int(l7TlsCounterTLS_COUNTER_MAX))
		o.ObserveInt64(calls, int64(k[l7TlsCounterTLS_CALLS]))
		for _, r := range reasons {
			o.ObserveInt64(dropped, int64(k[r.slot]), metric.WithAttributeSet(r.reason))
		}
		o.ObserveInt64(membio, int64(k[l7TlsCounterTLS_MEMBIO_LEARNED]), metric.WithAttributeSet(learned))
		o.ObserveInt64(membio, int64(k[l7TlsCounterTLS_MEMBIO_MISMATCH]), metric.WithAttributeSet(mismatch))
		return nil
	}, calls, dropped, membio)
	return err
}

// tlsKernel keeps the attacher's results in the object's maps.
type tlsKernel struct {
	tgids, offsets *ebpf.Map
	membio         *ebpf.Map // processes the kernel found driving OpenSSL through memory BIOs (l7/tls.h)
	files          *ebpf.Map // OpenSSL files' gates, by their links' attach cookie (l7/tls.h)
}

func (k *tlsKernel) SetFileGate(slot uint32, open bool) error {
	v := uint8(0)
	if open {
		v = 1
	}
	if err := k.files.Put(slot, v); err != nil {
		return fmt.Errorf("setting TLS file gate %d: %w", slot, err)
	}
	return nil
}

func goExe(id tlsc.FileID) l7GoExe {
	return l7GoExe{Ino: id.Ino, Dev: tlsc.KernelDev(id.Dev)}
}

func (k *tlsKernel) SetGoFD(id tlsc.FileID, fd *tlsc.GoFD, readRecvSlot uint64) error {
	if fd == nil {
		return fmt.Errorf("no descriptor offsets")
	}
	s := fd.Sums()
	v := l7GoOffsets{ConnIface: s.Iface, TcpconnFd: s.TCPConnFD, NetfdSysfd: s.NetFDSysfd, ReadRecvSlot: readRecvSlot}
	if err := k.offsets.Put(goExe(id), v); err != nil {
		return fmt.Errorf("storing Go descriptor offsets: %w", err)
	}
	return nil
}

func (k *tlsKernel) DeleteGoFD(id tlsc.FileID) { k.offsets.Delete(goExe(id)) }

func (k *tlsKernel) SetProcess(pid int, on bool) {
	if on {
		k.tgids.Put(uint32(pid), uint8(1))
	} else {
		k.tgids.Delete(uint32(pid))
		// gone: a later process of the same id starts unmarked
		k.membio.Delete(uint32(pid))
	}
}

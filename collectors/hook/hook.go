// Package hook attaches BPF programs through ordered fallback chains.
//
// A collector declares, for each kernel event it needs (a Hook), the ways it
// can be attached (Links), best first: e.g. tp_btf, then fentry, then kprobe,
// then a classic tracepoint. The Loader probes the host, loads the programs of
// the first link that can work, attaches them, and records what it chose and
// why the others were passed over. Each program is loaded on its own, so a
// program the verifier rejects costs its hook, never the whole collector.
package hook

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Mode is a way of attaching a program to the kernel.
type Mode string

const (
	ModeTPBTF      Mode = "tp_btf"
	ModeFentry     Mode = "fentry" // fentry and fexit
	ModeKprobe     Mode = "kprobe" // kprobe and kretprobe
	ModeTracepoint Mode = "tracepoint"
	ModeUprobe     Mode = "uprobe"
	ModeSocket     Mode = "socket_filter"
	ModeCgroupSkb  Mode = "cgroup_skb"  // cgroup_skb ingress/egress on the cgroup v2 root
	ModeCgroupSock Mode = "cgroup_sock" // cgroup sock_addr (connect, sendmsg) and sock programs
)

// Modes lists the modes a user may force, in no particular order.
var Modes = []Mode{ModeTPBTF, ModeFentry, ModeKprobe, ModeTracepoint, ModeUprobe, ModeSocket, ModeCgroupSkb, ModeCgroupSock}

// ParseMode accepts "" or "auto" (no forcing) and the names in Modes.
func ParseMode(s string) (Mode, error) {
	if s == "" || s == "auto" {
		return "", nil
	}
	for _, m := range Modes {
		if string(m) == s {
			return m, nil
		}
	}
	names := make([]string, 0, len(Modes)+1)
	names = append(names, "auto")
	for _, m := range Modes {
		names = append(names, string(m))
	}
	return "", fmt.Errorf("unknown attach mode %q (valid: %s)", s, strings.Join(names, ", "))
}

// AttachFunc attaches a loaded program to its kernel event.
type AttachFunc func(*ebpf.Program) (link.Link, error)

// Program is one BPF program of a link, by its name in the CollectionSpec.
type Program struct {
	Name   string
	Attach AttachFunc
	// Requires, if set, says before loading whether the kernel has the
	// attach point: a program whose CO-RE relocations name a type the
	// kernel lacks (a tracepoint's record) would otherwise be poisoned and
	// read as a verifier rejection instead of "not on this kernel".
	Requires func() error
}

// TracepointProgram is a classic tracepoint program that is only tried on
// kernels that have the tracepoint.
func TracepointProgram(name, group, event string) Program {
	return Program{Name: name, Attach: Tracepoint(group, event), Requires: TracepointExists(group, event)}
}

// TracepointExists checks tracefs for a tracepoint.
func TracepointExists(group, event string) func() error {
	return func() error {
		if _, err := os.Stat(filepath.Join(TracefsPath(), "events", group, event)); err != nil {
			return fmt.Errorf("%w: tracepoint %s:%s does not exist on this kernel", ErrUnavailable, group, event)
		}
		return nil
	}
}

// Link is one way to attach a hook: all its programs attach, or none.
type Link struct {
	Mode     Mode
	Programs []Program
}

// Hook is a kernel event a collector needs, with its fallback chain.
type Hook struct {
	Name  string
	Links []Link
}

// Tracepoint attaches a classic tracepoint program.
func Tracepoint(group, name string) AttachFunc {
	return func(p *ebpf.Program) (link.Link, error) { return link.Tracepoint(group, name, p, nil) }
}

// Tracing attaches fentry, fexit and tp_btf programs; the target is in the
// program's section name.
func Tracing() AttachFunc {
	return func(p *ebpf.Program) (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: p})
	}
}

// Kprobe attaches at the entry of a kernel function.
func Kprobe(symbol string) AttachFunc {
	return func(p *ebpf.Program) (link.Link, error) { return link.Kprobe(symbol, p, nil) }
}

// kretprobeMaxActive is how many calls of a probed function a kretprobe can
// follow at once. The kernel's default (the number of CPUs on kernels built
// without preemption) loses the returns of concurrent blocking calls such
// as tcp_sendmsg.
const kretprobeMaxActive = 4096

// Kretprobe attaches at the return of a kernel function.
func Kretprobe(symbol string) AttachFunc {
	return func(p *ebpf.Program) (link.Link, error) {
		return link.Kretprobe(symbol, p, &link.KprobeOptions{RetprobeMaxActive: kretprobeMaxActive})
	}
}

// Attempt is one link that was tried (or skipped) and why it failed.
type Attempt struct {
	Mode Mode
	Err  error
}

// ProgramStat is what loading one program cost.
type ProgramStat struct {
	Program              string
	Mode                 Mode
	VerifiedInstructions uint32
	LoadTime             time.Duration
}

// Status is the outcome of attaching one hook.
type Status struct {
	Collector string
	Hook      string
	Declared  []Mode // the chain, best first
	Mode      Mode   // the attached link's mode; "" if none attached
	Attempts  []Attempt
	Programs  []ProgramStat
}

// Attached reports whether some link of the hook is attached.
func (s Status) Attached() bool { return s.Mode != "" }

// Options are the user's choices for the loader.
type Options struct {
	// Force moves links of this mode to the front of every chain that
	// declares one; the rest of the chain stays as the fallback. Hooks
	// without such a link are unaffected.
	Force Mode
	// Strict makes Force exclusive: a hook that declares the forced mode
	// uses only its links of that mode and fails rather than fall back. The kernel-matrix
	// tests use it to prove every link on its own.
	Strict bool
	// MaxEntries overrides the size of maps by name (0 keeps the default).
	MaxEntries map[string]uint32
}

var (
	memlockOnce sync.Once
	memlockErr  error
)

// The kernel's BTF, decoded, is ~20 MB of heap: one cache shared by every
// loader (it was one per collector, each decoding it again), dropped by
// ReleaseKernelBTF once the agent has loaded its collectors. A program
// loaded later (a hook attached on demand) decodes it again.
var (
	btfMu    sync.Mutex
	btfCache *btf.Cache
)

func kernelBTF() *btf.Cache {
	btfMu.Lock()
	defer btfMu.Unlock()
	if btfCache == nil {
		btfCache = btf.NewCache()
	}
	return btfCache
}

// ReleaseKernelBTF lets the decoded kernel BTF be collected; loads in
// flight keep theirs until they finish.
func ReleaseKernelBTF() {
	btfMu.Lock()
	btfCache = nil
	btfMu.Unlock()
}

// Loader loads one collector's maps once and attaches its hooks one by one.
type Loader struct {
	collector string
	spec      *ebpf.CollectionSpec
	opts      Options
	probes    *Probes
	logger    *slog.Logger
	registry  *Registry

	mu       sync.Mutex
	maps     map[string]*ebpf.Map
	links    []link.Link
	programs map[string]*ebpf.Program
}

// NewLoader creates the collector's maps. Programs are loaded by Attach.
func NewLoader(collector string, spec *ebpf.CollectionSpec, opts Options, probes *Probes,
	registry *Registry, logger *slog.Logger) (*Loader, error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// to the cgroup, where this is a no-op.
	memlockOnce.Do(func() { memlockErr = rlimit.RemoveMemlock() })
	if memlockErr != nil {
		logger.Warn("could not lift RLIMIT_MEMLOCK; maps may fail to load on kernels before 5.11", "error", memlockErr)
	}
	mapsOnly := spec.Copy()
	for name, ms := range mapsOnly.Maps {
		if n := opts.MaxEntries[name]; n > 0 {
			ms.MaxEntries = n
		}
	}
	mapsOnly.Programs = map[string]*ebpf.ProgramSpec{}
	coll, err := ebpf.NewCollection(mapsOnly)
	if err != nil {
		return nil, fmt.Errorf("creating maps of %s: %w", collector, err)
	}
	l := &Loader{
		collector: collector,
		spec:      mapsOnly,
		opts:      opts,
		probes:    probes,
		logger:    logger,
		registry:  registry,
		maps:      coll.Maps,
		programs:  map[string]*ebpf.Program{},
	}
	// Keep the program specs apart: mapsOnly has the (resized) map specs.
	l.spec.Programs = spec.Programs
	return l, nil
}

// Map returns one of the collector's maps.
func (l *Loader) Map(name string) *ebpf.Map { return l.maps[name] }

// Attach walks the hook's chain and attaches the first link that works.
// The returned Status says what happened; the error is non-nil when no link
// could be attached.
func (l *Loader) Attach(h Hook) (Status, error) {
	st := Status{Collector: l.collector, Hook: h.Name}
	var links []Link
	for _, lk := range h.Links {
		st.Declared = append(st.Declared, lk.Mode)
	}
	links = order(h.Links, l.opts.Force, l.opts.Strict)
	for _, lk := range links {
		err := l.probes.Supports(lk.Mode)
		if err == nil {
			var stats []ProgramStat
			stats, err = l.attachLink(lk)
			if err == nil {
				st.Mode = lk.Mode
				st.Programs = stats
				break
			}
		}
		st.Attempts = append(st.Attempts, Attempt{Mode: lk.Mode, Err: err})
		l.logger.Info("attach mode unavailable, trying the next",
			"hook", h.Name, "mode", lk.Mode, "reason", err)
	}
	if l.registry != nil {
		l.registry.record(st)
	}
	if !st.Attached() {
		return st, fmt.Errorf("attaching %s/%s: no mode of %v worked: %w",
			l.collector, h.Name, st.Declared, joinAttempts(st.Attempts))
	}
	l.logger.Info("hook attached", "hook", h.Name, "mode", st.Mode)
	return st, nil
}

// order is the chain as tried: with force, its links of that mode first
// (in their order: a mode may have several, e.g. with and without an
// optional program), then the others; strict, only those. A chain without
// a link of the forced mode is left as it is.
func order(links []Link, force Mode, strict bool) []Link {
	if force == "" {
		return links
	}
	var forced, rest []Link
	for _, lk := range links {
		if lk.Mode == force {
			forced = append(forced, lk)
		} else {
			rest = append(rest, lk)
		}
	}
	if len(forced) == 0 {
		return links
	}
	if strict {
		return forced
	}
	return append(forced, rest...)
}

func joinAttempts(as []Attempt) error {
	errs := make([]error, 0, len(as))
	for _, a := range as {
		errs = append(errs, fmt.Errorf("%s: %w", a.Mode, a.Err))
	}
	return errors.Join(errs...)
}

func (l *Loader) attachLink(lk Link) ([]ProgramStat, error) {
	var (
		loaded []*ebpf.Program
		links  []link.Link
		stats  []ProgramStat
	)
	undo := func() {
		for _, ln := range links {
			ln.Close()
		}
		for _, p := range loaded {
			p.Close()
		}
	}
	for _, p := range lk.Programs {
		if p.Requires != nil {
			if err := p.Requires(); err != nil {
				undo()
				return nil, err
			}
		}
		prog, stat, err := l.loadProgram(p.Name)
		if err != nil {
			undo()
			return nil, err
		}
		stat.Mode = lk.Mode
		loaded = append(loaded, prog)
		stats = append(stats, stat)
		ln, err := p.Attach(prog)
		if err != nil {
			undo()
			return nil, fmt.Errorf("attaching %s: %w", p.Name, err)
		}
		links = append(links, ln)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.links = append(l.links, links...)
	for i, p := range lk.Programs {
		l.programs[p.Name] = loaded[i]
	}
	if l.registry != nil {
		for i, p := range lk.Programs {
			l.registry.addProgram(l.collector, p.Name, loaded[i])
		}
	}
	return stats, nil
}

// Record registers the outcome of a hook the caller attached itself (the
// TLS uprobe sets, whose programs are loaded by LoadProgram): doctor and
// otelbee.bpf.program.attached show it like the chains' hooks.
func (l *Loader) Record(st Status) {
	st.Collector = l.collector
	if l.registry != nil {
		l.registry.record(st)
	}
}

// LoadProgram loads one program of the object against the collector's maps
// without attaching it, for a caller that attaches it itself, to many
// places and over time (the TLS uprobes, attached per file as processes
// come and go). It is listed with the collector's programs and freed by
// Close; links made with it must be closed first.
func (l *Loader) LoadProgram(name string) (*ebpf.Program, error) {
	prog, _, err := l.loadProgram(name)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.programs[name]; ok {
		prog.Close()
		return old, nil
	}
	l.programs[name] = prog
	if l.registry != nil {
		l.registry.addProgram(l.collector, name, prog)
	}
	return prog, nil
}

// loadProgram loads one program against the collector's existing maps.
func (l *Loader) loadProgram(name string) (*ebpf.Program, ProgramStat, error) {
	ps, ok := l.spec.Programs[name]
	if !ok {
		return nil, ProgramStat{}, fmt.Errorf("loading %s: no such program in the object", name)
	}
	one := &ebpf.CollectionSpec{
		Maps:      l.spec.Maps,
		Programs:  map[string]*ebpf.ProgramSpec{name: ps},
		Types:     l.spec.Types,
		ByteOrder: l.spec.ByteOrder,
	}
	start := time.Now()
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{
		MapReplacements: l.maps,
		Cache:           kernelBTF(),
	})
	took := time.Since(start)
	if err != nil {
		return nil, ProgramStat{}, fmt.Errorf("loading %s: %w", name, verifierExcerpt(err))
	}
	prog := coll.DetachProgram(name)
	coll.Close()
	stat := ProgramStat{Program: name, LoadTime: took}
	if info, err := prog.Info(); err == nil {
		stat.VerifiedInstructions, _ = info.VerifiedInstructions()
	}
	return prog, stat, nil
}

// verifierExcerpt keeps the end of a verifier log, where the reason is, so a
// rejection reads as one log line instead of thousands.
func verifierExcerpt(err error) error {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return err
	}
	lines := ve.Log
	const keep = 8
	if len(lines) > keep {
		lines = lines[len(lines)-keep:]
	}
	return fmt.Errorf("verifier rejected the program: %s: %w", strings.Join(lines, " | "), err)
}

// Close detaches every link and frees programs and maps. Idempotent.
func (l *Loader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Each detach waits for the kernel's RCU grace period (tens of
	// milliseconds); closed at once, the links share the waits, which keeps
	// shutdown within --shutdown-timeout.
	errs := make([]error, len(l.links))
	var wg sync.WaitGroup
	for i, ln := range l.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ln.Close()
		}()
	}
	wg.Wait()
	l.links = nil
	for name, p := range l.programs {
		if l.registry != nil {
			l.registry.removeProgram(l.collector, name)
		}
		p.Close()
	}
	l.programs = map[string]*ebpf.Program{}
	for _, m := range l.maps {
		m.Close()
	}
	l.maps = map[string]*ebpf.Map{}
	return errors.Join(errs...)
}

// Package execwatch reads the identity of every process at exec, with the
// environment the kernel copied before the program ran: collectors look
// identities up when they report, which for a process that lived a few
// milliseconds is after it exited and /proc forgot it, and for a program
// that rewrites its environment area (nginx, postgres) after the
// OTEL_SERVICE_NAME in it was overwritten.
package execwatch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/process/identity"
)

// Watcher refreshes the identity resolver on every exec.
type Watcher struct {
	resolver *identity.Resolver
	loader   *hook.Loader
	reader   *ringbuf.Reader
	counters *ebpf.Map
	received atomic.Uint64
	handled  atomic.Uint64 // bytes of the ring buffer handled
}

// WatcherName labels the watcher's self-metrics.
const WatcherName = "process"

// NewWatcher loads and attaches the exec hook.
func NewWatcher(res *identity.Resolver, probes *hook.Probes, reg *hook.Registry, opts hook.Options, logger *slog.Logger) (*Watcher, error) {
	spec, err := loadExec()
	if err != nil {
		return nil, fmt.Errorf("loading exec object: %w", err)
	}
	loader, err := hook.NewLoader(WatcherName, spec, opts, probes, reg, logger)
	if err != nil {
		return nil, err
	}
	h := hook.Hook{Name: "exec", Links: []hook.Link{
		{Mode: hook.ModeTPBTF, Programs: []hook.Program{{Name: execProgExecBtf, Attach: hook.Tracing()}}},
		{Mode: hook.ModeTracepoint, Programs: []hook.Program{{Name: execProgExecTp, Attach: hook.Tracepoint("sched", "sched_process_exec")}}},
	}}
	if _, err := loader.Attach(h); err != nil {
		loader.Close()
		return nil, err
	}
	rd, err := ringbuf.NewReader(loader.Map(execMapExecEvents))
	if err != nil {
		loader.Close()
		return nil, fmt.Errorf("opening exec_events ring buffer: %w", err)
	}
	w := &Watcher{resolver: res, loader: loader, reader: rd, counters: loader.Map(execMapExecCounters)}
	// Lookups of processes gone before their exec was handled wait for
	// the watcher to get through its backlog (identity.SetExecProgress).
	res.SetExecProgress(w)
	return w, nil
}

// Name implements the agent's self-metric reporter.
func (w *Watcher) Name() string { return WatcherName }

// Run resolves each exec'd process until ctx ends or Close is called.
func (w *Watcher) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { w.reader.Close() })
	defer stop()
	defer w.resolver.SetExecProgress(nil)
	var rec ringbuf.Record
	for {
		if err := w.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading exec_events: %w", err)
		}
		w.received.Add(1)
		tgid, exe, env, cgroup, ok := decodeExec(rec.RawSample)
		if ok {
			w.resolver.RefreshExec(tgid, exe, env, cgroup)
		}
		// A record takes its 8-byte header and its data rounded up to 8
		// in the ring.
		w.handled.Add(uint64(8 + (len(rec.RawSample)+7)&^7))
	}
}

// Pending is how many bytes of exec events wait in the ring buffer.
func (w *Watcher) Pending() int { return w.reader.AvailableBytes() }

// Handled is how many bytes of exec events were read and handled.
func (w *Watcher) Handled() uint64 { return w.handled.Load() }

// execHeaderSize is struct exec_event up to its env array.
const execHeaderSize = int(unsafe.Offsetof(execExecEvent{}.Env))

// The header's fields, from the generated type: the event is read in place
// (it is up to 16 kB of environment), not copied into the struct.
const (
	execExeOffset    = int(unsafe.Offsetof(execExecEvent{}.Exe))
	execTgidOffset   = int(unsafe.Offsetof(execExecEvent{}.Tgid))
	execFlagsOffset  = int(unsafe.Offsetof(execExecEvent{}.Flags))
	execEnvLenOffset = int(unsafe.Offsetof(execExecEvent{}.EnvLen))
	execCgroupOffset = int(unsafe.Offsetof(execExecEvent{}.CgroupId))
)

// decodeExec reads an exec event: the process and the environment it was
// exec'd with. env is nil when the kernel could not copy it, or cut it short
// before any OTEL_ variable: the resolver then reads /proc, which shows
// the whole environment unless the program rewrote it.
func decodeExec(raw []byte) (tgid uint32, exe string, env []byte, cgroup uint64, ok bool) {
	if len(raw) < execHeaderSize {
		return 0, "", nil, 0, false
	}
	tgid = binary.LittleEndian.Uint32(raw[execTgidOffset:])
	name := raw[execExeOffset : execExeOffset+len(execExecEvent{}.Exe)]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	exe = string(name)
	cgroup = binary.LittleEndian.Uint64(raw[execCgroupOffset:])
	flags := execExecFlags(binary.LittleEndian.Uint32(raw[execFlagsOffset:]))
	n := int(binary.LittleEndian.Uint32(raw[execEnvLenOffset:]))
	if n > len(raw)-execHeaderSize {
		return tgid, exe, nil, cgroup, true
	}
	env = raw[execHeaderSize : execHeaderSize+n]
	switch {
	case flags&execExecFlagsEXEC_ENV_UNREADABLE != 0:
		env = nil
	case flags&execExecFlagsEXEC_ENV_TRUNCATED != 0 && !bytes.Contains(env, []byte("OTEL_")):
		env = nil
	}
	return tgid, exe, env, cgroup, true
}

// PipelineStats reports the exec events handled and lost.
func (w *Watcher) PipelineStats() []collectors.StageStats {
	sums := hook.SumCounters(w.counters, 2)
	waited, resolved, unresolved := w.resolver.LateExecStats()
	return []collectors.StageStats{{
		Stage:     "ringbuf",
		Produced:  sums[0] + sums[1],
		Delivered: w.received.Load(),
		Dropped:   sums[1],
	}, {
		// First lookups of a process already gone that waited for its
		// exec: named by it (delivered), or not (dropped: named by what
		// /proc still showed, often unknown_service).
		Stage:     "late_exec",
		Produced:  uint64(waited),
		Delivered: uint64(resolved),
		Dropped:   uint64(unresolved),
	}}
}

// Close detaches the hook and ends Run.
func (w *Watcher) Close() error {
	w.resolver.SetExecProgress(nil)
	w.reader.Close()
	return w.loader.Close()
}

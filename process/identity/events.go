package identity

import (
	"context"
	"sync"
	"time"
)

// EventKind says what happened to a process.
type EventKind uint8

const (
	// ProcessExec: the process exec'd a program and its identity was read
	// anew (announced by the exec watcher, execwatch).
	ProcessExec EventKind = iota + 1
	// ProcessExit: the process is gone, or its pid names another process
	// now (found by the resolver's sweep). Its identity stays known for the
	// retention period.
	ProcessExit
)

func (k EventKind) String() string {
	switch k {
	case ProcessExec:
		return "exec"
	case ProcessExit:
		return "exit"
	}
	return "unknown"
}

// Event is one exec or exit of a process.
type Event struct {
	Kind EventKind
	PID  uint32
	// Process is the identity: the new one at exec, the last one at exit.
	Process *Process
}

// subscribers hands events to whoever asked for them.
type subscribers struct {
	mu   sync.RWMutex
	next int
	fns  map[int]func(Event)
}

func (s *subscribers) add(fn func(Event)) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[int]func(Event){}
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	return func() {
		s.mu.Lock()
		delete(s.fns, id)
		s.mu.Unlock()
	}
}

func (s *subscribers) publish(e Event) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, fn := range s.fns {
		fn(e)
	}
}

// Subscribe calls fn for every exec the watcher announces and every exit
// the sweep finds, until the returned function is called. Collectors retire
// a process's series from its exit; instrumentation that attaches per
// executable (uprobes) follows execs and exits. fn runs on the goroutine
// that found the event (the watcher's or the sweep's), so it must only
// record the event and return, never block; execs and exits of different
// processes arrive from different goroutines, in no common order.
func (r *Resolver) Subscribe(fn func(Event)) (unsubscribe func()) {
	return r.subs.add(fn)
}

// SweepInterval is how often Run looks for exited processes: often enough
// that an identity is forgotten soon after its retention ends, and no more
// than every second.
func (r *Resolver) SweepInterval() time.Duration {
	return min(max(r.Retention/4, time.Second), 10*time.Second)
}

// Run sweeps exited processes every SweepInterval until ctx ends: identity
// owns its cache's lifetime, whichever collectors run. With Persist, the
// state file is brought up to date after each sweep and when Run ends.
func (r *Resolver) Run(ctx context.Context) {
	t := time.NewTicker(r.SweepInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.saveLogged()
			return
		case <-t.C:
			r.Sweep()
			r.saveLogged()
		}
	}
}

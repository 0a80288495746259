package hook

import (
	"sort"
	"sync"

	"github.com/cilium/ebpf"
)

// Registry gathers every collector's attach outcomes and live programs, for
// the self-telemetry (attach status, BPF run time) and for `otelbee doctor`.
type Registry struct {
	mu       sync.Mutex
	statuses map[string]Status // collector/hook
	programs map[string]RegisteredProgram
}

// RegisteredProgram is a loaded program and the collector that owns it.
type RegisteredProgram struct {
	Collector string
	Name      string
	Program   *ebpf.Program
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{statuses: map[string]Status{}, programs: map[string]RegisteredProgram{}}
}

func (r *Registry) record(s Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses[s.Collector+"/"+s.Hook] = s
}

func (r *Registry) addProgram(collector, name string, p *ebpf.Program) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.programs[collector+"/"+name] = RegisteredProgram{Collector: collector, Name: name, Program: p}
}

func (r *Registry) removeProgram(collector, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.programs, collector+"/"+name)
}

// Statuses returns every hook's outcome, sorted by collector and hook.
func (r *Registry) Statuses() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.statuses))
	for _, s := range r.statuses {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Collector != out[j].Collector {
			return out[i].Collector < out[j].Collector
		}
		return out[i].Hook < out[j].Hook
	})
	return out
}

// Programs returns the live programs. The caller must not close them.
func (r *Registry) Programs() []RegisteredProgram {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RegisteredProgram, 0, len(r.programs))
	for _, p := range r.programs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Collector != out[j].Collector {
			return out[i].Collector < out[j].Collector
		}
		return out[i].Name < out[j].Name
	})
	return out
}

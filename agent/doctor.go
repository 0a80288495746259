package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/cilium/ebpf/btf"
	"go.opentelemetry.io/otel/metric/noop"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
	tlsdiscovery "github.com/otelbee/otelbee/collectors/tls"
	"github.com/otelbee/otelbee/process/execwatch"
	"github.com/otelbee/otelbee/process/identity"
)

// Doctor prints, without starting the agent, what this host supports: the
// kernel features behind each attach mode, and for each collector which mode
// each hook would run in. Loading a collector's programs is the only honest
// test of the verifier, so it loads and immediately unloads them.
func Doctor(ctx context.Context, w io.Writer, cfg Config) error {
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Fprintf(w, "otelbee %s doctor\n\n", Version)
	fmt.Fprintf(w, "kernel:       %s %s\n", unix.ByteSliceToString(uts.Release[:]), unix.ByteSliceToString(uts.Machine[:]))
	if _, err := btf.LoadKernelSpec(); err != nil {
		fmt.Fprintf(w, "BTF:          missing (%v): CO-RE programs cannot load\n", err)
	} else {
		fmt.Fprintf(w, "BTF:          yes (/sys/kernel/btf/vmlinux)\n")
	}
	mountErr := hook.EnsureMounts()
	if mode, err := hook.Lockdown(); err != nil {
		fmt.Fprintf(w, "lockdown:     unknown (%v)\n", err)
	} else {
		note := ""
		if mode == "confidentiality" {
			note = ": BPF cannot read kernel memory; collectors will not load"
		}
		fmt.Fprintf(w, "lockdown:     %s%s\n", mode, note)
	}
	if path, err := hook.Cgroup2Path(); err != nil {
		fmt.Fprintf(w, "cgroup v2:    not mounted (the DNS collector needs it)\n")
	} else {
		fmt.Fprintf(w, "cgroup v2:    %s\n", path)
	}
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	fmt.Fprintf(w, "tracefs:      %s\n", tracefsState(string(mountinfo)))
	fmt.Fprintf(w, "bpffs:        %s\n", mountState("/sys/fs/bpf", "/sys/fs/bpf (not needed: otelbee pins nothing)"))
	if mountErr != nil {
		fmt.Fprintf(w, "mounts:       %v\n", mountErr)
	}
	doctorKubernetes(ctx, w, cfg.Kubernetes)
	fmt.Fprintf(w, "\ncapabilities (effective):\n")
	eff := effectiveCaps()
	for _, c := range capabilities {
		have := "no "
		if eff&(1<<uint(c.bit)) != 0 {
			have = "yes"
		}
		fmt.Fprintf(w, "  %-19s %s  %s\n", c.name, have, c.why)
	}
	if missing := missingCaps(eff); len(missing) > 0 {
		fmt.Fprintf(w, "  missing: %s\n", strings.Join(missing, ", "))
	}

	probes := hook.NewProbes()
	fmt.Fprintf(w, "\nattach modes:\n")
	for _, m := range hook.Modes {
		if err := probes.Supports(m); err != nil {
			fmt.Fprintf(w, "  %-13s unavailable: %v\n", m, err)
		} else {
			fmt.Fprintf(w, "  %-13s available\n", m)
		}
	}

	fmt.Fprintf(w, "  (tp_btf and tracepoint both attach to kernel tracepoints: tp_btf gets the\n"+
		"   tracepoint's arguments typed through BTF, tracepoint reads the classic record)\n")
	fmt.Fprintf(w, "\ncollectors:\n")
	runnable := 0
	host, _ := os.Hostname()
	force, _ := hook.ParseMode(cfg.AttachMode)
	// The L7 collectors share one kernel capture: loading it once says what
	// it says for all of them (loading it per protocol took ~3 s each).
	var l7First, l7Verdict string
	for _, name := range CollectorNames() {
		if isL7Collector(name) && l7First != "" {
			if !strings.HasPrefix(l7Verdict, "cannot") {
				runnable++
			}
			fmt.Fprintf(w, "  %s: %s (shares the L7 capture loaded for %s)\n", name, l7Verdict, l7First)
			continue
		}
		reg := hook.NewRegistry()
		d := collectors.Deps{
			Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			Meter:     noop.NewMeterProvider().Meter("doctor"),
			Processes: identity.NewResolver("/proc", host),
			Probes:    probes,
			Hooks:     reg,
			Attach:    hook.Options{Force: force, Strict: cfg.AttachModeStrict},
		}
		c := factories[name](d, &cfg)
		err := c.Load(ctx)
		c.Close()
		verdict := "runs"
		if err != nil {
			verdict = "cannot run: " + explainLoadError(err)
		} else {
			runnable++
			for _, st := range reg.Statuses() {
				if !st.Attached() {
					verdict = "runs degraded"
				}
			}
		}
		fmt.Fprintf(w, "  %s: %s\n", name, verdict)
		printHooks(w, reg)
		if isL7Collector(name) {
			l7First, l7Verdict = name, verdict
		}
	}

	// The process watcher names processes at exec; every collector uses it.
	reg := hook.NewRegistry()
	watcher, err := execwatch.NewWatcher(identity.NewResolver("/proc", host), probes, reg,
		hook.Options{Force: force, Strict: cfg.AttachModeStrict}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Fprintf(w, "\nprocess watcher: unavailable, identities are read on first use (short-lived processes may be unknown_service): %s\n", explainLoadError(err))
	} else {
		watcher.Close()
		fmt.Fprintf(w, "\nprocess watcher: runs (identity and environment of every process at exec)\n")
		printHooks(w, reg)
	}
	if err := tlsdiscovery.WriteReport(w, "/proc"); err != nil {
		fmt.Fprintf(w, "\nTLS: cannot list processes: %v\n", err)
	}
	if runnable == 0 {
		return errors.New("no collector can run on this host (see above); `otelbee run` would exit with status 1")
	}
	return nil
}

// printHooks lists each hook's attach mode, its chain, and why the modes
// before it were passed over.
func printHooks(w io.Writer, reg *hook.Registry) {
	for _, st := range reg.Statuses() {
		mode := string(st.Mode)
		if mode == "" {
			mode = "NOT ATTACHED"
		}
		fmt.Fprintf(w, "    %-15s %-11s (chain: %s)\n", st.Hook, mode, joinModes(st.Declared))
		for _, a := range st.Attempts {
			fmt.Fprintf(w, "      %s passed over: %s\n", a.Mode, explainLoadError(a.Err))
		}
	}
}

// joinModes shows a chain's modes in order, a mode once where it has
// several links in a row (the L7 send hook: with and without sendpage).
func joinModes(ms []hook.Mode) string {
	s := make([]string, 0, len(ms))
	for i, m := range ms {
		if i == 0 || ms[i-1] != m {
			s = append(s, string(m))
		}
	}
	return strings.Join(s, " -> ")
}

func mountState(probe, what string) string {
	if _, err := os.Stat(probe); err != nil {
		return "not mounted"
	}
	return what
}

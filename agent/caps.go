package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// capabilities the agent uses, and why. Required ones are named when a
// load fails with EPERM and they are missing.
var capabilities = []struct {
	bit      int
	name     string
	why      string
	required bool
}{
	{unix.CAP_BPF, "CAP_BPF", "load BPF programs and maps", true},
	{unix.CAP_PERFMON, "CAP_PERFMON", "attach tracing programs, read kernel memory", true},
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN", "load and attach cgroup programs (DNS collector: owners, release, packets)", true},
	{unix.CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "read other processes' environment (OTEL_SERVICE_NAME) and executable", false},
	{unix.CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH", "read tracefs (mode 0700) and other users' /proc entries when not root", false},
	{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN", "optional: mount tracefs when missing, enable --bpf.stats", false},
	{unix.CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE", "optional: raise RLIMIT_MEMLOCK on kernels before 5.11, RLIMIT_NOFILE", false},
}

// effectiveCaps reads the effective capability set of this process.
func effectiveCaps() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			return caps
		}
	}
	return 0
}

// missingCaps names the required capabilities absent from eff.
// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (kernels before 5.8
// know only it).
func missingCaps(eff uint64) []string {
	has := func(bit int) bool { return eff&(1<<uint(bit)) != 0 }
	var out []string
	for _, c := range capabilities {
		if !c.required || has(c.bit) {
			continue
		}
		if (c.bit == unix.CAP_BPF || c.bit == unix.CAP_PERFMON) && has(unix.CAP_SYS_ADMIN) {
			continue
		}
		out = append(out, c.name)
	}
	return out
}

// memlockHint is what cilium/ebpf appends to every EPERM from the bpf
// syscall. Kernels from 5.11 charge BPF memory to the cgroup, not to
// RLIMIT_MEMLOCK, so there it misleads: the cause is a missing capability
// or a security policy.
const memlockHint = " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)"

// explainLoadError describes why loading failed in terms of what is
// missing: with EPERM, the required capabilities this process lacks.
func explainLoadError(err error) string {
	msg := err.Error()
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, fs.ErrPermission) {
		return msg
	}
	if kernelAtLeast(5, 11) {
		msg = strings.ReplaceAll(msg, memlockHint, "")
	}
	if missing := missingCaps(effectiveCaps()); len(missing) > 0 {
		return fmt.Sprintf("%s: missing capabilities %s (effective set checked; grant them, e.g. AmbientCapabilities= in the systemd unit)",
			msg, strings.Join(missing, ", "))
	}
	return msg + ": refused although the capabilities are there (a security module, seccomp or kernel.unprivileged_bpf_disabled?)"
}

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(major, minor int) bool {
	var uts unix.Utsname
	if unix.Uname(&uts) != nil {
		return false
	}
	var ma, mi int
	fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &ma, &mi)
	return ma > major || (ma == major && mi >= minor)
}

// tracefsState says whether tracefs is mounted and readable: a mount this
// process cannot read (not root, no CAP_DAC_READ_SEARCH) is not a missing
// mount.
func tracefsState(mountinfo string) string {
	var mounts []string
	for _, line := range strings.Split(mountinfo, "\n") {
		// mountinfo: id parent major:minor root mountpoint options ... - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "tracefs ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			mounts = append(mounts, f[4])
		}
	}
	if len(mounts) == 0 {
		return "not mounted (mount -t tracefs tracefs /sys/kernel/tracing)"
	}
	var lastErr error
	for _, m := range mounts {
		if _, err := os.Stat(m + "/events"); err == nil {
			return m
		} else {
			lastErr = err
		}
	}
	if errors.Is(lastErr, fs.ErrPermission) {
		return fmt.Sprintf("mounted at %s but not readable by this process (permission denied): run as root or grant CAP_DAC_READ_SEARCH", strings.Join(mounts, ", "))
	}
	return fmt.Sprintf("mounted at %s but unusable: %v", strings.Join(mounts, ", "), lastErr)
}

// Package jobrun runs a list of jobs one after the other and frames each job's output between
// marker lines. It is shared by the guest's PID 1 (e2e/vmtest/init) and by the host-kernel mode
// of the harness, so both produce byte-for-byte the same console protocol and one parser reads
// both.
//
// The protocol, one marker per line, always starting at the beginning of a line:
//
//	=== VMTEST KERNEL <uname -r>
//	=== VMTEST BEGIN <job>
//	... the job's stdout and stderr, interleaved as written ...
//	=== VMTEST END <job> exit=<code|timeout|signal-NAME|start-error> dur=<ms>
//	=== VMTEST DONE
//
// plus "=== VMTEST WARN <text>" for non-fatal set-up problems and "=== VMTEST DEADLINE" when
// the overall deadline cut the run short.
package jobrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Marker prefixes. The leading "=== " matches the style of Go's own "=== RUN" lines without
// colliding with them.
const (
	MarkerPrefix   = "=== VMTEST "
	MarkerKernel   = MarkerPrefix + "KERNEL "
	MarkerBegin    = MarkerPrefix + "BEGIN "
	MarkerEnd      = MarkerPrefix + "END "
	MarkerDone     = MarkerPrefix + "DONE"
	MarkerWarn     = MarkerPrefix + "WARN "
	MarkerDeadline = MarkerPrefix + "DEADLINE"
)

// Exit values other than a decimal exit code.
const (
	ExitTimeout    = "timeout"
	ExitStartError = "start-error"
)

// GuestJobsPath is where the harness places the job list inside the initramfs.
const GuestJobsPath = "/jobs.json"

// Spec is the job list as handed to the runner (inside the VM it is /jobs.json). Paths in it are
// already final: guest paths in a VM, host paths in host mode.
type Spec struct {
	Jobs []Job `json:"jobs"`
	// DeadlineMS bounds the whole run; the runner stops starting jobs and kills the running one
	// when it passes. Zero means the sum of the job timeouts plus a minute.
	DeadlineMS int64 `json:"deadline_ms,omitempty"`
}

// Job is one program run.
type Job struct {
	Name string            `json:"name"`
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env,omitempty"`
	// TimeoutMS is the job's own time limit; at it the job's whole process group is killed.
	TimeoutMS int64 `json:"timeout_ms"`
	// Dir is the working directory; empty means the runner's default (a scratch directory).
	Dir string `json:"dir,omitempty"`
	// Kernels, when set, lists the kernel labels (major.minor of the release) the job runs
	// on; elsewhere the runner leaves it out without a marker (the harness does not expect it).
	Kernels []string `json:"kernels,omitempty"`
}

// OnKernel reports whether a job limited to kernels runs on the kernel labelled label
// (every kernel when kernels is empty).
func OnKernel(kernels []string, label string) bool {
	return len(kernels) == 0 || slices.Contains(kernels, label)
}

// ReleaseLabel is a kernel release's major.minor ("6.1.0-57-cloud-amd64" -> "6.1"), the
// label the harness gives the kernels it knows.
func ReleaseLabel(release string) string {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return release
	}
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	return parts[0] + "." + minor
}

var jobNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/+-]*$`)

// ValidateName reports whether name can be used as a job name: it appears verbatim in marker
// lines, so it must not contain spaces.
func ValidateName(name string) error {
	if !jobNameRE.MatchString(name) {
		return fmt.Errorf("job name %q: want letters, digits and ._/+- only, starting with a letter or digit", name)
	}
	return nil
}

// Validate checks the spec for problems the runner cannot recover from.
func (s *Spec) Validate() error {
	seen := map[string]bool{}
	for i, j := range s.Jobs {
		if err := ValidateName(j.Name); err != nil {
			return fmt.Errorf("job %d: %w", i, err)
		}
		if seen[j.Name] {
			return fmt.Errorf("job %d: duplicate name %q", i, j.Name)
		}
		seen[j.Name] = true
		if len(j.Argv) == 0 {
			return fmt.Errorf("job %q: empty argv", j.Name)
		}
		if j.TimeoutMS <= 0 {
			return fmt.Errorf("job %q: timeout_ms must be positive", j.Name)
		}
	}
	return nil
}

// Deadline returns the overall time limit of the run.
func (s *Spec) Deadline() time.Duration {
	if s.DeadlineMS > 0 {
		return time.Duration(s.DeadlineMS) * time.Millisecond
	}
	total := time.Minute
	for _, j := range s.Jobs {
		total += time.Duration(j.TimeoutMS) * time.Millisecond
	}
	return total
}

// Options configure a run.
type Options struct {
	// KernelRelease is printed in the KERNEL marker.
	KernelRelease string
	// BaseEnv is given to every job before the job's own Env (which wins on conflicts).
	BaseEnv map[string]string
	// DefaultDir is the working directory of jobs without Dir.
	DefaultDir string
}

// Run runs the jobs in order and writes markers and job output to out. It returns when all
// jobs ran or ctx is done (then the running job is killed and DEADLINE is printed). The error
// is only about the runner itself, never about a job's exit status: that is in the markers.
func Run(ctx context.Context, spec *Spec, opts Options, out io.Writer) error {
	lw := &lineWriter{w: out, atLineStart: true}
	lw.marker(MarkerKernel + opts.KernelRelease)
	for _, job := range spec.Jobs {
		if ctx.Err() != nil {
			lw.marker(MarkerDeadline)
			return ctx.Err()
		}
		if !OnKernel(job.Kernels, ReleaseLabel(opts.KernelRelease)) {
			continue
		}
		runOne(ctx, job, opts, lw)
	}
	if ctx.Err() != nil {
		lw.marker(MarkerDeadline)
		return ctx.Err()
	}
	lw.marker(MarkerDone)
	return nil
}

func runOne(ctx context.Context, job Job, opts Options, lw *lineWriter) {
	timeout := time.Duration(job.TimeoutMS) * time.Millisecond
	jctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	lw.marker(MarkerBegin + job.Name)
	start := time.Now()

	cmd := exec.CommandContext(jctx, job.Argv[0], job.Argv[1:]...)
	cmd.Env = mergeEnv(opts.BaseEnv, job.Env)
	cmd.Dir = job.Dir
	if cmd.Dir == "" {
		cmd.Dir = opts.DefaultDir
	}
	cmd.Stdout = lw
	cmd.Stderr = lw
	// Own process group, so a timeout kills helpers the job started too, and so the job's
	// children cannot keep the output pipe open forever.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// If a grandchild escaped the group and still holds the pipe, stop waiting for it.
	cmd.WaitDelay = 2 * time.Second

	err := cmd.Start()
	var exit string
	if err != nil {
		fmt.Fprintf(lw, "vmtest: starting %s: %v\n", job.Argv[0], err)
		exit = ExitStartError
	} else {
		err = cmd.Wait()
		// Clean up whatever the job left running in its group; ESRCH just means nothing did.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		exit = exitString(jctx, cmd, err)
		if exit != "0" && err != nil && exit != ExitTimeout {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				fmt.Fprintf(lw, "vmtest: waiting for %s: %v\n", job.Name, err)
			}
		}
	}
	dur := time.Since(start)
	lw.marker(fmt.Sprintf("%s%s exit=%s dur=%d", MarkerEnd, job.Name, exit, dur.Milliseconds()))
}

func exitString(jctx context.Context, cmd *exec.Cmd, err error) string {
	if jctx.Err() != nil && err != nil {
		// Both the job's own timeout and the overall deadline end in a kill; both are
		// reported as timeout so the job is not mistaken for a crash.
		return ExitTimeout
	}
	st := cmd.ProcessState
	if st == nil {
		return ExitStartError
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal-" + signalName(ws.Signal())
	}
	return fmt.Sprint(st.ExitCode())
}

func signalName(s syscall.Signal) string {
	// syscall.Signal.String gives "segmentation fault"; the constant-style name is easier to
	// grep for and has no spaces (the marker is space-separated).
	names := map[syscall.Signal]string{
		syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE",
		syscall.SIGILL: "SIGILL", syscall.SIGKILL: "SIGKILL", syscall.SIGSEGV: "SIGSEGV",
		syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT", syscall.SIGPIPE: "SIGPIPE",
		syscall.SIGQUIT: "SIGQUIT", syscall.SIGTRAP: "SIGTRAP", syscall.SIGSYS: "SIGSYS",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprint(int(s))
}

func mergeEnv(base, job map[string]string) []string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range job {
		m[k] = v
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// lineWriter serialises the job's stdout and stderr (exec copies them from two goroutines)
// and remembers whether the last byte ended a line, so a marker always starts a new line even
// when the job's last output had no trailing newline.
type lineWriter struct {
	mu          sync.Mutex
	w           io.Writer
	atLineStart bool
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	n, err := l.w.Write(p)
	if n > 0 {
		l.atLineStart = p[n-1] == '\n'
	}
	return n, err
}

func (l *lineWriter) marker(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	if !l.atLineStart {
		b.WriteByte('\n')
	}
	b.WriteString(line)
	b.WriteByte('\n')
	// A failing console write has nowhere to be reported; the host notices missing markers.
	_, _ = io.WriteString(l.w, b.String())
	l.atLineStart = true
}

// Warn prints a WARN marker line on out (used by init for set-up problems that should be
// visible in the host's report without stopping the run).
func Warn(out io.Writer, format string, args ...any) {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
	fmt.Fprintf(out, "\n%s%s\n", MarkerWarn, msg)
}

// KernelRelease returns uname -r of the running kernel.
func KernelRelease() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "unknown"
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// BaseEnv is the environment every job starts from, in the VM and in host mode alike, so a test
// can tell where it runs without guessing. mode is "vm" or "host"; tmp is the scratch directory.
func BaseEnv(mode, release, tmp string) map[string]string {
	path := "/bin:/usr/bin:/sbin:/usr/sbin"
	if mode == "host" {
		// Host jobs may call host tools; keep the caller's PATH.
		if p := os.Getenv("PATH"); p != "" {
			path = p
		}
	}
	return map[string]string{
		"PATH":          path,
		"HOME":          tmp,
		"TMPDIR":        tmp,
		"VMTEST":        "1",
		"VMTEST_MODE":   mode,
		"VMTEST_KERNEL": release,
		"GOTRACEBACK":   "all",
	}
}

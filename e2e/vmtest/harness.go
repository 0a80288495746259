// Package vmtest runs test binaries on a matrix of real Linux kernels: Debian's cloud kernels
// (5.10, 6.1, 6.12) booted under QEMU with a Go program as PID 1, and the machine's own kernel
// ("host"). It fetches the kernels with apt (never touching the machine's apt configuration),
// builds a cpio initramfs holding the test binaries and a job list, boots each kernel, and
// parses the console into per-kernel, per-job and per-test results plus the BPF program
// statistics the tests print.
//
// Entry points: Run (library), cmd/vmtest (command line, `make vmtest`), TestHarnessSelftest.
package vmtest

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/e2e/vmtest/internal/jobrun"
)

// Options configure a run. The zero value works from anywhere inside the repository.
type Options struct {
	// Kernels are labels of KnownKernels, HostKernel, or paths to a vmlinuz or kernel .deb.
	// Default: 5.10, 6.1, 6.12, host.
	Kernels []string
	// RepoRoot defaults to the repository containing the working directory.
	RepoRoot string
	// CacheDir holds kernels, built binaries and logs; default <user cache>/otelbee/vmtest,
	// outside the checkout so that fresh clones (CI) reuse the downloaded kernels.
	CacheDir string
	// Parallel is how many kernels run at once (VMs and the host run alike); default 2.
	Parallel int
	// MemoryMB is the VM's memory; 0 sizes it from the initramfs (at least 256).
	MemoryMB int
	// Accel is "tcg" or "kvm"; empty picks kvm only where the CPU has hardware virtualisation
	// (a software /dev/kvm, as on some build VMs, fails to run stock kernels).
	Accel string
	// VMTimeout bounds one VM from start to power-off; 0 derives it from the job timeouts.
	VMTimeout time.Duration
	// Stream, if set, receives every console line as it arrives, prefixed with the kernel.
	Stream io.Writer
	// Logger receives progress; default slog.Default().
	Logger *slog.Logger
	// MaxInsns is the verifier budget of one program: a program reported with more verified
	// instructions fails the run. 0 means DefaultMaxInsns; negative, no budget.
	MaxInsns int64
	// Chains are collectors' declared attach plans. Each one whose Package some job builds must
	// have every link loaded on at least one kernel of the run, or the run fails.
	Chains []Chain
}

// DefaultKernels is the matrix run when Options.Kernels is empty.
var DefaultKernels = []string{"5.10", "6.1", "6.12", HostKernel}

// bootAllowance is the time given to a VM beyond its jobs: booting under TCG takes 3-8 s on a
// quiet machine; the rest absorbs a loaded one.
const bootAllowance = 90 * time.Second

// KernelResult is the outcome of all jobs on one kernel.
type KernelResult struct {
	Label   string
	Kernel  *Kernel // nil for the host
	Release string  // uname -r as seen by the jobs
	Jobs    []JobResult
	// Boot is the time from starting QEMU to the guest's first marker (VMs only).
	Boot time.Duration
	// Wall is the whole run: QEMU start to exit, or the host jobs.
	Wall     time.Duration
	Console  *Console
	LogPath  string // the raw console
	Warnings []string
	// Err is set when the kernel could not be fetched or the VM did not finish properly.
	Err error
}

// Report holds the results of a run.
type Report struct {
	JobNames []string
	Kernels  []KernelResult
	// MaxInsns is the budget applied (0: none); OverBudget the programs above it.
	MaxInsns   int64
	OverBudget []ProgStat
	// Covered names the collectors whose chains were checked; Unexercised lists their links
	// that no kernel loaded.
	Covered     []string
	Unexercised []LinkRef
}

// Run builds the jobs, fetches the kernels and runs every job on every kernel.
// The error is for problems that stop the whole run (bad jobs, build failures); a kernel
// that cannot be fetched or booted is reported in its KernelResult.
func Run(ctx context.Context, jf *JobsFile, opts Options) (*Report, error) {
	if err := jf.Validate(); err != nil {
		return nil, err
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	log := opts.Logger
	runDir := filepath.Join(opts.CacheDir, "runs", time.Now().Format("20060102-150405")+fmt.Sprintf("-%d", os.Getpid()))
	// Binaries are built per run: several people (or go test processes) may run the harness
	// at once in one checkout, and must not overwrite each other's binaries mid-run. The Go
	// build cache keeps this cheap.
	binDir := filepath.Join(runDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(binDir) // tens of MB; the console logs stay
	// Nothing under build/vmtest belongs in git (kernels are hundreds of MB).
	_ = writeIfChanged(filepath.Join(opts.CacheDir, ".gitignore"), []byte("*\n"))
	pruneRuns(filepath.Join(opts.CacheDir, "runs"), 7*24*time.Hour, log)

	jobs, err := prepareJobs(ctx, jf, opts.RepoRoot, binDir, log)
	if err != nil {
		return nil, err
	}
	report := &Report{}
	for _, j := range jobs {
		report.JobNames = append(report.JobNames, j.Name)
	}

	needVM := false
	for _, k := range opts.Kernels {
		needVM = needVM || k != HostKernel
	}
	var initrd string
	var initrdSize int64
	if needVM {
		if _, err := exec.LookPath(qemuBinary); err != nil {
			return nil, fmt.Errorf("%s not found: apt-get install -y --no-install-recommends qemu-system-x86", qemuBinary)
		}
		initBin, err := buildInit(ctx, opts.RepoRoot, binDir, log)
		if err != nil {
			return nil, err
		}
		initrd = filepath.Join(runDir, "initramfs.cpio")
		if initrdSize, err = writeInitramfs(initrd, initBin, jobs); err != nil {
			return nil, err
		}
		defer os.Remove(initrd)
		log.Info("initramfs packed", "path", initrd, "size_mb", initrdSize>>20)
	}

	fetcher := &kernelFetcher{
		dir:    filepath.Join(opts.CacheDir, "kernels"),
		aptDir: filepath.Join(opts.CacheDir, "apt"),
		log:    log,
	}
	results := make([]KernelResult, len(opts.Kernels))
	sem := make(chan struct{}, opts.Parallel)
	var wg sync.WaitGroup
	for i, label := range opts.Kernels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			res.Label = label
			if label == HostKernel {
				res.LogPath = filepath.Join(runDir, HostKernel+".log")
				sem <- struct{}{}
				defer func() { <-sem }()
				runHost(ctx, jobsOn(jobs, HostKernel), res, opts)
				return
			}
			// Fetch outside the semaphore: downloads overlap with other kernels' boots.
			k, err := fetcher.Resolve(ctx, label)
			if err != nil {
				res.Err = err
				res.Jobs = notRun(report.JobNames, "kernel unavailable")
				log.Error("kernel unavailable", "kernel", label, "err", err)
				return
			}
			res.Kernel, res.Label = k, k.Label
			res.LogPath = filepath.Join(runDir, k.Label+".log")
			logKernelFeatures(log, k)
			sem <- struct{}{}
			defer func() { <-sem }()
			runVM(ctx, k, initrd, initrdSize, jobsOn(jobs, k.Label), res, opts)
		}()
	}
	wg.Wait()
	report.Kernels = results
	report.check(jobs, opts)
	log.Info("run finished", "logs", runDir)
	return report, nil
}

// check applies the run-wide checks: jobs that force an attach mode must have used it, no
// program may exceed the verifier budget, and the declared attach chains of the collectors the
// jobs test must each have been loaded somewhere.
func (r *Report) check(jobs []preparedJob, opts Options) {
	defs := map[string]JobDef{}
	packages := map[string]bool{}
	for _, j := range jobs {
		defs[j.Name] = j.JobDef
		if j.Package != "" {
			packages[path.Clean(j.Package)] = true
		}
	}
	for i := range r.Kernels {
		for j := range r.Kernels[i].Jobs {
			res := &r.Kernels[i].Jobs[j]
			if p := forcedModeProblem(defs[res.Name], *res); p != "" {
				res.Status, res.Reason = StatusFail, p
			}
		}
	}
	stats := r.ProgStats()
	if opts.MaxInsns >= 0 {
		r.MaxInsns = cmp.Or(opts.MaxInsns, DefaultMaxInsns)
		r.OverBudget = OverBudget(stats, r.MaxInsns)
	}
	var chains []Chain
	for _, c := range opts.Chains {
		if packages[path.Clean(c.Package)] {
			chains = append(chains, c)
			r.Covered = append(r.Covered, c.Collector)
		}
	}
	r.Unexercised = UnexercisedLinks(chains, stats)
}

// pruneRuns removes run directories (console logs) older than maxAge, so the cache does not
// grow with every run.
func pruneRuns(dir string, maxAge time.Duration, log *slog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !e.IsDir() || time.Since(info.ModTime()) < maxAge {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			log.Warn("pruning old run", "dir", e.Name(), "err", err)
		}
	}
}

func (o *Options) defaults() error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if len(o.Kernels) == 0 {
		o.Kernels = DefaultKernels
	}
	if o.RepoRoot == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if o.RepoRoot, err = FindRepoRoot(wd); err != nil {
			return err
		}
	}
	if o.CacheDir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("finding the cache directory: %w", err)
		}
		o.CacheDir = filepath.Join(cache, "otelbee", "vmtest")
	}
	if o.Parallel <= 0 {
		o.Parallel = 2
	}
	if o.Accel == "" {
		o.Accel = detectAccel()
	}
	if o.Accel != "tcg" && o.Accel != "kvm" {
		return fmt.Errorf("accel %q: want tcg or kvm", o.Accel)
	}
	return nil
}

func logKernelFeatures(log *slog.Logger, k *Kernel) {
	if k.Config == "" {
		return
	}
	cfg, err := KernelConfig(k.Config, "CONFIG_KPROBES", "CONFIG_FPROBE", "CONFIG_DEBUG_INFO_BTF", "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
	if err != nil {
		return
	}
	log.Debug("kernel config", "kernel", k.Label, "kprobes", cfg["CONFIG_KPROBES"], "fprobe", cfg["CONFIG_FPROBE"],
		"btf", cfg["CONFIG_DEBUG_INFO_BTF"], "direct_calls", cfg["CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS"])
}

// guestDeadline is the runner's own overall limit inside the VM (and on the host): all job
// timeouts plus slack. The host's limit on the VM is this plus the boot allowance, so normally
// the guest stops itself and says so before the host has to kill QEMU.
func guestDeadline(jobs []preparedJob) time.Duration {
	d := 20 * time.Second
	for _, j := range jobs {
		d += j.timeout()
	}
	return d
}

func guestSpec(jobs []preparedJob, host bool) *jobrun.Spec {
	spec := &jobrun.Spec{DeadlineMS: guestDeadline(jobs).Milliseconds()}
	for _, j := range jobs {
		bin, kernels := j.guestBinary, j.Kernels
		if host {
			// The host's list is already the host's jobs.
			bin, kernels = j.hostBinary, nil
		}
		spec.Jobs = append(spec.Jobs, jobrun.Job{
			Name:      j.Name,
			Argv:      append([]string{bin}, j.args...),
			Env:       j.Env,
			TimeoutMS: j.timeout().Milliseconds(),
			Kernels:   kernels,
		})
	}
	return spec
}

func writeInitramfs(path, initBin string, jobs []preparedJob) (int64, error) {
	fs := NewInitramfs()
	if err := fs.AddFile("/init", initBin, 0o755); err != nil {
		return 0, err
	}
	for _, j := range jobs {
		if err := fs.AddFile(j.guestBinary, j.hostBinary, 0o755); err != nil {
			return 0, err
		}
	}
	spec, err := json.MarshalIndent(guestSpec(jobs, false), "", "  ")
	if err != nil {
		return 0, err
	}
	fs.AddData(jobrun.GuestJobsPath, spec, 0o644)
	fh, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := fs.WriteTo(fh)
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("writing initramfs %s: %w", path, err)
	}
	return n, nil
}

// qemuBinary is a variable for the tests (a fake QEMU).
var qemuBinary = "qemu-system-x86_64"

// detectAccel picks KVM only when the CPU advertises hardware virtualisation and /dev/kvm
// opens; a /dev/kvm backed by a software hypervisor fails on stock kernels with emulation
// errors, and "accel=kvm:tcg" would choose it, so it is never used as a fallback chain.
func detectAccel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "tcg"
	}
	hw := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "flags") {
			for _, f := range strings.Fields(line) {
				hw = hw || f == "vmx" || f == "svm"
			}
			break
		}
	}
	if !hw {
		return "tcg"
	}
	fh, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	fh.Close()
	return "kvm"
}

// QEMUArgs returns the command line for booting vmlinuz with initrd.
func QEMUArgs(accel string, memMB int, vmlinuz, initrd string) []string {
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	return []string{
		"-machine", "pc,accel=" + accel,
		"-cpu", cpu,
		"-m", fmt.Sprint(memMB),
		"-smp", "1", // more vCPUs are slower under TCG, and one suffices for the tests
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", vmlinuz,
		"-initrd", initrd,
		// panic=-1: reboot at once on a panic, which -no-reboot turns into QEMU exiting.
		"-append", "console=ttyS0 panic=-1 quiet",
	}
}

// vmMemoryMB sizes the VM: the initramfs is held twice during boot (the image and the
// unpacked files, both in RAM), and the tests need room of their own.
func vmMemoryMB(initrdSize int64) int {
	// 2× was short once the test binaries reached 183 MB ("Initramfs unpacking failed: write
	// error"): the unpacked files sit in a tmpfs that may use only half of the RAM by default.
	mb := int(3*initrdSize>>20) + 256
	return max(256, (mb+63)/64*64)
}

// maxConsole bounds the console kept in memory; a job stuck in a print loop must not eat the
// host's RAM. The log file gets everything.
const maxConsole = 32 << 20

// runVM runs the jobs in one VM. A VM whose guest never reached the job
// runner (no kernel marker: the initramfs failed to unpack, "write error",
// seen on a loaded host) is booted once more; a failure after the runner
// started is the jobs' and stands.
func runVM(ctx context.Context, k *Kernel, initrd string, initrdSize int64, jobs []preparedJob, res *KernelResult, opts Options) {
	runVMOnce(ctx, k, initrd, initrdSize, jobs, res, opts)
	if res.Err == nil || res.Boot != 0 || ctx.Err() != nil || res.Console == nil {
		return
	}
	first := res.Err
	firstLog := res.LogPath + ".boot1"
	if err := os.Rename(res.LogPath, firstLog); err != nil {
		firstLog = res.LogPath
	}
	opts.Logger.Warn("the guest never reached the job runner: booting it once more", "kernel", k.Label, "err", first)
	res.Err, res.Boot, res.Wall, res.Console, res.Release, res.Warnings, res.Jobs = nil, 0, 0, nil, "", nil, nil
	runVMOnce(ctx, k, initrd, initrdSize, jobs, res, opts)
	res.Warnings = append(res.Warnings, fmt.Sprintf("the first boot never reached the job runner (%v; console in %s): booted again", firstLine(first.Error()), firstLog))
}

func runVMOnce(ctx context.Context, k *Kernel, initrd string, initrdSize int64, jobs []preparedJob, res *KernelResult, opts Options) {
	log := opts.Logger.With("kernel", k.Label)
	mem := opts.MemoryMB
	if mem == 0 {
		mem = vmMemoryMB(initrdSize)
	}
	timeout := opts.VMTimeout
	if timeout == 0 {
		timeout = guestDeadline(jobs) + bootAllowance
	}
	vctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	args := QEMUArgs(opts.Accel, mem, k.Vmlinuz, initrd)
	cmd := exec.CommandContext(vctx, qemuBinary, args...)
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		res.Err = err
		return
	}
	logFile, err := os.Create(res.LogPath)
	if err != nil {
		res.Err = err
		return
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "# %s %s\n", qemuBinary, strings.Join(args, " "))

	log.Info("booting", "package", k.Package, "version", k.Version, "accel", opts.Accel, "mem_mb", mem)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.Err = fmt.Errorf("starting %s: %w", qemuBinary, err)
		res.Jobs = notRun(jobNames(jobs), "QEMU did not start")
		return
	}
	var console strings.Builder
	truncated := false
	rd := bufio.NewReaderSize(stdout, 64<<10)
	for {
		line, err := rd.ReadString('\n')
		if line != "" {
			line = strings.ReplaceAll(line, "\r", "")
			if res.Boot == 0 && strings.Contains(line, jobrun.MarkerKernel) {
				res.Boot = time.Since(start)
			}
			_, _ = logFile.WriteString(line)
			if console.Len() < maxConsole {
				console.WriteString(line)
			} else {
				truncated = true
			}
			if opts.Stream != nil {
				fmt.Fprintf(opts.Stream, "[%s] %s", k.Label, strings.TrimRight(line, "\n")+"\n")
			}
		}
		if err != nil {
			break
		}
	}
	waitErr := cmd.Wait()
	res.Wall = time.Since(start)

	res.Console = ParseConsole(console.String())
	res.Release = res.Console.Release
	res.Warnings = res.Console.Warnings
	if truncated {
		res.Warnings = append(res.Warnings, fmt.Sprintf("console over %d MB: kept the start, the log file has all", maxConsole>>20))
	}
	res.Jobs = mergeJobs(jobNames(jobs), res.Console)
	for i := range res.Jobs {
		for j := range res.Jobs[i].ProgStats {
			ps := &res.Jobs[i].ProgStats[j]
			ps.Kernel, ps.Release, ps.Job = k.Label, res.Release, res.Jobs[i].Name
		}
	}
	switch {
	case errors.Is(vctx.Err(), context.DeadlineExceeded):
		res.Err = fmt.Errorf("VM killed after %s (booted: %v)", timeout, res.Boot > 0)
		// The job that was running is a timeout, not a crash.
		for i := range res.Jobs {
			if j := &res.Jobs[i]; j.Exit == "" && j.Status == StatusFail {
				j.Status, j.Reason = StatusTimeout, fmt.Sprintf("the VM was killed at its %s limit during this job", timeout)
				markUnfinished(j.Tests, StatusTimeout, "running when the VM was killed")
			}
		}
	case ctx.Err() != nil:
		res.Err = ctx.Err()
	case waitErr != nil:
		res.Err = fmt.Errorf("%s: %w: %s", qemuBinary, waitErr, strings.TrimSpace(stderr.String()))
	case !res.Console.Done:
		res.Err = fmt.Errorf("VM ended before the job runner finished (kernel panic or init crash?); last console lines:\n%s",
			tail(strings.Join(res.Console.Outside, "\n"), 15))
	}
	log.Info("VM finished", "release", res.Release, "boot", res.Boot.Round(time.Millisecond),
		"wall", res.Wall.Round(time.Millisecond), "err", res.Err)
}

// runHost runs the jobs on the machine's own kernel with the same runner, protocol and base
// environment as in the VM.
func runHost(ctx context.Context, jobs []preparedJob, res *KernelResult, opts Options) {
	log := opts.Logger.With("kernel", HostKernel)
	tmp, err := os.MkdirTemp("", "vmtest-host-")
	if err != nil {
		res.Err = err
		res.Jobs = notRun(jobNames(jobs), "no scratch directory")
		return
	}
	defer os.RemoveAll(tmp)
	// The VM's init turns on BPF run-time statistics; here they are enabled through a file
	// descriptor held only for the run, so the host's sysctl is left as it was.
	if os.Geteuid() == 0 {
		if stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
			defer stats.Close()
		} else {
			log.Warn("could not enable BPF run-time statistics", "err", err)
		}
	}
	logFile, err := os.Create(res.LogPath)
	if err != nil {
		res.Err = err
		return
	}
	defer logFile.Close()

	release := jobrun.KernelRelease()
	var console strings.Builder
	var out io.Writer = io.MultiWriter(&console, logFile)
	if opts.Stream != nil {
		out = io.MultiWriter(out, &prefixWriter{w: opts.Stream, prefix: "[" + HostKernel + "] "})
	}
	spec := guestSpec(jobs, true)
	hctx, cancel := context.WithTimeout(ctx, spec.Deadline())
	defer cancel()
	log.Info("running on the host kernel", "release", release)
	start := time.Now()
	runErr := jobrun.Run(hctx, spec, jobrun.Options{
		KernelRelease: release,
		BaseEnv:       jobrun.BaseEnv("host", release, tmp),
		DefaultDir:    tmp,
	}, out)
	res.Wall = time.Since(start)
	res.Console = ParseConsole(console.String())
	res.Release = res.Console.Release
	res.Warnings = res.Console.Warnings
	res.Jobs = mergeJobs(jobNames(jobs), res.Console)
	for i := range res.Jobs {
		for j := range res.Jobs[i].ProgStats {
			ps := &res.Jobs[i].ProgStats[j]
			ps.Kernel, ps.Release, ps.Job = HostKernel, res.Release, res.Jobs[i].Name
		}
	}
	if runErr != nil {
		res.Err = fmt.Errorf("host run: %w", runErr)
	}
	log.Info("host run finished", "wall", res.Wall.Round(time.Millisecond), "err", res.Err)
}

// prefixWriter prefixes each line (used for streaming several kernels' output at once).
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	mid    bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var sb strings.Builder
	for _, c := range string(b) {
		if !p.mid {
			sb.WriteString(p.prefix)
			p.mid = true
		}
		sb.WriteRune(c)
		if c == '\n' {
			p.mid = false
		}
	}
	if _, err := io.WriteString(p.w, sb.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// jobsOn returns the jobs that run on the kernel labelled label, in order.
func jobsOn(jobs []preparedJob, label string) []preparedJob {
	var out []preparedJob
	for _, j := range jobs {
		if j.runsOn(label) {
			out = append(out, j)
		}
	}
	return out
}

func jobNames(jobs []preparedJob) []string {
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.Name
	}
	return names
}

// mergeJobs returns one result per expected job, in order: parsed ones as they are, and
// jobs the console never mentions as not run.
func mergeJobs(names []string, c *Console) []JobResult {
	byName := map[string]JobResult{}
	for _, j := range c.Jobs {
		byName[j.Name] = j
	}
	out := make([]JobResult, 0, len(names))
	for _, n := range names {
		if j, ok := byName[n]; ok {
			out = append(out, j)
			continue
		}
		reason := "never started: the VM died or hit its deadline before it"
		if c.Deadline {
			reason = "never started: the overall deadline passed first"
		}
		out = append(out, JobResult{Name: n, Status: StatusNotRun, Reason: reason})
	}
	return out
}

func notRun(names []string, reason string) []JobResult {
	out := make([]JobResult, len(names))
	for i, n := range names {
		out[i] = JobResult{Name: n, Status: StatusNotRun, Reason: reason}
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

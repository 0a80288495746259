// Command init is PID 1 of the vmtest initramfs: it prepares the minimal system eBPF tests
// need (proc, sys, dev, bpf, tracefs, debugfs, securityfs, cgroup2, loopback, BPF run-time
// statistics), runs the jobs in /jobs.json one after the other with their output framed by
// marker lines on the console, and powers the VM off.
//
// It must be built static (CGO_ENABLED=0): the initramfs has no libc.
//
// It never hangs the VM: an overall deadline stops the jobs, a backstop timer powers off even if
// the job runner itself is stuck, and if power-off fails init exits, which panics the kernel;
// with panic=-1 and QEMU's -no-reboot that also ends the VM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/e2e/vmtest/internal/jobrun"
)

func main() {
	if os.Getpid() != 1 {
		// Mounting over /sys/fs/cgroup and powering off are only sane inside the test VM.
		fmt.Fprintln(os.Stderr, "vmtest init: refusing to run: not PID 1 (this program is the init of a test VM)")
		os.Exit(2)
	}
	out := os.Stdout
	setup(out)

	spec, err := readSpec(jobrun.GuestJobsPath)
	if err != nil {
		jobrun.Warn(out, "reading jobs: %v", err)
		powerOff(out)
	}

	deadline := spec.Deadline()
	// Backstop: if the runner does not return shortly after the deadline (a console write
	// blocked, a job's wait stuck), power off anyway so the host gets the VM back.
	time.AfterFunc(deadline+15*time.Second, func() {
		jobrun.Warn(out, "backstop timer fired: runner did not stop at the deadline")
		powerOff(out)
	})
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	release := jobrun.KernelRelease()
	opts := jobrun.Options{
		KernelRelease: release,
		BaseEnv:       jobrun.BaseEnv("vm", release, "/tmp"),
		DefaultDir:    "/tmp",
	}
	if err := jobrun.Run(ctx, spec, opts, out); err != nil {
		jobrun.Warn(out, "run stopped: %v", err)
	}
	powerOff(out)
}

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	// optional mounts only produce a warning when the kernel lacks the filesystem.
	optional bool
}

// The order matters: /sys must be mounted before the file systems that live below it.
var mounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", false},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", false},
	{"bpf", "/sys/fs/bpf", "bpf", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0700", false},
	{"tracefs", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"debugfs", "/sys/kernel/debug", "debugfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
}

func setup(out *os.File) {
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil && !errors.Is(err, unix.EROFS) {
			jobrun.Warn(out, "mkdir %s: %v", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			jobrun.Warn(out, "mounting %s on %s: %v", m.fstype, m.target, err)
		}
		if m.target == "/dev" {
			ensureConsole()
		}
	}
	// /dev/shm and /dev/pts are cheap and some programs (Go's os/exec with pty helpers,
	// shared-memory users) expect them.
	_ = os.MkdirAll("/dev/shm", 0o1777)
	if err := unix.Mount("tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		jobrun.Warn(out, "mounting /dev/shm: %v", err)
	}
	if err := unix.Sethostname([]byte("vmtest")); err != nil {
		jobrun.Warn(out, "sethostname: %v", err)
	}
	if err := loopbackUp(); err != nil {
		jobrun.Warn(out, "bringing lo up: %v", err)
	}
	// Run-time statistics make bpf_prog_info's run_time_ns/run_cnt meaningful, which the
	// agent's self-telemetry reports; tests of that need it on. (Linux 5.8+.)
	if err := os.WriteFile("/proc/sys/kernel/bpf_stats_enabled", []byte("1\n"), 0); err != nil {
		jobrun.Warn(out, "enabling bpf stats: %v", err)
	}
	// RLIMIT_MEMLOCK is deliberately left at the kernel default: on kernels before 5.11 BPF
	// memory is charged to it, and the agent must lift it itself, so tests see the real thing.
}

// ensureConsole gives init a console on fds 0-2 if the kernel could not open one (no
// /dev/console node in the initramfs at the time init started).
func ensureConsole() {
	var st unix.Stat_t
	if unix.Fstat(1, &st) == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i <= 2; i++ {
		_ = unix.Dup2(fd, i)
	}
	if fd > 2 {
		_ = unix.Close(fd)
	}
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

func readSpec(path string) (*jobrun.Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec jobrun.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &spec, nil
}

func powerOff(out *os.File) {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Only reached if power-off failed. Exiting PID 1 panics the kernel, and panic=-1 with
	// -no-reboot turns that into QEMU exiting: the VM still ends.
	jobrun.Warn(out, "power off: %v", err)
	os.Exit(1)
}

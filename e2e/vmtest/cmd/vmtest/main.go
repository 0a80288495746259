// Command vmtest runs test binaries on a matrix of kernels (Debian cloud kernels under QEMU,
// and the host's own kernel) and prints a kernel × job/test table.
//
//	go run ./e2e/vmtest/cmd/vmtest -jobs e2e/vmtest/selftest.json -kernels 5.10,6.1,6.12,host
//
// It exits 1 if any job failed, timed out or did not run on any kernel, 2 on usage or set-up
// errors. With -progstats FILE it also writes the Markdown table of the BPF programs the
// tests reported (OTELBEE-PROGSTAT lines), for docs/kernels.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/otelbee/otelbee/e2e/vmtest"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		jobsPath  = flag.String("jobs", "", "jobs file (JSON, see package vmtest's JobsFile)")
		kernels   = flag.String("kernels", strings.Join(vmtest.DefaultKernels, ","), "comma-separated kernels: 5.10, 6.1, 6.12, host, or paths to a vmlinuz/.deb")
		parallel  = flag.Int("parallel", 2, "kernels run at once")
		mem       = flag.Int("mem", 0, "VM memory in MB (0: sized from the initramfs, at least 256)")
		accel     = flag.String("accel", "", "QEMU accelerator: tcg or kvm (default: kvm only with vmx/svm in /proc/cpuinfo)")
		vmTimeout = flag.Duration("vm-timeout", 0, "limit per VM (0: job timeouts plus a boot allowance)")
		cacheDir  = flag.String("cache", "", "cache directory for kernels, binaries and logs (default <repo>/build/vmtest)")
		stream    = flag.Bool("v", false, "stream every console line as it arrives")
		progstats = flag.String("progstats", "", "write the Markdown table of reported BPF programs to this file")
		debug     = flag.Bool("debug", false, "debug logging")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if *jobsPath == "" {
		fmt.Fprintln(os.Stderr, "vmtest: -jobs is required")
		flag.Usage()
		return 2
	}
	jf, err := vmtest.LoadJobsFile(*jobsPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		return 2
	}
	ks, err := vmtest.ParseKernelList(*kernels)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		return 2
	}
	opts := vmtest.Options{
		Kernels:   ks,
		CacheDir:  *cacheDir,
		Parallel:  *parallel,
		MemoryMB:  *mem,
		Accel:     *accel,
		VMTimeout: *vmTimeout,
		Logger:    log,
	}
	if *stream {
		opts.Stream = os.Stdout
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	report, err := vmtest.Run(ctx, jf, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		return 2
	}
	fmt.Println(report.Table())
	if *progstats != "" {
		if err := os.WriteFile(*progstats, []byte(vmtest.RenderKernelTable(report.ProgStats())), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "vmtest: writing progstats:", err)
			return 2
		}
	}
	log.Info("done", "took", time.Since(start).Round(time.Millisecond))
	if report.Failed() {
		return 1
	}
	return 0
}

// Command vmtest runs test binaries on a matrix of kernels (Debian cloud kernels under QEMU,
// and the host's own kernel) and prints a kernel × job/test table.
//
//	go run ./e2e/vmtest/cmd/vmtest -jobs e2e/vmtest/jobs/matrix.json -progstats docs/kernels.md
//
// It exits 1 if any job failed, timed out or did not run on any kernel, a BPF program exceeded
// the verifier budget (-max-insns), or a link of a tested collector's attach chain was loaded on
// no kernel; 2 on usage or set-up errors. With -progstats FILE it also writes the Markdown
// tables of the BPF programs the tests reported (OTELBEE-PROGSTAT lines) between the
// <!-- BEGIN GENERATED --> and <!-- END GENERATED --> markers of FILE (docs/kernels.md).
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
		cacheDir  = flag.String("cache", "", "cache directory for kernels, binaries and logs (default <user cache>/otelbee/vmtest)")
		stream    = flag.Bool("v", false, "stream every console line as it arrives")
		progstats = flag.String("progstats", "", "write the Markdown tables of reported BPF programs into this file's generated section (created if missing)")
		maxInsns  = flag.Int64("max-insns", vmtest.DefaultMaxInsns, "fail if a program needs more verified instructions than this (negative: no budget)")
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
		MaxInsns:  *maxInsns,
		Chains:    chains(),
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
		budget := *maxInsns
		if budget <= 0 {
			budget = vmtest.DefaultMaxInsns
		}
		if err := vmtest.WriteGeneratedSection(*progstats, vmtest.RenderProgStatsSection(report.ProgStats(), budget)); err != nil {
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

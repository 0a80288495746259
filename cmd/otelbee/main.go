// Command otelbee is the eBPF observability agent.
//
//	otelbee [run] [flags]   run the agent
//	otelbee doctor [flags]  print what this host supports, without running
//	otelbee version         print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/otelbee/otelbee/agent"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	cmd := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "doctor" || args[0] == "version") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "version" {
		fmt.Println("otelbee", agent.Version)
		return 0
	}
	cfg, err := agent.LoadConfig(args, os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "otelbee:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd == "doctor" {
		if err := agent.Doctor(ctx, os.Stdout, cfg); err != nil {
			fmt.Fprintln(os.Stderr, "otelbee doctor:", err)
			return 1
		}
		return 0
	}
	// A CPU profile of the whole run, for performance work on the agent.
	if path := os.Getenv("OTELBEE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	// A heap profile at exit (alloc_space: everything allocated during the
	// run, startup included), for memory work on the agent.
	if path := os.Getenv("OTELBEE_MEMPROFILE"); path != "" {
		defer func() {
			if f, err := os.Create(path); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: agent.LogLevel(cfg.LogLevel)}))
	setGCPercent()
	setMemoryLimit(logger)
	// The agent keeps to --shutdown-timeout; this is the backstop should a
	// step ignore its deadline.
	go func() {
		<-ctx.Done()
		time.Sleep(cfg.ShutdownTimeout + time.Second)
		logger.Error("shutdown overran --shutdown-timeout; exiting", "component", "agent", "timeout", cfg.ShutdownTimeout)
		os.Exit(1)
	}()
	if err := agent.Run(ctx, cfg, logger); err != nil {
		logger.Error("otelbee failed", "error", err)
		return 1
	}
	return 0
}

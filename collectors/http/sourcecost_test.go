package httpc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"go.opentelemetry.io/otel/metric/noop"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/hook"
)

// TestSourceCost measures, in one process and in alternating rounds, a Go
// HTTP server driven by keep-alive clients: without the collector
// (baseline), with the L7 layer on syscall tracepoints, and on kernel
// functions (fentry, kprobes) where the kernel allows them: requests per
// second and BPF run time per request (the collector's programs only). A
// measurement, not a check: it runs only with OTELBEE_SOURCE_COST=1 (the
// kernel matrix's cost job, docs/benchmarks.md) and prints its table.
func TestSourceCost(t *testing.T) {
	if os.Getenv("OTELBEE_SOURCE_COST") == "" {
		t.Skip("a measurement: set OTELBEE_SOURCE_COST=1")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	if err := hook.EnsureMounts(); err != nil {
		t.Logf("mounts: %v", err)
	}
	if stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		defer stats.Close()
	}
	roundDur := 3 * time.Second
	if d, err := time.ParseDuration(os.Getenv("OTELBEE_SOURCE_COST_ROUND")); err == nil {
		roundDur = d
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/hello"

	probes := hook.NewProbes()
	modes := []hook.Mode{"", hook.ModeTracepoint}
	for _, m := range []hook.Mode{hook.ModeFentry, hook.ModeKprobe} {
		if err := probes.Supports(m); err == nil {
			modes = append(modes, m)
		} else {
			t.Logf("mode %s not measured: %v", m, err)
		}
	}
	type sample struct{ rps, bpfNs float64 }
	results := map[hook.Mode][]sample{}
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("OTELBEE_SOURCE_COST_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	for round := 0; round < rounds; round++ {
		for _, m := range modes {
			var c *Collector
			stop := func() {}
			reg := hook.NewRegistry()
			if m != "" {
				c = New(collectors.Deps{
					Logger: slog.New(slog.DiscardHandler),
					Meter:  noop.NewMeterProvider().Meter("cost"),
					Probes: probes,
					Hooks:  reg,
					Attach: hook.Options{Force: m, Strict: true},
				}, DefaultConfig())
				if err := c.Load(context.Background()); err != nil {
					t.Fatalf("loading in mode %s: %v", m, err)
				}
				if src := c.eng.Source("send"); src != m {
					t.Fatalf("forced %s, the data source is %s", m, src)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { c.Run(ctx); close(done) }()
				stop = func() { c.Close(); cancel(); <-done }
			}
			before := bpfRunTime(reg)
			n, took := drive(url, 4, roundDur)
			after := bpfRunTime(reg)
			stop()
			s := sample{rps: float64(n) / took.Seconds()}
			if n > 0 {
				s.bpfNs = float64(after-before) / float64(n)
			}
			results[m] = append(results[m], s)
		}
	}
	median := func(xs []sample, f func(sample) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	base := median(results[""], func(s sample) float64 { return s.rps })
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("OTELBEE-SOURCECOST kernel=%s rounds=%d round=%s clients=4\n", string(kernel[:len(kernel)-1]), rounds, roundDur)
	for _, m := range modes {
		name := string(m)
		if m == "" {
			name = "baseline"
		}
		rps := median(results[m], func(s sample) float64 { return s.rps })
		fmt.Printf("OTELBEE-SOURCECOST mode=%s req_per_s=%.0f vs_baseline=%.2f bpf_ns_per_req=%.0f\n",
			name, rps, rps/base, median(results[m], func(s sample) float64 { return s.bpfNs }))
	}
}

// drive runs clients keep-alive clients against url for d; it returns the
// requests answered and the time taken.
func drive(url string, clients int, d time.Duration) (uint64, time.Duration) {
	var n atomic.Uint64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer cl.CloseIdleConnections()
			for time.Now().Before(stop) {
				resp, err := cl.Get(url)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), time.Since(start)
}

// bpfRunTime sums the run time (ns) of the registry's live programs.
func bpfRunTime(reg *hook.Registry) uint64 {
	var total uint64
	for _, p := range reg.Programs() {
		if s, err := p.Program.Stats(); err == nil {
			total += uint64(s.Runtime)
		}
	}
	return total
}

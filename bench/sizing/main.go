// Command sizing measures how the agent's cost grows with a node's load
// (issue 16, "How cost grows"), so that a user can size a node: with every
// collector on and otherwise the defaults (spans and metrics exported over
// OTLP to a local sink, /metrics scraped every -scrape), it drives one
// dimension at a time at three points — short loopback connections per
// second, HTTP keep-alive requests per second, short-lived processes per
// minute (one HTTP request each) and metric series — and prints the agent's
// CPU (utime + stime over the window) and RSS (VmRSS sampled, VmHWM) at
// each, with the CPU per unit above the dimension's idle row and where that
// stops being constant. The agent is restarted per dimension. Run by
// `make bench` as root, on a machine nothing else loads.
//
// The agent's CPU is its own process's: the BPF programs run in the
// context of the processes that make the traffic and are charged to them
// (their cost per event is in docs/benchmarks.md, TCP and HTTP).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otelbee/otelbee/bench/internal/proc"
)

var (
	agentBin     = flag.String("agent", "build/bin/otelbee", "agent binary")
	dims         = flag.String("dimensions", "connections,requests,processes,series", "dimensions to measure, comma-separated")
	window       = flag.Duration("window", 20*time.Second, "measuring window of each point")
	warmup       = flag.Duration("warmup", 5*time.Second, "load before each point's window")
	agentWarmup  = flag.Duration("agent-warmup", 20*time.Second, "wait after the agent's start before its idle row (start-up memory is given back, discovery of running processes settles)")
	scrapeEvery  = flag.Duration("scrape", 10*time.Second, "interval of the harness's /metrics scrapes, as a Prometheus would")
	connRates    = flag.String("connections", "1000,4000,16000", "target connections per second")
	reqRates     = flag.String("requests", "2000,8000,30000", "target HTTP requests per second")
	reqConns     = flag.Int("request-connections", 16, "keep-alive connections the requests are spread over")
	procRates    = flag.String("processes", "600,3000,12000", "target short-lived processes per minute")
	seriesPoints = flag.String("series", "250,1000,4000", "TCP series to create (two per listening port: its client and server side)")
	noise        = flag.Float64("noise", 0.5, "a point's CPU within this many % of a core of the idle row's has no per-unit cost to compare")
	quietLoad    = flag.Float64("quiet-load", 2, "before each dimension, wait for the 1-minute load average to fall below this ...")
	quietWait    = flag.Duration("quiet-wait", 60*time.Second, "... for at most this long")
	seriesBudget = flag.Int("series-budget", 8000, "--series.budget of the series dimension's agent (the default, 1,000, would fold the larger points into overflow)")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	tmp, err := os.MkdirTemp("", "sizing-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	serverBin := filepath.Join(tmp, "httpserver")
	build := exec.Command("go", "build", "-o", serverBin, ".")
	build.Dir = "bench/httpserver"
	if out, err := build.CombinedOutput(); err != nil {
		log.Fatalf("building bench/httpserver: %v\n%s", err, out)
	}
	sink, err := startSink()
	if err != nil {
		log.Fatal(err)
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("%s, %d CPUs, kernel %s, agent %s --collectors=all (defaults otherwise), /metrics scraped every %s, %s windows after %s of load\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), strings.TrimSpace(string(kernel)), *agentBin, *scrapeEvery, *window, *warmup)

	load0 := proc.LoadAvg()
	var rows []row
	var notes []string
	for _, d := range strings.Split(*dims, ",") {
		// the previous dimension's own load out of the load average (the
		// 1-minute average decays in about a minute), so that "before"
		// says whether something else runs
		for t0 := time.Now(); proc.LoadAvg() > *quietLoad && time.Since(t0) < *quietWait; {
			time.Sleep(5 * time.Second)
		}
		before := proc.LoadAvg()
		var r []row
		switch strings.TrimSpace(d) {
		case "connections":
			r, err = connections(sink)
		case "requests":
			r, err = requests(sink, serverBin, tmp)
		case "processes":
			r, err = processes(sink, serverBin, tmp)
		case "series":
			r, err = series(sink)
		default:
			err = fmt.Errorf("unknown dimension %q", d)
		}
		if err != nil {
			log.Fatalf("%s: %v", d, err)
		}
		after := proc.LoadAvg()
		rows = append(rows, r...)
		note := fmt.Sprintf("%s: %s (load average %.2f before, %.2f after)", d, linearity(r), before, after)
		if before > 3 {
			note += " — DISTURBED: load average over 3 before the run, rerun this dimension"
		}
		notes = append(notes, note)
		fmt.Fprintln(os.Stderr, note)
	}

	fmt.Println("| dimension | point (achieved) | agent CPU, % of one core | agent µs per unit above idle | agent RSS MiB (mean) | agent peak RSS MiB |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rows {
		per := "—"
		if !r.idle {
			per = fmt.Sprintf("%.2f", r.perUnit)
		}
		fmt.Printf("| %s | %s | %.1f | %s | %.0f | %.0f |\n", r.dim, r.label, r.cpuPct, per, r.rssMiB, r.hwmMiB)
	}
	fmt.Println("\nµs per unit: the agent's CPU above its idle row divided by the units of the window: per connection, request or process; for series, per series (above idle) per second, with a scrape every", scrapeEvery.String()+".\n")
	for _, n := range notes {
		fmt.Println("- " + n)
	}
	fmt.Printf("\nLoad average (1 min) %.2f before the run, %.2f after.\n", load0, proc.LoadAvg())
}

// row is one measured point.
type row struct {
	dim, label string
	idle       bool
	units      float64 // achieved units per second; series: series kept
	cpuPct     float64
	perUnit    float64 // µs of agent CPU per unit above the idle row; series: per series per second
	rssMiB     float64
	hwmMiB     float64
}

// linearity says whether the CPU per unit stays within ±20 % of the first
// measurable point's, or at which point it leaves that band. A point whose
// CPU is within -noise of the idle row's has no per-unit cost to compare.
func linearity(rows []row) string {
	var pts []row
	var idle float64
	for _, r := range rows {
		if r.idle {
			idle = r.cpuPct
		} else {
			pts = append(pts, r)
		}
	}
	if len(pts) < 2 {
		return "too few points"
	}
	var per []string
	for _, p := range pts {
		per = append(per, fmt.Sprintf("%.2f", p.perUnit))
	}
	s := "µs per unit " + strings.Join(per, " / ")
	ref := -1
	for i, p := range pts {
		if p.cpuPct-idle > *noise {
			ref = i
			break
		}
	}
	switch {
	case ref < 0:
		return fmt.Sprintf("%s: the agent's CPU does not grow measurably (every point within %.1f %% of a core of the idle row)", s, *noise)
	case ref == len(pts)-1:
		return fmt.Sprintf("%s: only the last point is above the idle row by more than %.1f %% of a core", s, *noise)
	}
	for _, p := range pts[ref+1:] {
		if dev := p.perUnit/pts[ref].perUnit - 1; dev > 0.2 || dev < -0.2 {
			return fmt.Sprintf("%s: not linear from %s on (%+.0f %% against %s)", s, p.label, dev*100, pts[ref].label)
		}
	}
	return fmt.Sprintf("%s: linear from %s on (within ±20 %%)", s, pts[ref].label)
}

// agent is one run of the agent under measurement.
type agent struct {
	cmd     *exec.Cmd
	pid     int
	metrics string
	stop    context.CancelFunc
	scrapes atomic.Int64
}

func startAgent(sink string, extra ...string) (*agent, error) {
	promAddr, err := proc.FreeAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--collectors=all", "--prometheus.listen=" + promAddr, "--log.level=warn", "--state-dir=",
		"--otlp.endpoint=" + sink, "--otlp.protocol=http/protobuf",
		// the harness's own clients stand for other machines; the servers
		// (and in the processes dimension the short-lived clients) are what
		// is observed
		"--l7.exclude-executables=sizing"}, extra...)
	cmd := exec.Command(*agentBin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	a := &agent{cmd: cmd, pid: cmd.Process.Pid, metrics: "http://" + promAddr + "/metrics"}
	if err := proc.WaitHTTP(a.metrics, 30*time.Second); err != nil {
		a.close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	go func() {
		t := time.NewTicker(*scrapeEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if resp, err := http.Get(a.metrics); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					a.scrapes.Add(1)
				}
			}
		}
	}()
	time.Sleep(*agentWarmup)
	return a, nil
}

func (a *agent) close() {
	if a.stop != nil {
		a.stop()
	}
	a.cmd.Process.Signal(os.Interrupt)
	a.cmd.Wait()
}

// measure samples the agent over one window; count (nil for the idle row)
// is the load's running total of units done.
func (a *agent) measure(dim, label string, count func() int64) (row, error) {
	idle := count == nil
	if idle {
		count = func() int64 { return 0 }
	}
	c0 := count()
	cpu0, err := proc.CPUSeconds(a.pid)
	if err != nil {
		return row{}, err
	}
	t0 := time.Now()
	var rssSum float64
	var n int
	for time.Since(t0) < *window {
		time.Sleep(500 * time.Millisecond)
		rssSum += proc.StatusKB(a.pid, "VmRSS")
		n++
	}
	cpu1, err := proc.CPUSeconds(a.pid)
	if err != nil {
		return row{}, err
	}
	dt := time.Since(t0).Seconds()
	return row{dim: dim, label: label, idle: idle, cpuPct: (cpu1 - cpu0) / dt * 100, units: float64(count()-c0) / dt,
		rssMiB: rssSum / float64(n) / 1024, hwmMiB: proc.StatusKB(a.pid, "VmHWM") / 1024}, nil
}

// perUnit fills the rows' CPU per unit above the idle row (rows[0]).
func perUnit(rows []row) {
	for i := range rows[1:] {
		r := &rows[i+1]
		if r.units > 0 {
			r.perUnit = (r.cpuPct - rows[0].cpuPct) / 100 / r.units * 1e6
		}
	}
}

// load is one point's load while it runs.
type load struct {
	count  func() int64 // running total of units done (series: nil)
	finish func(r *row) // labels the measured row (and sets units where count cannot)
	stop   func()
}

// rate is the load of a rate dimension.
func rate(count, failed func() int64, target int, unit string, scale float64, stop func()) load {
	return load{count: count, stop: stop, finish: func(r *row) {
		r.label = fmt.Sprintf("%s%s (target %s)", thousands(r.units*scale), unit, thousands(float64(target)))
		if n := failed(); n > 0 {
			r.label += fmt.Sprintf(", %s failed", thousands(float64(n)))
		}
	}}
}

// dimension runs the idle row and one row per target: run starts the load
// at a target.
func dimension(sink, dim string, targets []int, extra []string, run func(a *agent, target int) (load, error)) ([]row, error) {
	a, err := startAgent(sink, extra...)
	if err != nil {
		return nil, err
	}
	defer a.close()
	idle, err := a.measure(dim, "idle", nil)
	if err != nil {
		return nil, err
	}
	rows := []row{idle}
	for _, t := range targets {
		l, err := run(a, t)
		if err != nil {
			return nil, err
		}
		time.Sleep(*warmup)
		count := l.count
		if count == nil {
			count = func() int64 { return 0 }
		}
		r, err := a.measure(dim, "", count)
		l.stop()
		if err != nil {
			return nil, err
		}
		l.finish(&r)
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "%s %d: %s, CPU %.1f %%, RSS %.0f MiB\n", dim, t, r.label, r.cpuPct, r.rssMiB)
	}
	perUnit(rows)
	return rows, nil
}

// connections: short loopback connections, 100 bytes each way, the client
// closing first (as tcpload does).
func connections(sink string) ([]row, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 100)
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
				io.Copy(io.Discard, c) // until the client's close
			}()
		}
	}()
	addr := ln.Addr().String()
	return dimension(sink, "connections/s", ints(*connRates), nil, func(a *agent, target int) (load, error) {
		var done atomic.Int64
		stop, failed := paced(target, 64, func() error {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 100)
			if _, err := c.Write(buf); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			done.Add(1)
			return nil
		})
		return rate(done.Load, failed, target, "/s", 1, stop), nil
	})
}

// requests: HTTP/1.1 keep-alive GETs against bench/httpserver over
// -request-connections connections, at a fixed pace.
func requests(sink, serverBin, tmp string) ([]row, error) {
	addr, stopServer, err := startHTTPServer(serverBin, tmp)
	if err != nil {
		return nil, err
	}
	defer stopServer()
	return dimension(sink, "requests/s", ints(*reqRates), nil, func(a *agent, target int) (load, error) {
		var done atomic.Int64
		conns := make(chan *bufConn, *reqConns)
		for range *reqConns {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return load{}, err
			}
			conns <- &bufConn{c, bufio.NewReader(c)}
		}
		req := []byte("GET / HTTP/1.1\r\nHost: sizing\r\n\r\n")
		stop, failed := paced(target, *reqConns, func() error {
			c := <-conns
			defer func() { conns <- c }()
			fail := func(err error) error {
				// a broken connection is replaced, not reused
				if nc, derr := net.Dial("tcp", addr); derr == nil {
					c.Close()
					c = &bufConn{nc, bufio.NewReader(nc)}
				}
				return err
			}
			if _, err := c.Write(req); err != nil {
				return fail(err)
			}
			resp, err := http.ReadResponse(c.r, nil)
			if err != nil {
				return fail(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done.Add(1)
			return nil
		})
		return rate(done.Load, failed, target, "/s", 1, func() {
			stop()
			for range *reqConns {
				(<-conns).Close()
			}
		}), nil
	})
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

// processes: short-lived curl processes, one HTTP request each, against
// bench/httpserver.
func processes(sink, serverBin, tmp string) ([]row, error) {
	addr, stopServer, err := startHTTPServer(serverBin, tmp)
	if err != nil {
		return nil, err
	}
	defer stopServer()
	url := "http://" + addr + "/"
	return dimension(sink, "processes/min", ints(*procRates), nil, func(a *agent, target int) (load, error) {
		var done atomic.Int64
		// A rate per minute is a rate per second of target/60.
		stop, failed := pacedPerMinute(target, 64, func() error {
			cmd := exec.Command("curl", "-sf", "-o", "/dev/null", url)
			cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=sizing-client")
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("curl: %w", err)
			}
			done.Add(1)
			return nil
		})
		return rate(done.Load, failed, target, "/min", 60, stop), nil
	})
}

// series: listening ports, each with one connection (10 bytes out, 20
// back), two TCP series each (the client's side and the server's); the
// points add ports, and every point's connections are made again so that
// all its series are fresh. The point is the agent's own count of the
// series it keeps (otelbee_series_budget_used, every collector).
func series(sink string) ([]row, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	serve := func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 20)
				if _, err := io.ReadFull(c, buf[:10]); err != nil {
					return
				}
				c.Write(buf)
				io.Copy(io.Discard, c)
			}()
		}
	}
	idleKept := -1
	return dimension(sink, "series", ints(*seriesPoints), []string{"--series.budget=" + strconv.Itoa(*seriesBudget)},
		func(a *agent, target int) (load, error) {
			if idleKept < 0 {
				// the host's other traffic and the agent's own series
				kept, _, err := seriesKept(a.metrics)
				if err != nil {
					return load{}, err
				}
				idleKept = kept
			}
			for len(listeners) < target/2 {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					return load{}, err
				}
				listeners = append(listeners, l)
				go serve(l)
			}
			var wg sync.WaitGroup
			var failed atomic.Int64
			sem := make(chan struct{}, 64)
			for _, l := range listeners {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					c, err := net.Dial("tcp", l.Addr().String())
					if err != nil {
						failed.Add(1)
						return
					}
					defer c.Close()
					buf := make([]byte, 20)
					c.Write(buf[:10])
					if _, err := io.ReadFull(c, buf); err != nil {
						failed.Add(1)
					}
				}()
			}
			wg.Wait()
			if n := failed.Load(); n > 0 {
				return load{}, fmt.Errorf("%d of %d series connections failed", n, len(listeners))
			}
			// The first collection after a burst of new kernel series
			// resolves their instances once: the window is the steady
			// state, after a scrape has seen them.
			time.Sleep(*scrapeEvery)
			return load{stop: func() {}, finish: func(r *row) {
				kept, lines, err := seriesKept(a.metrics)
				if err != nil {
					log.Fatalf("series: %v", err)
				}
				// per series (above idle) per second of the window
				r.units = float64(kept - idleKept)
				r.label = fmt.Sprintf("%s series kept, %s above idle (%s sample lines; %s asked for)",
					thousands(float64(kept)), thousands(r.units), thousands(float64(lines)), thousands(float64(target)))
			}}, nil
		})
}

// seriesKept is the agent's count of the series it keeps, every collector,
// and the sample lines of the same scrape.
func seriesKept(url string) (kept, lines int, err error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		lines++
		if strings.HasPrefix(line, "otelbee_series_budget_used{") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			kept += int(v)
		}
	}
	return kept, lines, sc.Err()
}

func startHTTPServer(bin, tmp string) (string, func(), error) {
	addrFile := filepath.Join(tmp, "addr")
	os.Remove(addrFile)
	cmd := exec.Command(bin, "-mode", "plain", "-addr-file", addrFile)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=sizing-server")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("starting bench/httpserver: %w", err)
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	for i := 0; ; i++ {
		if b, err := os.ReadFile(addrFile); err == nil {
			return string(b), stop, nil
		}
		if i > 200 {
			stop()
			return "", nil, errors.New("bench/httpserver did not start")
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// paced runs do at rate per second from workers goroutines, each on its
// own fixed schedule (a worker behind by more than a second drops its
// backlog rather than bursting), until stop is called; failed counts the
// calls that returned an error (the row says so: a load that fails is not
// the load asked for).
func paced(rate, workers int, do func() error) (stop func(), failed func() int64) {
	return pacedEvery(time.Duration(float64(workers)*float64(time.Second)/float64(rate)), workers, do)
}

func pacedPerMinute(perMinute, workers int, do func() error) (stop func(), failed func() int64) {
	return pacedEvery(time.Duration(float64(workers)*float64(time.Minute)/float64(perMinute)), workers, do)
}

func pacedEvery(interval time.Duration, workers int, do func() error) (stop func(), failed func() int64) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var errs atomic.Int64
	var logged sync.Once
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(interval * time.Duration(w) / time.Duration(workers))
			for ctx.Err() == nil {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				} else if d < -time.Second {
					next = time.Now()
				}
				if err := do(); err != nil && ctx.Err() == nil {
					errs.Add(1)
					logged.Do(func() { log.Printf("load: %v (counted in the row)", err) })
				}
				next = next.Add(interval)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }, errs.Load
}

// startSink accepts OTLP/HTTP exports and discards them.
func startSink() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("starting the OTLP sink: %w", err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	return "http://" + ln.Addr().String(), nil
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			log.Fatalf("bad point %q in %q", f, s)
		}
		out = append(out, n)
	}
	return out
}

// thousands formats a count with thousands separators, as the docs do.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Command httpoverhead measures what observing HTTP costs a server: a Go
// net/http hello server and nginx under wrk (fixed duration, several
// alternating rounds, medians), in three setups run in one go:
//
//   - baseline: no instrumentation;
//   - otelbee: the agent with every collector on, exporting metrics and
//     spans over OTLP to a local sink, BPF run-time statistics on;
//   - otelhttp (Go server only): the in-process otelhttp middleware with the
//     OpenTelemetry SDK exporting spans and metrics to the same sink.
//
// It reports throughput, p50/p99 latency and CPU per request (agent, BPF
// run time from bpf_stats, and the server's extra CPU over the baseline),
// prints a Markdown table and writes an SVG chart. Run as root by
// `make bench` (after `make build`).
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type setup string

const (
	baseline setup = "baseline"
	otelbee  setup = "otelbee"
	// otelbee-prev: another agent binary (-compare-agent), run in the same
	// alternating rounds, so a before/after comparison shares the
	// machine's moment (its load moves throughput by ±50 % between runs).
	otelbeePrev setup = "otelbee-prev"
	otelhttp    setup = "otelhttp"
)

// result is one wrk run.
type result struct {
	rps           float64
	requests      float64
	p50, p99      float64 // seconds
	serverCPU     float64 // seconds during the run
	agentCPU      float64
	bpfRun        float64 // seconds of BPF program run time during the run
	bpfByProgram  map[string]float64
	agentRSSBytes float64
	uprobeRuns    float64 // runs of the TLS uprobe programs (tls_*) during the run
	uprobeTime    float64 // their run time, seconds
}

var (
	agentBin   = flag.String("agent", "build/bin/otelbee", "agent binary")
	prevBin    = flag.String("compare-agent", "", "a second agent binary (say, the previous version) run as setup otelbee-prev in the same rounds")
	duration   = flag.Duration("duration", 5*time.Second, "wrk duration per run")
	rounds     = flag.Int("rounds", 3, "alternating rounds per setup")
	conns      = flag.Int("connections", 16, "wrk connections")
	threads    = flag.Int("threads", 1, "wrk threads")
	svgOut     = flag.String("svg", "docs/http-overhead.svg", "chart output")
	collectors = flag.String("collectors", "all", "agent collectors in the otelbee setup")
	noNginx    = flag.Bool("no-nginx", false, "skip the nginx target")
	agentArgs  = flag.String("agent-args", "", "extra agent arguments, space-separated (e.g. --attach-mode=tracepoint)")
	sampler    = flag.String("sampler", "parentbased_always_on", "OTEL_TRACES_SAMPLER for the agent and the otelhttp server")
	samplerArg = flag.String("sampler-arg", "", "OTEL_TRACES_SAMPLER_ARG")
	bpfStats   = flag.Bool("bpf-stats", true, "run the agent with --bpf.stats (BPF run time per request; adds two clock reads to every program run)")
	withSDK    = flag.Bool("otelhttp", true, "include the otelhttp (in-process SDK) setup for the Go server")
	useTLS     = flag.Bool("tls", false, "HTTPS: both servers with a certificate made by openssl req, wrk over TLS (the agent reads the plaintext through its TLS uprobes)")
)

// cert and key are the servers' certificate with -tls.
var cert, key string

func scheme() string {
	if *useTLS {
		return "https://"
	}
	return "http://"
}

func samplerEnv() []string {
	env := []string{"OTEL_TRACES_SAMPLER=" + *sampler}
	if *samplerArg != "" {
		env = append(env, "OTEL_TRACES_SAMPLER_ARG="+*samplerArg)
	}
	return env
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		log.Fatal("run as root: the agent loads BPF programs")
	}
	for _, tool := range []string{"wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			log.Fatalf("%s not installed (make deps)", tool)
		}
	}
	tmp, err := os.MkdirTemp("", "httpoverhead-")
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
	sink := startSink()
	if *useTLS {
		http.DefaultTransport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		cert, key = filepath.Join(tmp, "cert.pem"), filepath.Join(tmp, "key.pem")
		out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
			"-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert).CombinedOutput()
		if err != nil {
			log.Fatalf("openssl req: %v\n%s", err, out)
		}
		os.Chmod(key, 0o644)
	}

	targets := []string{"go"}
	if _, err := exec.LookPath("nginx"); err == nil && !*noNginx {
		targets = append(targets, "nginx")
	}
	all := map[string]map[setup][]result{}
	for _, target := range targets {
		all[target] = map[setup][]result{}
		setups := []setup{baseline, otelbee, otelhttp}
		if target == "nginx" || !*withSDK {
			setups = []setup{baseline, otelbee}
		}
		if *prevBin != "" {
			setups = append(setups, otelbeePrev)
		}
		for r := 0; r < *rounds; r++ {
			// alternate the order so drift does not favour one setup
			order := setups
			if r%2 == 1 {
				order = reverse(setups)
			}
			for _, s := range order {
				res := run(target, s, serverBin, sink, tmp)
				log.Printf("%s/%s round %d: %.0f req/s p50 %.0fµs p99 %.0fµs agent %.2fµs/req bpf %.2fµs/req server %.2fµs/req",
					target, s, r+1, res.rps, res.p50*1e6, res.p99*1e6,
					perReq(res.agentCPU, res), perReq(res.bpfRun, res), perReq(res.serverCPU, res))
				all[target][s] = append(all[target][s], res)
			}
		}
	}
	report(targets, all)
	sinkRequests.Range(func(k, v any) bool {
		fmt.Printf("\nOTLP sink: %d requests to %s over the whole run (every setup).\n", v.(*atomic.Int64).Load(), k)
		return true
	})
}

func reverse(s []setup) []setup {
	out := make([]setup, len(s))
	for i := range s {
		out[i] = s[len(s)-1-i]
	}
	return out
}

func perReq(sec float64, r result) float64 {
	if r.requests == 0 {
		return 0
	}
	return sec / r.requests * 1e6
}

// sinkRequests counts the export requests the sink received, by path.
var sinkRequests sync.Map // path -> *atomic.Int64

// startSink accepts OTLP/HTTP exports and discards them.
func startSink() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := sinkRequests.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(200)
	}))
	return "http://" + ln.Addr().String()
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func run(target string, s setup, serverBin, sink, tmp string) result {
	var agent *exec.Cmd
	promAddr := freeAddr()
	if s == otelbee || s == otelbeePrev {
		bin := *agentBin
		if s == otelbeePrev {
			bin = *prevBin
		}
		agent = exec.Command(bin, "--collectors="+*collectors, "--bpf.stats="+strconv.FormatBool(*bpfStats), "--prometheus.listen="+promAddr,
			"--log.level=warn", "--otlp.endpoint="+sink, "--otlp.protocol=http/protobuf",
			// the load generator and this harness (the OTLP sink) stand for
			// other machines: the server is what is observed
			"--http.exclude-executables=wrk,httpoverhead")
		agent.Args = append(agent.Args, strings.Fields(*agentArgs)...)
		agent.Stderr = os.Stderr
		agent.Env = append(os.Environ(), samplerEnv()...)
		if err := agent.Start(); err != nil {
			log.Fatal(err)
		}
		waitHTTP("http://" + promAddr + "/metrics")
		defer func() {
			agent.Process.Signal(os.Interrupt)
			agent.Wait()
		}()
	}
	var (
		url    string
		server *exec.Cmd
	)
	switch target {
	case "go":
		addrFile := filepath.Join(tmp, "addr")
		os.Remove(addrFile)
		mode := "plain"
		if s == otelhttp {
			mode = "otelhttp"
		}
		server = exec.Command(serverBin, "-mode", mode, "-addr-file", addrFile)
		if *useTLS {
			server.Args = append(server.Args, "-cert", cert, "-key", key)
		}
		server.Env = append(append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT="+sink, "OTEL_SERVICE_NAME=hello"), samplerEnv()...)
		server.Stderr = os.Stderr
		if err := server.Start(); err != nil {
			log.Fatal(err)
		}
		url = scheme() + waitFile(addrFile) + "/hello"
	case "nginx":
		addr := freeAddr()
		server = startNginx(tmp, addr)
		url = scheme() + addr + "/hello"
	}
	defer func() {
		server.Process.Signal(os.Interrupt)
		server.Wait()
	}()
	waitHTTP(url)
	// warm up
	exec.Command("wrk", "-t1", "-c2", "-d1s", url).Run()

	srvBefore := treeCPU(server.Process.Pid)
	var agentBefore, bpfBefore float64
	var bpfProgBefore map[string]float64
	if agent != nil {
		agentBefore = treeCPU(agent.Process.Pid)
		bpfBefore, bpfProgBefore = bpfRunTime("http://" + promAddr + "/metrics")
	}
	var runsBefore map[string]float64
	if agent != nil {
		runsBefore = bpfRunCounts("http://" + promAddr + "/metrics")
	}
	out, err := exec.Command("wrk", "-t"+strconv.Itoa(*threads), "-c"+strconv.Itoa(*conns),
		"-d"+duration.String(), "--latency", url).CombinedOutput()
	if err != nil {
		log.Fatalf("wrk: %v\n%s", err, out)
	}
	res := parseWrk(string(out))
	res.serverCPU = treeCPU(server.Process.Pid) - srvBefore
	if agent != nil {
		// let the agent drain what the run produced
		time.Sleep(300 * time.Millisecond)
		res.agentCPU = treeCPU(agent.Process.Pid) - agentBefore
		after, progAfter := bpfRunTime("http://" + promAddr + "/metrics")
		res.bpfRun = after - bpfBefore
		res.bpfByProgram = map[string]float64{}
		for p, v := range progAfter {
			res.bpfByProgram[p] = v - bpfProgBefore[p]
		}
		res.agentRSSBytes = rss(agent.Process.Pid)
		for p, v := range bpfRunCounts("http://" + promAddr + "/metrics") {
			if strings.HasPrefix(p, "tls_") {
				res.uprobeRuns += v - runsBefore[p]
				res.uprobeTime += res.bpfByProgram[p]
			}
		}
		if *useTLS {
			log.Printf("%s: TLS uprobe runs %.2f per request, %.2f µs per request", target,
				res.uprobeRuns/res.requests, res.uprobeTime/res.requests*1e6)
		}
	}
	return res
}

func startNginx(tmp, addr string) *exec.Cmd {
	dir := filepath.Join(tmp, "nginx")
	os.MkdirAll(filepath.Join(dir, "html"), 0o755)
	os.Chmod(tmp, 0o755)
	os.WriteFile(filepath.Join(dir, "html", "hello"), []byte("hello world\n"), 0o644)
	ssl := ""
	if *useTLS {
		ssl = fmt.Sprintf(" ssl;\n        ssl_certificate %s;\n        ssl_certificate_key %s", cert, key)
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log error;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen %[2]s%[3]s;
        root %[1]s/html;
        default_type text/plain;
    }
}
`, dir, addr, ssl)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
	cmd := exec.Command("nginx", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	return cmd
}

func waitFile(p string) string {
	for i := 0; i < 200; i++ {
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
			return string(b)
		}
		time.Sleep(25 * time.Millisecond)
	}
	log.Fatalf("%s never appeared", p)
	return ""
}

func waitHTTP(url string) {
	for i := 0; i < 200; i++ {
		if resp, err := http.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("%s did not answer", url)
}

// treeCPU is the user+system CPU seconds of pid and its descendants.
func treeCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	total := (ut + st) / 100 // USER_HZ
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, k := range strings.Fields(string(kids)) {
		if n, err := strconv.Atoi(k); err == nil {
			total += treeCPU(n)
		}
	}
	return total
}

func rss(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return kb * 1024
		}
	}
	return 0
}

var bpfLine = regexp.MustCompile(`^otelbee_bpf_program_run_time_seconds_total\{([^}]*)\} (\S+)`)
var progLabel = regexp.MustCompile(`program="([^"]+)"`)

// bpfRunTime sums the agent's per-program BPF run time (bpf_stats).
func bpfRunTime(url string) (float64, map[string]float64) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	total := 0.0
	by := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := bpfLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		total += v
		if p := progLabel.FindStringSubmatch(m[1]); p != nil {
			by[p[1]] += v
		}
	}
	return total, by
}

var runLine = regexp.MustCompile(`^otelbee_bpf_program_run_count_total\{([^}]*)\} (\S+)`)

// bpfRunCounts is the agent's per-program run count (bpf_stats).
func bpfRunCounts(url string) map[string]float64 {
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	by := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := runLine.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			if p := progLabel.FindStringSubmatch(m[1]); p != nil {
				by[p[1]] += v
			}
		}
	}
	return by
}

var (
	reqRe = regexp.MustCompile(`(\d+) requests in`)
	rpsRe = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	latRe = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)`)
)

func parseWrk(out string) result {
	var r result
	if m := reqRe.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := rpsRe.FindStringSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range latRe.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1e6
		case "ms":
			v /= 1e3
		}
		if m[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if r.requests == 0 {
		log.Fatalf("wrk output not understood:\n%s", out)
	}
	return r
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func med(rs []result, f func(result) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return median(xs)
}

type row struct {
	target        string
	setup         setup
	rps, rel      float64
	p50, p99      float64
	agent, bpf    float64 // µs per request
	serverExtra   float64 // µs per request over the baseline
	total         float64
	rssMiB        float64
	topPrograms   string
	serverPerReq  float64
	baselinePerRq float64
}

func report(targets []string, all map[string]map[setup][]result) {
	var rows []row
	for _, target := range targets {
		base := all[target][baseline]
		baseRPS := med(base, func(r result) float64 { return r.rps })
		baseSrv := med(base, func(r result) float64 { return perReq(r.serverCPU, r) })
		for _, s := range []setup{baseline, otelbeePrev, otelbee, otelhttp} {
			rs := all[target][s]
			if len(rs) == 0 {
				continue
			}
			rw := row{target: target, setup: s}
			rw.rps = med(rs, func(r result) float64 { return r.rps })
			rw.rel = rw.rps / baseRPS
			rw.p50 = med(rs, func(r result) float64 { return r.p50 * 1e6 })
			rw.p99 = med(rs, func(r result) float64 { return r.p99 * 1e6 })
			rw.agent = med(rs, func(r result) float64 { return perReq(r.agentCPU, r) })
			rw.bpf = med(rs, func(r result) float64 { return perReq(r.bpfRun, r) })
			rw.serverPerReq = med(rs, func(r result) float64 { return perReq(r.serverCPU, r) })
			rw.baselinePerRq = baseSrv
			rw.serverExtra = rw.serverPerReq - baseSrv
			// The server's extra CPU already contains the BPF time of its
			// own system calls; the agent's CPU and the BPF time are added
			// as measured, the server's extra only where it exceeds BPF.
			rw.total = rw.agent + rw.bpf + math.Max(0, rw.serverExtra-rw.bpf)
			if s == otelhttp {
				rw.total = math.Max(0, rw.serverExtra)
			}
			rw.rssMiB = med(rs, func(r result) float64 { return r.agentRSSBytes / (1 << 20) })
			if s == otelbee {
				rw.topPrograms = topPrograms(rs)
			}
			rows = append(rows, rw)
		}
	}
	stats := "with --bpf.stats"
	if !*bpfStats {
		stats = "without --bpf.stats (BPF time not measured: 0)"
	}
	fmt.Printf("Sampler: %s %s; agent %s; wrk -t%d -c%d -d%s, %d alternating rounds, medians.\n\n", *sampler, *samplerArg, stats, *threads, *conns, *duration, *rounds)
	fmt.Printf("| target | setup | req/s (median) | vs baseline | p50 µs | p99 µs | agent CPU µs/req | BPF µs/req | server CPU µs/req (extra) | total µs/req | agent peak RSS MiB |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %.0f | %.3f× | %.0f | %.0f | %.2f | %.2f | %.2f (%+.2f) | %.2f | %.0f |\n",
			r.target, r.setup, r.rps, r.rel, r.p50, r.p99, r.agent, r.bpf, r.serverPerReq, r.serverExtra, r.total, r.rssMiB)
	}
	for _, r := range rows {
		if r.topPrograms != "" {
			fmt.Printf("\n%s/otelbee, BPF run time per request by program (median run): %s\n", r.target, r.topPrograms)
		}
	}
	if *useTLS {
		for _, target := range targets {
			rs := all[target][otelbee]
			fmt.Printf("\n%s/otelbee, TLS uprobes per request (median): %.2f runs, %.2f µs of BPF\n", target,
				med(rs, func(r result) float64 { return r.uprobeRuns / r.requests }),
				med(rs, func(r result) float64 { return r.uprobeTime / r.requests * 1e6 }))
		}
	}
	if err := os.WriteFile(*svgOut, []byte(chart(rows)), 0o644); err != nil {
		log.Printf("writing %s: %v", *svgOut, err)
	} else {
		log.Printf("wrote %s", *svgOut)
	}
}

func topPrograms(rs []result) string {
	// the run with the median request count
	sort.Slice(rs, func(i, j int) bool { return rs[i].requests < rs[j].requests })
	r := rs[len(rs)/2]
	type pv struct {
		p string
		v float64
	}
	var ps []pv
	for p, v := range r.bpfByProgram {
		if v > 0 {
			ps = append(ps, pv{p, v})
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].v > ps[j].v })
	var parts []string
	for i, p := range ps {
		if i == 8 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", p.p, perReq(p.v, r)))
	}
	return strings.Join(parts, ", ")
}

// chart draws two bar groups: throughput relative to the baseline and CPU
// per request, per target and setup.
func chart(rows []row) string {
	const w, h = 760, 320
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	colors := map[setup]string{baseline: "#888888", otelbee: "#f2a900", otelhttp: "#4a7bd0", otelbeePrev: "#c9a66b"}
	panel := func(x0 int, title string, val func(row) float64, max float64, format string) {
		fmt.Fprintf(&b, `<text x="%d" y="20" font-weight="bold">%s</text>`+"\n", x0, title)
		top, bottom := 40, h-60
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, bottom, x0+340, bottom)
		x := x0 + 10
		prev := ""
		for _, r := range rows {
			if prev != "" && prev != r.target {
				x += 20
			}
			if prev != r.target {
				fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x, bottom+35, r.target)
			}
			prev = r.target
			v := val(r)
			bh := int(float64(bottom-top) * v / max)
			if bh < 0 {
				bh = 0
			}
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="34" height="%d" fill="%s"/>`+"\n", x, bottom-bh, bh, colors[r.setup])
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10">`+format+`</text>`+"\n", x, bottom-bh-3, v)
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="9">%s</text>`+"\n", x, bottom+14, r.setup)
			x += 44
		}
	}
	maxCPU := 0.0
	for _, r := range rows {
		maxCPU = math.Max(maxCPU, r.total)
	}
	panel(10, "Throughput vs baseline (wrk, median)", func(r row) float64 { return r.rel }, 1.15, "%.2f")
	panel(400, "Added CPU per request (µs, median)", func(r row) float64 {
		if r.setup == baseline {
			return 0
		}
		return r.total
	}, math.Max(maxCPU*1.15, 1), "%.1f")
	fmt.Fprintf(&b, `<text x="10" y="%d" font-size="10">grey: no instrumentation · orange: otelbee (all collectors, OTLP export) · tan: otelbee-prev (-compare-agent) · blue: otelhttp middleware + OTel SDK</text>`+"\n", h-8)
	b.WriteString("</svg>\n")
	return b.String()
}

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
// the agent's resident set under load (anonymous and file-backed) and its
// peak, the BPF program runs per request against the floor of one program
// entry each, prints Markdown tables and writes SVG charts. With -matrix
// the agent runs with 1 % of requests sampled and with every request a
// span, each with and without --bpf.stats, all in the same rounds: the
// table of issue 15 in one run. Run as root by `make bench` (after
// `make build`).
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"flag"
	"fmt"
	"html"
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
	"syscall"
	"time"
)

// kind is what a setup runs.
type kind string

const (
	baseline kind = "baseline"
	otelbee  kind = "otelbee"
	// otelbee-prev: another agent binary (-compare-agent), run in the same
	// alternating rounds, so a before/after comparison shares the
	// machine's moment (its load moves throughput by ±50 % between runs).
	otelbeePrev kind = "otelbee-prev"
	otelhttp    kind = "otelhttp"
)

// setup is one configuration run in every round: its kind, and the
// sampler and --bpf.stats of the agent (or the otelhttp server's SDK).
type setup struct {
	name                string
	kind                kind
	sampler, samplerArg string
	bpfStats            bool
}

// sampling names a setup's sampler as the tables do.
func (s setup) sampling() string {
	if s.samplerArg != "" {
		if r, err := strconv.ParseFloat(s.samplerArg, 64); err == nil {
			return strconv.FormatFloat(r*100, 'g', -1, 64) + " %"
		}
		return s.sampler + " " + s.samplerArg
	}
	if s.sampler == "parentbased_always_on" || s.sampler == "always_on" {
		return "every request"
	}
	return s.sampler
}

func (s setup) samplerEnv() []string {
	env := []string{"OTEL_TRACES_SAMPLER=" + s.sampler}
	if s.samplerArg != "" {
		env = append(env, "OTEL_TRACES_SAMPLER_ARG="+s.samplerArg)
	}
	return env
}

// setups lists what runs against target: the baseline, then the agent
// (and -compare-agent's) and otelhttp with -sampler and -bpf-stats, or
// with -matrix in every combination of 1 % and every request a span, with
// and without --bpf.stats.
func setups(target string) []setup {
	out := []setup{{name: "baseline", kind: baseline}}
	type samp struct{ name, arg string }
	samplers := []samp{{*sampler, *samplerArg}}
	stats := []bool{*bpfStats}
	if *matrix {
		samplers = []samp{{"parentbased_traceidratio", "0.01"}, {"parentbased_always_on", ""}}
		switch *matrixStats {
		case "on":
			stats = []bool{true}
		case "off":
			stats = []bool{false}
		default:
			stats = []bool{true, false}
		}
	}
	for _, sm := range samplers {
		for _, st := range stats {
			suffix := ""
			if *matrix {
				suffix = " " + setup{sampler: sm.name, samplerArg: sm.arg}.sampling()
				if !st {
					suffix += " nostats"
				}
			}
			out = append(out, setup{name: "otelbee" + suffix, kind: otelbee, sampler: sm.name, samplerArg: sm.arg, bpfStats: st})
			if *prevBin != "" {
				out = append(out, setup{name: "otelbee-prev" + suffix, kind: otelbeePrev, sampler: sm.name, samplerArg: sm.arg, bpfStats: st})
			}
		}
		if target == "go" && *withSDK {
			suffix := ""
			if *matrix {
				suffix = " " + setup{sampler: sm.name, samplerArg: sm.arg}.sampling()
			}
			out = append(out, setup{name: "otelhttp" + suffix, kind: otelhttp, sampler: sm.name, samplerArg: sm.arg})
		}
	}
	return out
}

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
	bpfRuns       float64 // runs of every program during the run (bpf_stats)
	uprobeRuns    float64 // runs of the TLS uprobe programs (tls_*) during the run
	uprobeTime    float64 // their run time, seconds
	wrkCPU        float64 // the load generator's CPU, seconds
	idleCPU       float64 // the machine's idle CPU during the run, seconds
	// where the machine's CPU went during the run (-account): the
	// processes' user and system time, the machine's from /proc/stat,
	// and the context switches
	acct accounting
	// the agent's median resident set under load, and its anonymous and
	// file-backed parts (ring buffers are file-backed: their data pages
	// are mapped twice, and count twice)
	loadRSS, loadAnon, loadFile float64
}

var (
	agentBin    = flag.String("agent", "build/bin/otelbee", "agent binary")
	prevBin     = flag.String("compare-agent", "", "a second agent binary (say, the previous version) run as setup otelbee-prev in the same rounds")
	duration    = flag.Duration("duration", 5*time.Second, "wrk duration per run")
	rounds      = flag.Int("rounds", 3, "alternating rounds per setup")
	conns       = flag.Int("connections", 16, "wrk connections")
	threads     = flag.Int("threads", 1, "wrk threads")
	svgOut      = flag.String("svg", "docs/http-overhead.svg", "chart output")
	collectors  = flag.String("collectors", "all", "agent collectors in the otelbee setup")
	noNginx     = flag.Bool("no-nginx", false, "skip the nginx target")
	agentArgs   = flag.String("agent-args", "", "extra agent arguments, space-separated (e.g. --attach-mode=tracepoint)")
	sampler     = flag.String("sampler", "parentbased_always_on", "OTEL_TRACES_SAMPLER for the agent and the otelhttp server")
	samplerArg  = flag.String("sampler-arg", "", "OTEL_TRACES_SAMPLER_ARG")
	bpfStats    = flag.Bool("bpf-stats", true, "run the agent with --bpf.stats (BPF run time per request; adds two clock reads to every program run)")
	withSDK     = flag.Bool("otelhttp", true, "include the otelhttp (in-process SDK) setup for the Go server")
	matrix      = flag.Bool("matrix", false, "run 1 % sampling and every request a span, each with and without --bpf.stats, in the same rounds (overrides -sampler and -bpf-stats); -svg is then the every-request chart and -svg-sampled the 1 % one")
	matrixStats = flag.String("matrix-stats", "both", "with -matrix: the --bpf.stats setups run, on, off or both")
	entryNs     = flag.Float64("entry-ns", 40, "the cost one BPF program entry adds to a hooked call on this machine (ns), for the floor (BenchmarkHookCost in collectors/l7/capture measures it: ~40 ns on the 2-core VM)")
	svgSampled  = flag.String("svg-sampled", "docs/http-overhead-sampled.svg", "with -matrix: the 1 % sampling chart")
	load        = flag.String("load-note", "", "what else ran on the machine, printed with the tables (default: the load average before and after)")
	perfDir     = flag.String("perf", "", "a directory: record a perf profile (cpu-clock, call graphs) of the server process in every run, <target>-<setup>-<n>.data")
	perfRuns    int
	profRuns    int
	perfAll     = flag.Bool("perf-all", false, "with -perf: record every CPU (perf record -a) instead of the server process, the agent, wrk, softirqs and idle included")
	cpuProfile  = flag.String("cpuprofile", "", "a directory: the agent of every run writes a Go CPU profile there (OTELBEE_CPUPROFILE), <target>-<setup>-<n>.pprof; it covers the agent's whole life, start-up included")
	memProfile  = flag.String("memprofile", "", "a directory: the agent of every run writes its allocations at exit there (OTELBEE_MEMPROFILE), <target>-<setup>-<n>.pprof; start-up's included")
	agentEnv    = flag.String("agent-env", "", "extra environment of the otelbee setup's agent, space-separated K=V (e.g. GOGC=100)")
	prevEnv     = flag.String("prev-env", "", "extra environment of the otelbee-prev setup's agent, space-separated K=V")
	account     = flag.Bool("account", true, "print where the machine's CPU went per request (user and system time of the server, the agent, wrk and this harness's OTLP sink; the machine's irq, softirq and idle; context switches)")
	useTLS      = flag.Bool("tls", false, "HTTPS: both servers with a certificate made by openssl req, wrk over TLS (the agent reads the plaintext through its TLS uprobes)")
)

// cert and key are the servers' certificate with -tls.
var cert, key string

func scheme() string {
	if *useTLS {
		return "https://"
	}
	return "http://"
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
	loadBefore := loadAvg()
	began := time.Now()
	all := map[string]map[string][]result{}
	for _, target := range targets {
		all[target] = map[string][]result{}
		setups := setups(target)
		for r := 0; r < *rounds; r++ {
			// alternate the order so drift does not favour one setup
			order := setups
			if r%2 == 1 {
				order = reverse(setups)
			}
			for _, s := range order {
				res := run(target, s, serverBin, sink, tmp)
				log.Printf("%s/%s round %d: %.0f req/s p50 %.0fµs p99 %.0fµs agent %.2fµs/req bpf %.2fµs/req server %.2fµs/req wrk %.2fµs/req idle %.2fµs/req rss %.0f MiB (anon %.0f, file %.0f) peak %.0f MiB, load %s",
					target, s.name, r+1, res.rps, res.p50*1e6, res.p99*1e6,
					perReq(res.agentCPU, res), perReq(res.bpfRun, res), perReq(res.serverCPU, res),
					perReq(res.wrkCPU, res), perReq(res.idleCPU, res),
					res.loadRSS/(1<<20), res.loadAnon/(1<<20), res.loadFile/(1<<20), res.agentRSSBytes/(1<<20), loadAvg())
				all[target][s.name] = append(all[target][s.name], res)
			}
		}
	}
	note := *load
	if note == "" {
		note = fmt.Sprintf("load average %s before, %s after (%s)", loadBefore, loadAvg(), time.Since(began).Round(time.Second))
	}
	report(targets, all, note)
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
	if s.kind == otelbee || s.kind == otelbeePrev {
		bin := *agentBin
		if s.kind == otelbeePrev {
			bin = *prevBin
		}
		agent = exec.Command(bin, "--collectors="+*collectors, "--bpf.stats="+strconv.FormatBool(s.bpfStats), "--prometheus.listen="+promAddr,
			"--log.level=warn", "--otlp.endpoint="+sink, "--otlp.protocol=http/protobuf",
			// the load generator and this harness (the OTLP sink) stand for
			// other machines: the server is what is observed
			"--http.exclude-executables=wrk,httpoverhead")
		agent.Args = append(agent.Args, strings.Fields(*agentArgs)...)
		agent.Stderr = os.Stderr
		agent.Env = append(os.Environ(), s.samplerEnv()...)
		if s.kind == otelbeePrev {
			agent.Env = append(agent.Env, strings.Fields(*prevEnv)...)
		} else {
			agent.Env = append(agent.Env, strings.Fields(*agentEnv)...)
		}
		if *cpuProfile != "" || *memProfile != "" {
			profRuns++
			name := fmt.Sprintf("%s-%s-%d.pprof", target, strings.ReplaceAll(s.name, " ", "_"), profRuns)
			if *cpuProfile != "" {
				agent.Env = append(agent.Env, "OTELBEE_CPUPROFILE="+filepath.Join(*cpuProfile, name))
			}
			if *memProfile != "" {
				agent.Env = append(agent.Env, "OTELBEE_MEMPROFILE="+filepath.Join(*memProfile, name))
			}
		}
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
		if s.kind == otelhttp {
			mode = "otelhttp"
		}
		server = exec.Command(serverBin, "-mode", mode, "-addr-file", addrFile)
		if *useTLS {
			server.Args = append(server.Args, "-cert", cert, "-key", key)
		}
		server.Env = append(append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT="+sink, "OTEL_SERVICE_NAME=hello"), s.samplerEnv()...)
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
	// The agent's memory under load: sampled through the run, the median
	// resident set and its split at that moment (the peak, startup
	// included, is VmHWM below).
	var mems []memSample
	stopMem := make(chan struct{})
	memDone := make(chan struct{})
	go func() {
		defer close(memDone)
		if agent == nil {
			return
		}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopMem:
				return
			case <-t.C:
				mems = append(mems, readMem(agent.Process.Pid))
			}
		}
	}()
	var prof *exec.Cmd
	if *perfDir != "" {
		// a profile of the server process through the run: where its
		// extra CPU goes (traps, BPF, its own code)
		perfRuns++
		scope := []string{"-p", strconv.Itoa(server.Process.Pid)}
		if *perfAll {
			scope = []string{"-a"}
		}
		prof = exec.Command("perf", append(append([]string{"record", "-q", "-e", "cpu-clock", "-F", "1999", "-g"}, scope...), "-o",
			filepath.Join(*perfDir, fmt.Sprintf("%s-%s-%d.data", target, strings.ReplaceAll(s.name, " ", "_"), perfRuns)),
			"--", "sleep", strconv.FormatFloat(duration.Seconds(), 'f', 1, 64))...)
		if err := prof.Start(); err != nil {
			log.Fatalf("perf: %v", err)
		}
	}
	idleBefore := idleCPU()
	agentPid := 0
	if agent != nil {
		agentPid = agent.Process.Pid
	}
	acctBefore := takeAccounting(server.Process.Pid, agentPid)
	wrk := exec.Command("wrk", "-t"+strconv.Itoa(*threads), "-c"+strconv.Itoa(*conns),
		"-d"+duration.String(), "--latency", url)
	var wrkOut bytes.Buffer
	wrk.Stdout, wrk.Stderr = &wrkOut, &wrkOut
	err := wrk.Run()
	acctAfter := takeAccounting(server.Process.Pid, agentPid)
	out := wrkOut.Bytes()
	idle := idleCPU() - idleBefore
	if prof != nil {
		prof.Wait()
	}
	close(stopMem)
	<-memDone
	if err != nil {
		log.Fatalf("wrk: %v\n%s", err, out)
	}
	res := parseWrk(string(out))
	res.wrkCPU = (wrk.ProcessState.UserTime() + wrk.ProcessState.SystemTime()).Seconds()
	res.acct = acctAfter.minus(acctBefore)
	res.acct.wrk = procAcct{user: wrk.ProcessState.UserTime().Seconds(), sys: wrk.ProcessState.SystemTime().Seconds()}
	if ru, ok := wrk.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.acct.wrk.vcsw, res.acct.wrk.ivcsw = float64(ru.Nvcsw), float64(ru.Nivcsw)
	}
	res.idleCPU = idle
	if len(mems) > 0 {
		sort.Slice(mems, func(i, j int) bool { return mems[i].rss < mems[j].rss })
		m := mems[len(mems)/2]
		res.loadRSS, res.loadAnon, res.loadFile = m.rss, m.anon, m.file
	}
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
		// runs and µs per request of each TLS program (which probe the
		// data costs) and of every other program (what still runs on the
		// TLS connections' ciphertext)
		var byProbe, others []string
		for p, v := range bpfRunCounts("http://" + promAddr + "/metrics") {
			res.bpfRuns += v - runsBefore[p]
			d := (v - runsBefore[p]) / res.requests
			desc := fmt.Sprintf("%s %.2f (%.2f µs)", p, d, res.bpfByProgram[p]/res.requests*1e6)
			if strings.HasPrefix(p, "tls_") {
				res.uprobeRuns += v - runsBefore[p]
				res.uprobeTime += res.bpfByProgram[p]
				if d >= 0.01 {
					byProbe = append(byProbe, desc)
				}
			} else if d >= 0.01 {
				others = append(others, desc)
			}
		}
		if *useTLS {
			sort.Strings(byProbe)
			sort.Strings(others)
			log.Printf("%s: TLS uprobe runs %.2f per request (%s), %.2f µs per request; other programs per request: %s", target,
				res.uprobeRuns/res.requests, strings.Join(byProbe, ", "), res.uprobeTime/res.requests*1e6, strings.Join(others, ", "))
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

// idleCPU is the machine's idle and iowait time so far, seconds
// (/proc/stat): with the processes' CPU it tells whether the run was
// CPU-bound.
func idleCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	if len(f) < 6 {
		return 0
	}
	idle, _ := strconv.ParseFloat(f[4], 64)
	iowait, _ := strconv.ParseFloat(f[5], 64)
	return (idle + iowait) / 100 // USER_HZ
}

type memSample struct{ rss, anon, file float64 }

// readMem reads pid's resident set and its split from /proc.
func readMem(pid int) memSample {
	var m memSample
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || len(strings.Fields(v)) == 0 {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
		switch k {
		case "VmRSS":
			m.rss = kb * 1024
		case "RssAnon":
			m.anon = kb * 1024
		case "RssFile":
			m.file = kb * 1024
		}
	}
	return m
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rss is pid's peak resident set (VmHWM), startup included.
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
	rssMiB        float64 // peak (VmHWM), startup included
	loadMiB       float64 // under load (the median sample of the round with the largest)
	anonMiB       float64 // its anonymous part
	fileMiB       float64 // its file-backed part
	runsPerReq    float64 // BPF program runs per request (every program)
	topPrograms   string
	serverPerReq  float64
	baselinePerRq float64
}

func report(targets []string, all map[string]map[string][]result, note string) {
	var rows []row
	for _, target := range targets {
		base := all[target]["baseline"]
		baseRPS := med(base, func(r result) float64 { return r.rps })
		baseSrv := med(base, func(r result) float64 { return perReq(r.serverCPU, r) })
		for _, s := range setups(target) {
			rs := all[target][s.name]
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
			if s.kind == otelhttp {
				rw.total = math.Max(0, rw.serverExtra)
			}
			if s.kind == otelbee || s.kind == otelbeePrev {
				// the peak: the largest of the rounds; under load: the
				// round with the largest median
				for _, r := range rs {
					rw.rssMiB = math.Max(rw.rssMiB, r.agentRSSBytes/(1<<20))
					if r.loadRSS/(1<<20) > rw.loadMiB {
						rw.loadMiB, rw.anonMiB, rw.fileMiB = r.loadRSS/(1<<20), r.loadAnon/(1<<20), r.loadFile/(1<<20)
					}
				}
				rw.runsPerReq = med(rs, func(r result) float64 { return r.bpfRuns / r.requests })
			}
			if s.kind == otelbee {
				rw.topPrograms = topPrograms(rs)
			}
			rows = append(rows, rw)
		}
	}
	fmt.Printf("wrk -t%d -c%d -d%s, %d alternating rounds, medians (RSS under load: the median sample of a run, the largest of the rounds; peak RSS: VmHWM, startup included, the largest of the rounds); agent --collectors=%s; %s.\n\n",
		*threads, *conns, *duration, *rounds, *collectors, note)
	if *matrix {
		fmt.Printf("| target | sampled as spans | --bpf.stats | req/s vs baseline | agent µs/req | BPF µs/req | agent RSS under load MiB (anon + file) | agent peak RSS MiB |\n")
		fmt.Printf("|---|---|---|---|---|---|---|---|\n")
		for _, stats := range []bool{true, false} {
			for _, r := range rows {
				if r.setup.kind != otelbee || r.setup.bpfStats != stats {
					continue
				}
				bpf := "–"
				if stats {
					bpf = fmt.Sprintf("%.2f", r.bpf)
				}
				fmt.Printf("| %s | %s | %s | %.2f× | %.2f | %s | %.0f (%.0f + %.0f) | %.0f |\n",
					r.target, r.setup.sampling(), onOff(stats), r.rel, r.agent, bpf, r.loadMiB, r.anonMiB, r.fileMiB, r.rssMiB)
			}
		}
		fmt.Println()
	}
	fmt.Printf("| target | setup | sampled as spans | --bpf.stats | req/s (median) | vs baseline | p50 µs | p99 µs | agent CPU µs/req | BPF µs/req | server CPU µs/req (extra) | total µs/req | agent RSS under load MiB (anon + file) | agent peak RSS MiB |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		samp, stats, mem := "", "", ""
		if r.setup.kind != baseline {
			samp = r.setup.sampling()
		}
		if r.setup.kind == otelbee || r.setup.kind == otelbeePrev {
			stats = onOff(r.setup.bpfStats)
			mem = fmt.Sprintf("%.0f (%.0f + %.0f)", r.loadMiB, r.anonMiB, r.fileMiB)
		}
		fmt.Printf("| %s | %s | %s | %s | %.0f | %.3f× | %.0f | %.0f | %.2f | %.2f | %.2f (%+.2f) | %.2f | %s | %.0f |\n",
			r.target, r.setup.name, samp, stats, r.rps, r.rel, r.p50, r.p99, r.agent, r.bpf, r.serverPerReq, r.serverExtra, r.total, mem, r.rssMiB)
	}
	for _, r := range rows {
		if r.topPrograms != "" {
			fmt.Printf("\n%s/%s, BPF run time per request by program (median run): %s\n", r.target, r.setup.name, r.topPrograms)
		}
	}
	// The floor: a program entry costs about -entry-ns on this machine even
	// when the program returns at once, so the runs per request times that
	// is what any hook placement with these runs would cost; what the
	// programs measure above it is their own work.
	for _, r := range rows {
		if r.setup.kind == otelbee && r.setup.bpfStats && r.runsPerReq > 0 {
			floor := r.runsPerReq * *entryNs / 1000
			fmt.Printf("\n%s/%s: %.1f BPF program runs per request (both sides, every collector); floor at %.0f ns per entry %.2f µs/req; BPF measured %.2f µs/req (%.1f× the floor), agent %.2f µs/req on top\n",
				r.target, r.setup.name, r.runsPerReq, *entryNs, floor, r.bpf, r.bpf/floor, r.agent)
		}
	}
	if *account {
		printAccounting(targets, all)
	}
	if *useTLS {
		for _, target := range targets {
			for _, s := range setups(target) {
				if s.kind != otelbee {
					continue
				}
				rs := all[target][s.name]
				fmt.Printf("\n%s/%s, TLS uprobes per request (median): %.2f runs, %.2f µs of BPF\n", target, s.name,
					med(rs, func(r result) float64 { return r.uprobeRuns / r.requests }),
					med(rs, func(r result) float64 { return r.uprobeTime / r.requests * 1e6 }))
			}
		}
	}
	charts := map[string][]row{*svgOut: rows}
	if *matrix {
		charts = map[string][]row{}
		for _, r := range rows {
			every := r.setup.sampling() == "every request"
			if r.setup.kind == baseline || every {
				charts[*svgOut] = append(charts[*svgOut], r)
			}
			if r.setup.kind == baseline || !every {
				charts[*svgSampled] = append(charts[*svgSampled], r)
			}
		}
	}
	for path, rs := range charts {
		if err := os.WriteFile(path, []byte(chart(rs, note)), 0o644); err != nil {
			log.Printf("writing %s: %v", path, err)
		} else {
			log.Printf("wrote %s", path)
		}
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
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
func chart(rows []row, note string) string {
	const barW, step, gap = 30, 38, 20
	targets := 0
	prev := ""
	for _, r := range rows {
		if r.target != prev {
			targets++
			prev = r.target
		}
	}
	panelW := 20 + len(rows)*step + (targets-1)*gap
	w, h := 2*panelW+60, 380
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	colors := map[kind]string{baseline: "#888888", otelbee: "#f2a900", otelhttp: "#4a7bd0", otelbeePrev: "#c9a66b"}
	panel := func(x0 int, title string, val func(row) float64, max float64, format string) {
		fmt.Fprintf(&b, `<text x="%d" y="20" font-weight="bold">%s</text>`+"\n", x0, title)
		top, bottom := 40, h-110
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, bottom, x0+panelW, bottom)
		x := x0 + 10
		prev := ""
		for _, r := range rows {
			if prev != "" && prev != r.target {
				x += gap
			}
			if prev != r.target {
				fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x, h-30, r.target)
			}
			prev = r.target
			v := val(r)
			bh := int(float64(bottom-top) * v / max)
			// a ratio past the scale (a collapsed baseline) stays on the chart
			bh = min(bh, bottom-top+20)
			if bh < 0 {
				bh = 0
			}
			fill := colors[r.setup.kind]
			opacity := 1.0
			if (r.setup.kind == otelbee || r.setup.kind == otelbeePrev) && !r.setup.bpfStats {
				opacity = 0.55 // without --bpf.stats
			}
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s" fill-opacity="%.2f"/>`+"\n", x, bottom-bh, barW, bh, fill, opacity)
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10">`+format+`</text>`+"\n", x, bottom-bh-3, v)
			fmt.Fprintf(&b, `<text font-size="9" transform="translate(%d,%d) rotate(40)">%s</text>`+"\n", x+4, bottom+10, r.setup.name)
			x += step
		}
	}
	maxCPU := 0.0
	for _, r := range rows {
		maxCPU = math.Max(maxCPU, r.total)
	}
	panel(10, "Throughput vs baseline (wrk, median)", func(r row) float64 { return r.rel }, 1.15, "%.2f")
	panel(panelW+50, "Added CPU per request (µs, median)", func(r row) float64 {
		if r.setup.kind == baseline {
			return 0
		}
		return r.total
	}, math.Max(maxCPU*1.15, 1), "%.1f")
	fmt.Fprintf(&b, `<text x="10" y="%d" font-size="10">grey: no instrumentation · orange: otelbee (all collectors, OTLP export; pale: without --bpf.stats) · tan: otelbee-prev · blue: otelhttp middleware + OTel SDK</text>`+"\n", h-14)
	fmt.Fprintf(&b, `<text x="10" y="%d" font-size="10">%s</text>`+"\n", h-2, html.EscapeString(note))
	b.WriteString("</svg>\n")
	return b.String()
}

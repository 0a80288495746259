// Command redisoverhead measures what the agent's Redis protocol costs:
// redis-benchmark against a local redis-server, pipelined (-P 16) and not,
// without the agent and with it (--collectors=redis), rounds alternating:
// throughput, the ratio to the baseline of the same round, the agent's CPU
// and the BPF run time per operation, and redis-server's CPU per operation.
// Run as root after `make build`: go run ./bench/redisoverhead.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

var (
	agentBin = flag.String("agent", "build/bin/otelbee", "agent binary")
	requests = flag.Int("n", 200000, "redis-benchmark requests per test")
	clients  = flag.Int("c", 16, "redis-benchmark connections")
	tests    = flag.String("t", "set,get", "redis-benchmark tests")
	rounds   = flag.Int("rounds", 3, "alternating rounds per setup")
	bpfStats = flag.Bool("bpf-stats", true, "run the agent with --bpf.stats")
)

type result struct {
	ops                   float64 // operations run (every test)
	recorded, dropped     float64 // the agent's L7 records and those dropped (ring buffer full)
	seconds               float64 // wall time of the benchmark
	agentCPU, bpf, server float64 // CPU seconds
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		log.Fatal("run as root: the agent loads BPF programs")
	}
	for _, tool := range []string{"redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			log.Fatalf("%s not installed (make deps)", tool)
		}
	}
	type key struct {
		pipeline int
		agent    bool
	}
	all := map[key][]result{}
	for r := 0; r < *rounds; r++ {
		for _, p := range []int{16, 1} {
			order := []bool{false, true}
			if r%2 == 1 {
				order = []bool{true, false}
			}
			for _, withAgent := range order {
				res := run(p, withAgent)
				log.Printf("P%d agent=%v round %d: %.0f ops/s agent %.2fµs/op bpf %.2fµs/op server %.2fµs/op",
					p, withAgent, r+1, res.ops/res.seconds, 1e6*res.agentCPU/res.ops, 1e6*res.bpf/res.ops, 1e6*res.server/res.ops)
				all[key{p, withAgent}] = append(all[key{p, withAgent}], res)
			}
		}
	}
	fmt.Printf("| redis-benchmark | setup | ops/s | vs baseline | agent CPU µs/op | BPF µs/op | redis-server CPU µs/op | records dropped |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range []int{16, 1} {
		base := med(all[key{p, false}], func(r result) float64 { return r.ops / r.seconds })
		for _, withAgent := range []bool{false, true} {
			rs := all[key{p, withAgent}]
			ops := med(rs, func(r result) float64 { return r.ops / r.seconds })
			name := "baseline"
			agent, bpf, drop := "", "", ""
			if withAgent {
				name = "otelbee"
				agent = fmt.Sprintf("%.2f", med(rs, func(r result) float64 { return 1e6 * r.agentCPU / r.ops }))
				bpf = fmt.Sprintf("%.2f", med(rs, func(r result) float64 { return 1e6 * r.bpf / r.ops }))
				drop = fmt.Sprintf("%.1f %%", med(rs, func(r result) float64 { return 100 * r.dropped / max(r.recorded+r.dropped, 1) }))
			}
			fmt.Printf("| -P %d -c %d -t %s | %s | %.0f | %.3f× | %s | %s | %.2f | %s |\n", p, *clients, *tests, name, ops, ops/base, agent, bpf,
				med(rs, func(r result) float64 { return 1e6 * r.server / r.ops }), drop)
		}
	}
}

func med(rs []result, f func(result) float64) float64 {
	var xs []float64
	for _, r := range rs {
		xs = append(xs, f(r))
	}
	sort.Float64s(xs)
	if len(xs) == 0 {
		return 0
	}
	return xs[len(xs)/2]
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func run(pipeline int, withAgent bool) result {
	var agent *exec.Cmd
	prom := fmt.Sprintf("127.0.0.1:%d", freePort())
	if withAgent {
		agent = exec.Command(*agentBin, "--collectors=redis", "--bpf.stats="+strconv.FormatBool(*bpfStats),
			"--prometheus.listen="+prom, "--log.level=warn")
		agent.Stderr = os.Stderr
		if err := agent.Start(); err != nil {
			log.Fatal(err)
		}
		waitHTTP("http://" + prom + "/metrics")
		defer func() { agent.Process.Signal(os.Interrupt); agent.Wait() }()
	}
	port := strconv.Itoa(freePort())
	srv := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := srv.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			break
		}
		if time.Now().After(end) {
			log.Fatal("redis-server did not listen")
		}
	}
	srvBefore := cpu(srv.Process.Pid)
	var agentBefore, bpfBefore float64
	if agent != nil {
		agentBefore, bpfBefore = cpu(agent.Process.Pid), bpfRunTime("http://"+prom+"/metrics")
	}
	var recBefore, dropBefore float64
	if agent != nil {
		recBefore, dropBefore = records("http://" + prom + "/metrics")
	}
	start := time.Now()
	out, err := exec.Command("redis-benchmark", "-p", port, "-n", strconv.Itoa(*requests), "-c", strconv.Itoa(*clients),
		"-P", strconv.Itoa(pipeline), "-t", *tests, "-q").CombinedOutput()
	if err != nil {
		log.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	res := result{seconds: time.Since(start).Seconds(), ops: float64(*requests * len(strings.Split(*tests, ",")))}
	res.server = cpu(srv.Process.Pid) - srvBefore
	if agent != nil {
		time.Sleep(300 * time.Millisecond) // the agent drains what the run produced
		res.agentCPU = cpu(agent.Process.Pid) - agentBefore
		res.bpf = bpfRunTime("http://"+prom+"/metrics") - bpfBefore
		r, d := records("http://" + prom + "/metrics")
		res.recorded, res.dropped = r-recBefore, d-dropBefore
	}
	return res
}

func waitHTTP(url string) {
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			return
		}
	}
	log.Fatalf("%s never answered", url)
}

// cpu is a process's user+system CPU seconds.
func cpu(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

var (
	recLine  = regexp.MustCompile(`^otelbee_l7_records_total\{[^}]*protocol="redis"[^}]*\} (\S+)`)
	dropLine = regexp.MustCompile(`^otelbee_l7_records_dropped_total\{[^}]*protocol="redis"[^}]*\} (\S+)`)
)

// records returns the agent's Redis records and those it dropped.
func records(url string) (rec, drop float64) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := recLine.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			rec += v
		}
		if m := dropLine.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			drop += v
		}
	}
	return rec, drop
}

var bpfLine = regexp.MustCompile(`^otelbee_bpf_program_run_time_seconds_total\{[^}]*\} (\S+)`)

// bpfRunTime sums the agent's BPF run time over its programs.
func bpfRunTime(url string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := bpfLine.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			total += v
		}
	}
	return total
}

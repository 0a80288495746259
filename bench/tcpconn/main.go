// Command tcpconn measures what the TCP collector costs under a
// connection-heavy load: short loopback connections at a fixed rate, with the
// agent running and kernel BPF statistics on. It prints agent CPU and BPF run
// time per connection, and the agent's peak RSS. Run by `make bench` as root.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	var (
		agentBin = flag.String("agent", "build/bin/otelbee", "agent binary")
		loadBin  = flag.String("tcpload", "", "tcpload binary (built if empty)")
		rate     = flag.Int("rate", 20000, "connections per second")
		duration = flag.Duration("duration", 10*time.Second, "load duration")
	)
	flag.Parse()
	if *loadBin == "" {
		*loadBin = filepath.Join(os.TempDir(), "tcpload-bench")
		if out, err := exec.Command("go", "build", "-o", *loadBin, "./e2e/cmd/tcpload").CombinedOutput(); err != nil {
			log.Fatalf("building tcpload: %v\n%s", err, out)
		}
	}
	promAddr := freeAddr()
	agent := exec.Command(*agentBin, "--collectors=tcp", "--bpf.stats", "--prometheus.listen="+promAddr, "--log.level=warn")
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() {
		agent.Process.Signal(os.Interrupt)
		agent.Wait()
	}()
	metricsURL := "http://" + promAddr + "/metrics"
	for i := 0; ; i++ {
		if _, err := http.Get(metricsURL); err == nil {
			break
		}
		if i > 100 {
			log.Fatal("agent did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}

	ready := filepath.Join(os.TempDir(), fmt.Sprintf("tcpconn-ready-%d", os.Getpid()))
	os.Remove(ready)
	server := exec.Command(*loadBin, "-server", "-addr", "127.0.0.1:0", "-ready-file", ready)
	server.Env = append(os.Environ(), "OTEL_SERVICE_NAME=bench-server")
	if err := server.Start(); err != nil {
		log.Fatal(err)
	}
	defer server.Process.Kill()
	var addr string
	for addr == "" {
		b, _ := os.ReadFile(ready)
		addr = strings.TrimSpace(string(b))
		time.Sleep(20 * time.Millisecond)
	}

	cpu0, _ := cpuSeconds(agent.Process.Pid)
	bpf0 := bpfRunTime(metricsURL, "otelbee_bpf_program_run_time_seconds_total")
	runs0 := bpfRunTime(metricsURL, "otelbee_bpf_program_run_count_total")
	client := exec.Command(*loadBin, "-client", "-addr", addr, "-rate", strconv.Itoa(*rate),
		"-duration", duration.String(), "-parallel", "128", "-send", "100", "-recv", "100", "-max", "1000000")
	client.Env = append(os.Environ(), "OTEL_SERVICE_NAME=bench-client")
	client.Stderr = io.Discard
	out, err := client.Output()
	if err != nil {
		log.Printf("tcpload client: %v", err)
	}
	time.Sleep(time.Second) // let the last closes land
	cpu1, _ := cpuSeconds(agent.Process.Pid)
	bpf1 := bpfRunTime(metricsURL, "otelbee_bpf_program_run_time_seconds_total")
	runs1 := bpfRunTime(metricsURL, "otelbee_bpf_program_run_count_total")
	hwm := peakRSS(agent.Process.Pid)

	var rep struct {
		Connections int64 `json:"connections"`
		Load        struct {
			Launched     int64   `json:"launched"`
			AchievedRate float64 `json:"achieved_rate"`
		} `json:"load"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	json.Unmarshal([]byte(lines[len(lines)-1]), &rep)
	conns := float64(rep.Connections)
	if conns == 0 {
		log.Fatalf("no connections made: %s", out)
	}
	// Each connection is seen twice: the client's end and the server's.
	fmt.Printf("connections: %d (target %d/s for %s, achieved %.0f/s)\n", rep.Connections, *rate, *duration, rep.Load.AchievedRate)
	fmt.Printf("agent CPU: %.3f s total, %.2f µs per connection\n", cpu1-cpu0, (cpu1-cpu0)/conns*1e6)
	var bpfTotal float64
	fmt.Printf("BPF run time per connection, by program:\n")
	names := make([]string, 0, len(bpf1))
	for name := range bpf1 {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v := bpf1[name]
		d := v - bpf0[name]
		bpfTotal += d
		runs := runs1[name] - runs0[name]
		perRun := 0.0
		if runs > 0 {
			perRun = d / runs * 1e9
		}
		fmt.Printf("  %-24s %8.3f µs  (%6.2f runs, %5.0f ns per run)\n", name, d/conns*1e6, runs/conns, perRun)
	}
	fmt.Printf("BPF total: %.2f µs per connection\n", bpfTotal/conns*1e6)
	fmt.Printf("total (agent + BPF): %.2f µs per connection\n", (cpu1-cpu0+bpfTotal)/conns*1e6)
	fmt.Printf("agent peak RSS: %.1f MB\n", float64(hwm)/1e6)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100, nil
}

func peakRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1000
		}
	}
	return 0
}

// bpfRunTime reads one of the agent's per-program BPF statistics.
func bpfRunTime(url, metric string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		i := strings.Index(line, `program="`)
		j := strings.Index(line[i+9:], `"`)
		name := line[i+9 : i+9+j]
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		out[name] = v
	}
	return out
}

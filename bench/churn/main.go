// Command churn measures what a host's process churn costs the agent (issue
// 16): with every collector on, a server and thousands of short-lived curl
// processes, one HTTP request each, it prints the series in /metrics, the
// size and time of one scrape and the agent's RSS (and peak) idle, after
// the churn, and once the exited processes' series have been retired. Run
// by `make bench` as root; -instance=pid shows the per-process identity
// of before.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	var (
		agentBin  = flag.String("agent", "build/bin/otelbee", "agent binary")
		procs     = flag.Int("processes", 3000, "short-lived client processes")
		parallel  = flag.Int("parallel", 4, "client loops running at once")
		instance  = flag.String("instance", "service", "--process.instance of the agent")
		retention = flag.Duration("retention", 30*time.Second, "--process.retention of the agent")
		settle    = flag.Duration("settle", 150*time.Second, "wait after the churn before the last row (retention + the collectors' retirement)")
		warmup    = flag.Duration("warmup", 20*time.Second, "wait after the agent's start before the idle row (the agent gives start-up's memory back 2 s after its collectors run, and discovery of the running processes settles)")
	)
	flag.Parse()
	promAddr := freeAddr()
	agent := exec.Command(*agentBin, "--collectors=all", "--prometheus.listen="+promAddr, "--log.level=warn",
		"--state-dir=", "--process.instance="+*instance, "--process.retention="+retention.String())
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() {
		agent.Process.Signal(os.Interrupt)
		agent.Wait()
	}()
	url := "http://" + promAddr + "/metrics"
	for i := 0; ; i++ {
		if _, err := http.Get(url); err == nil {
			break
		}
		if i > 100 {
			log.Fatal("agent did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}

	srvAddr := freeAddr()
	_, port, _ := net.SplitHostPort(srvAddr)
	server := exec.Command("python3", "-m", "http.server", port, "--bind", "127.0.0.1", "--directory", os.TempDir())
	server.Env = append(os.Environ(), "OTEL_SERVICE_NAME=churn-server")
	if err := server.Start(); err != nil {
		log.Fatal(err)
	}
	defer server.Process.Kill()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", srvAddr); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			log.Fatal("server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(*warmup) // the agent's start-up series and memory settle

	pid := agent.Process.Pid
	fmt.Printf("--process.instance=%s, %d short-lived curl processes (%d loops), --collectors=all\n\n", *instance, *procs, *parallel)
	fmt.Println("| load | series in /metrics (the clients') | /metrics size | scrape time | agent RSS MiB (anon + file) | agent peak RSS MiB |")
	fmt.Println("|---|---|---|---|---|---|")
	row := func(name string) {
		// RSS before the scrape: the steady state, not the scrape's own
		// buffers.
		rss, anon, file := status(pid, "VmRSS"), status(pid, "RssAnon"), status(pid, "RssFile")
		series, clients, size, took := scrape(url)
		fmt.Printf("| %s | %d (%d) | %.1f kB | %.0f ms | %.0f (%.0f + %.0f) | %.0f |\n", name, series, clients, float64(size)/1e3,
			float64(took.Microseconds())/1e3, rss/1024, anon/1024, file/1024, status(pid, "VmHWM")/1024)
	}
	row("idle")

	start := time.Now()
	var wg sync.WaitGroup
	for l := range *parallel {
		n := *procs / *parallel
		if l < *procs%*parallel {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do curl -s -o /dev/null http://%s/; i=$((i+1)); done`, n, srvAddr)
			cmd := exec.Command("sh", "-c", script)
			cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=churn-client")
			if out, err := cmd.CombinedOutput(); err != nil {
				log.Fatalf("clients: %v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	time.Sleep(3 * time.Second)
	row(fmt.Sprintf("+ %d short-lived processes (%.0f/min)", *procs, float64(*procs)/took.Minutes()))
	time.Sleep(*settle)
	row(fmt.Sprintf("%s later (retention)", settle.Round(time.Second)))
}

// scrape returns the sample lines (all; the churn clients'), bytes and
// time of one scrape. The agent sees every process on the host: on a shared
// machine the total includes others' traffic.
func scrape(url string) (series, clients, size int, took time.Duration) {
	start := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		log.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took = time.Since(start)
	if err != nil {
		log.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line != "" && line[0] != '#' {
			series++
			if strings.Contains(line, `job="churn-client"`) {
				clients++
			}
		}
	}
	return series, clients, len(b), took
}

// status reads a kB field of /proc/<pid>/status.
func status(pid int, field string) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return f
		}
	}
	return 0
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

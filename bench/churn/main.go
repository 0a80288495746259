// Command churn measures what a host's process churn costs the agent (issue
// 16): with every collector on, a server and thousands of short-lived curl
// processes, one HTTP request each, it prints the series in /metrics, the
// size and time of one scrape and the agent's RSS idle, after the churn,
// and once the exited processes' series have been retired; then the
// memory summary the targets are about: the baseline (idle), the
// steady RSS under the churn (the median of samples every 100 ms while it
// runs), its peak (VmHWM, reset when the churn starts), the RSS after the
// retention, and the two ratios peak/steady and after/baseline. Run by
// `make bench` as root; -instance=pid shows the per-process identity of
// before.
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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/otelbee/otelbee/bench/internal/proc"
)

func main() {
	var (
		agentBin   = flag.String("agent", "build/bin/otelbee", "agent binary")
		procs      = flag.Int("processes", 3000, "short-lived client processes")
		parallel   = flag.Int("parallel", 4, "client loops running at once")
		instance   = flag.String("instance", "service", "--process.instance of the agent")
		retention  = flag.Duration("retention", 30*time.Second, "--process.retention of the agent")
		settle     = flag.Duration("settle", 150*time.Second, "wait after the churn before the last row (retention + the collectors' retirement)")
		warmup     = flag.Duration("warmup", 20*time.Second, "wait after the agent's start before the idle row (the agent gives start-up's memory back 2 s after its collectors run, and discovery of the running processes settles)")
		memProfile = flag.String("memprofile", "", "write the agent's heap profile at its exit (after the last row) to this file (OTELBEE_MEMPROFILE)")
		logLevel   = flag.String("log-level", "warn", "the agent's --log.level (debug logs the Go runtime's memory every 10 s)")
	)
	flag.Parse()
	fmt.Printf("load average %.2f at the start\n", proc.LoadAvg())
	promAddr := freeAddr()
	agent := exec.Command(*agentBin, "--collectors=all", "--prometheus.listen="+promAddr, "--log.level="+*logLevel,
		"--state-dir=", "--process.instance="+*instance, "--process.retention="+retention.String())
	agent.Stderr = os.Stderr
	if *memProfile != "" {
		agent.Env = append(os.Environ(), "OTELBEE_MEMPROFILE="+*memProfile)
	}
	if err := agent.Start(); err != nil {
		log.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			agent.Process.Signal(os.Interrupt)
			agent.Wait()
		}
	}
	defer stop()
	url := "http://" + promAddr + "/metrics"
	if err := proc.WaitHTTP(url, 10*time.Second); err != nil {
		log.Fatal("agent did not start: ", err)
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
	mib := func(field string) float64 { return proc.StatusKB(pid, field) / 1024 }
	fmt.Printf("--process.instance=%s, %d short-lived curl processes (%d loops), --collectors=all\n\n", *instance, *procs, *parallel)
	fmt.Println("| load | series in /metrics (the clients') | /metrics size | scrape time | agent RSS MiB (anon + file) | agent peak RSS MiB |")
	fmt.Println("|---|---|---|---|---|---|")
	row := func(name string, peak float64) float64 {
		// RSS before the scrape: the steady state, not the scrape's own
		// buffers.
		rss, anon, file := mib("VmRSS"), mib("RssAnon"), mib("RssFile")
		series, clients, size, took := scrape(url)
		if peak == 0 {
			peak = mib("VmHWM")
		}
		fmt.Printf("| %s | %d (%d) | %.1f kB | %.0f ms | %.0f (%.0f + %.0f) | %.0f |\n", name, series, clients, float64(size)/1e3,
			float64(took.Microseconds())/1e3, rss, anon, file, peak)
		return rss
	}
	baseline := row("idle", 0)

	// The peak under the churn is its own, not start-up's: VmHWM is reset
	// (clear_refs 5) as the churn starts, and RSS sampled meanwhile.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		log.Printf("resetting the agent's VmHWM: %v (the peak includes start-up's)", err)
	}
	var (
		samplesMu sync.Mutex
		samples   []float64
		done      = make(chan struct{})
		sampled   = make(chan struct{})
	)
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				samplesMu.Lock()
				samples = append(samples, mib("VmRSS"))
				samplesMu.Unlock()
			}
		}
	}()
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
	time.Sleep(3 * time.Second) // the last exits reach the agent
	churnPeak := mib("VmHWM")
	close(done)
	<-sampled
	steady := median(samples)
	row(fmt.Sprintf("+ %d short-lived processes (%.0f/min)", *procs, float64(*procs)/took.Minutes()), churnPeak)
	time.Sleep(*settle)
	after := row(fmt.Sprintf("%s later (retention)", settle.Round(time.Second)), 0)
	fmt.Printf("\nload average %.2f at the end\n\n", proc.LoadAvg())
	fmt.Println("| baseline (idle) MiB | steady under the churn MiB (median of samples every 100 ms) | peak under the churn MiB | peak / steady | after the retention MiB | after / baseline |")
	fmt.Println("|---|---|---|---|---|---|")
	fmt.Printf("| %.0f | %.0f | %.0f | %.2f× | %.0f | %.2f× |\n", baseline, steady, churnPeak, churnPeak/steady, after, after/baseline)
	stop() // the heap profile, if asked, is written at the agent's exit
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
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

func freeAddr() string {
	a, err := proc.FreeAddr()
	if err != nil {
		log.Fatal(err)
	}
	return a
}

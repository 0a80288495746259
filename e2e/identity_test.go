package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// The agent's own series (job="otelbee"), by name and labels.
const (
	cacheSizeSeries     = `otelbee_process_cache_size{job="otelbee"}`
	rssSeries           = `process_memory_usage_bytes{job="otelbee"}`
	execDeliveredSeries = `otelbee_events_delivered_total{job="otelbee",collector="process",stage="ringbuf"}`
	execDroppedSeries   = `otelbee_events_dropped_total{job="otelbee",collector="process",stage="ringbuf"}`
)

// runExecs runs /bin/true n times from a few goroutines: n real short
// processes, each announced by the exec watcher and gone milliseconds later.
func runExecs(t *testing.T, n int) {
	t.Helper()
	var ok atomic.Int64
	var wg sync.WaitGroup
	const workers = 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if exec.Command("/bin/true").Run() == nil {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != int64(n) {
		t.Fatalf("%d of %d execs of /bin/true succeeded", ok.Load(), n)
	}
}

// scrapeValues returns the values of the given series (name{labels}, each
// the sum of the series that have those labels) from one scrape.
func scrapeValues(t *testing.T, url string, series ...string) []float64 {
	t.Helper()
	mfs := dnsScrapeFamilies(t, url)
	out := make([]float64, len(series))
	for i, s := range series {
		name, sel, _ := strings.Cut(strings.TrimSuffix(s, "}"), "{")
		match := map[string]string{}
		for _, m := range labelPairRE.FindAllStringSubmatch(sel, -1) {
			match[m[1]] = m[2]
		}
		out[i] = dnsFamilySum(mfs, name, match)
	}
	return out
}

// TestProcessCacheBounded: with each collector alone (one agent per
// collector, all three watching the same burst), 20,000 real short-lived
// processes leave no identity behind once the retention has passed: the
// process cache and the agent's resident memory come back to where they
// were before the burst. Before identity swept its own cache, only the TCP
// collector's sweep forgot exited processes: with dns or http alone the
// cache kept all 20,000 (and ~30 MB).
//
// The cache also holds the host's other processes (other tests, builds),
// which come and go during the test: "back" allows for the execs of one
// retention period on a busy host (a tenth of the burst), far from the
// burst itself. Resident memory floats with the garbage collector's cycle:
// it is compared at its lowest, before the burst and in the minute after
// the cache came back. What is compared is the agent's anonymous memory
// (RssAnon: heap, stacks, maps' copies), what a leak would grow: the
// file-backed part is the executable's own pages, which the agent gives
// back once after start-up and which the burst's code paths fault in again
// from the page cache (both are logged); it must come back to within 5 MB.
// Each agent must have received every exec of the burst.
func TestProcessCacheBounded(t *testing.T) {
	const (
		execs     = 20000
		retention = 20 * time.Second
	)
	type agentRun struct {
		collector            string
		agent                *harness.Agent
		cache0, rss0         float64
		delivered0, dropped0 float64
		cachePeak, rssPeak   float64
		cacheBack, rssLow    float64
		anon0, anonLow       float64
		delivered, dropped   float64
		backAt               time.Duration
	}
	values := func(r *agentRun) (cache, rss, delivered, dropped float64) {
		v := scrapeValues(t, r.agent.MetricsURL, cacheSizeSeries, rssSeries, execDeliveredSeries, execDroppedSeries)
		return v[0], v[1], v[2], v[3]
	}
	var runs []*agentRun
	for _, c := range []string{"tcp", "dns", "http"} {
		a := harness.StartAgent(t, nil, "--collectors="+c, fmt.Sprintf("--process.retention=%s", retention))
		runs = append(runs, &agentRun{collector: c, agent: a})
	}
	// A few execs first: on a quiet host nothing else may exec while the
	// agents settle, and an empty cache reports 0 (these stay cached for
	// the retention, longer than the settling below).
	runExecs(t, 20)
	// Settled: start-up garbage collected, the host's processes cached.
	time.Sleep(3 * time.Second)
	for i := 0; i < 5; i++ {
		for _, r := range runs {
			cache, rss, delivered, dropped := values(r)
			if cache == 0 || rss == 0 {
				t.Fatalf("%s: no cache size or RSS before the burst:\n%s", r.collector, r.agent.LogTail(20))
			}
			r.cache0 = max(r.cache0, cache)
			if r.rss0 == 0 || rss < r.rss0 {
				r.rss0 = rss
			}
			if a := anonRSS(t, r.agent.Pid()); r.anon0 == 0 || a < r.anon0 {
				r.anon0 = a
			}
			r.delivered0, r.dropped0 = delivered, dropped
		}
		time.Sleep(2 * time.Second)
	}
	start := time.Now()
	runExecs(t, execs)
	burst := time.Since(start)
	for _, r := range runs {
		r.cachePeak, r.rssPeak, _, _ = values(r)
	}
	t.Logf("%d execs in %s", execs, burst.Round(time.Millisecond))

	const lowWindow = time.Minute
	deadline := time.Now().Add(retention + 3*time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(3 * time.Second)
		pending := 0
		for _, r := range runs {
			cache, rss, delivered, dropped := values(r)
			r.delivered, r.dropped = delivered-r.delivered0, dropped-r.dropped0
			switch {
			case r.backAt == 0 && cache <= r.cache0+execs/10:
				r.backAt, r.cacheBack, r.rssLow, r.anonLow = time.Since(start)-burst, cache, rss, anonRSS(t, r.agent.Pid())
			case r.backAt != 0:
				r.cacheBack, r.rssLow, r.anonLow = min(r.cacheBack, cache), min(r.rssLow, rss), min(r.anonLow, anonRSS(t, r.agent.Pid()))
			}
			if r.backAt == 0 || time.Since(start)-burst-r.backAt < lowWindow {
				pending++
			}
		}
		if pending == 0 {
			break
		}
	}
	for _, r := range runs {
		t.Logf("%-4s cache %.0f -> %.0f -> %.0f (back %s after the burst), RSS %.1f -> %.1f -> %.1f MB, anonymous %.1f -> %.1f MB (lowest in the minute after it came back), execs delivered %.0f dropped %.0f",
			r.collector, r.cache0, r.cachePeak, r.cacheBack, r.backAt.Round(time.Second), r.rss0/1e6, r.rssPeak/1e6, r.rssLow/1e6, r.anon0/1e6, r.anonLow/1e6, r.delivered, r.dropped)
		if r.delivered < execs || r.dropped != 0 {
			t.Errorf("%s: the agent received %.0f exec events (%.0f dropped) for a burst of %d", r.collector, r.delivered, r.dropped, execs)
		}
		if r.backAt == 0 {
			t.Errorf("%s: the cache did not come back to %.0f: the retention is %s", r.collector, r.cache0, retention)
		} else if r.anonLow > r.anon0+5e6 {
			// 5 MB: the garbage collector's and the maps' slack at ~10 MB
			// of anonymous memory (2.4 MB seen); the burst's 20,000
			// identities kept were ~30 MB.
			t.Errorf("%s: anonymous resident memory stayed at %.1f MB or more (was %.1f before the burst)", r.collector, r.anonLow/1e6, r.anon0/1e6)
		}
	}
}

// startNginxWorkers runs Debian's nginx (master and workers, as packaged)
// with OTEL_SERVICE_NAME=service, serving /index.html on a loopback port.
// nginx writes its process titles over its environment area, so /proc no
// longer shows the variable; its workers are forked, never exec'd.
func startNginxWorkers(t *testing.T, service string, workers int) (port int, master *harness.Process, workerPids []int) {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<html>hello</html>\n"), 0o644)
	port = harness.FreePort(t)
	master = runNginx(t, dir, service, port, nginxSetup{Workers: workers, HTTP: fmt.Sprintf(`
    access_log off;
    server {
        listen 127.0.0.1:%[2]d;
        root %[1]s;
    }`, dir, port)})
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master.Pid(), master.Pid()))
		workerPids = workerPids[:0]
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			workerPids = append(workerPids, pid)
		}
		if len(workerPids) == workers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx %d has workers %v, want %d", master.Pid(), workerPids, workers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", workerPids[0]))
	if strings.Contains(string(environ), "OTEL_SERVICE_NAME") {
		t.Fatalf("this nginx did not rewrite its environment area: the test would prove nothing")
	}
	return port, master, workerPids
}

// getN makes n requests, each on its own connection.
func getN(t *testing.T, url string, n int) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for i := 0; i < n; i++ {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", url, resp.Status)
		}
	}
}

// serverCountsByService waits until the agent's HTTP server series of the
// given instances (host:<pid>) count want requests in all, and
// returns them by service (job, which is service.name without a
// namespace).
func serverCountsByService(t *testing.T, a *harness.Agent, pids []int, want uint64) map[string]uint64 {
	t.Helper()
	ids := map[string]bool{}
	for _, pid := range pids {
		ids[fmt.Sprintf("%s:%d", hostname(), pid)] = true
	}
	var got map[string]uint64
	var total uint64
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		got, total = map[string]uint64{}, 0
		mf := dnsScrapeFamilies(t, a.MetricsURL)["http_server_request_duration_seconds"]
		for _, m := range mf.GetMetric() {
			l := dnsLabelsOf(m)
			if ids[l["instance"]] {
				got[l["job"]] += m.GetHistogram().GetSampleCount()
				total += m.GetHistogram().GetSampleCount()
			}
		}
		if total == want {
			return got
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("nginx workers %v: %d requests by service %v, want %d", pids, total, got, want)
	return nil
}

// TestIdentitySurvivesRestart: nginx started after the agent (its workers
// named by the OTEL_SERVICE_NAME nginx was exec'd with, which only the exec
// watcher saw), then the agent restarts: with the state directory the
// workers' series still carry that service (job); without it (the control,
// which shows the scenario reproduces what the state file prevents) they
// are renamed nginx.
func TestIdentitySurvivesRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		persist bool
	}{{"state", true}, {"no_state", false}} {
		t.Run(tc.name, func(t *testing.T) {
			stateDir := filepath.Join(t.TempDir(), "otelbee")
			args := []string{"--collectors=http", "--state-dir=" + stateDir}
			if !tc.persist {
				args[1] = "--state-dir="
			}
			a1 := harness.StartAgent(t, nil, args...)
			service := fmt.Sprintf("idr-nginx-%s-%d", tc.name, os.Getpid())
			port, master, workers := startNginxWorkers(t, service, 2)
			// The workers' series are their master's instance.
			inst := []int{master.Pid()}
			url := fmt.Sprintf("http://127.0.0.1:%d/index.html", port)
			const before, after = 20, 30
			getN(t, url, before)
			if got := serverCountsByService(t, a1, inst, before); got[service] != before {
				t.Fatalf("before the restart the workers %v are named %v, want %d requests of %s", workers, got, before, service)
			}
			a1.Stop()
			_, err := os.Stat(filepath.Join(stateDir, "processes.json"))
			if tc.persist != (err == nil) {
				t.Fatalf("state file after the first run: %v", err)
			}

			a2 := harness.StartAgent(t, nil, args...)
			getN(t, url, after)
			got := serverCountsByService(t, a2, inst, after)
			wantService := service
			if !tc.persist {
				wantService = "nginx"
			}
			if got[wantService] != after || len(got) != 1 {
				t.Fatalf("after the restart the workers %v are named %v, want all %d requests under %s\nagent log:\n%s",
					workers, got, after, wantService, a2.LogTail(20))
			}
			t.Logf("after the restart: %v", got)
		})
	}
}

// anonRSS is a process's anonymous resident memory (RssAnon), in bytes.
func anonRSS(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				t.Fatalf("RssAnon %q: %v", v, err)
			}
			return kb * 1024
		}
	}
	t.Fatalf("no RssAnon in /proc/%d/status", pid)
	return 0
}

package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PrometheusBin is the Prometheus server the harness runs (Debian's package).
// The environment variable PROMETHEUS_BIN overrides it.
var PrometheusBin = "/usr/bin/prometheus"

// Prometheus is a running Prometheus server on loopback with its own config and
// temporary storage. Besides the given targets it always scrapes itself as
// job="prometheus".
type Prometheus struct {
	URL        string // http://127.0.0.1:PORT
	Addr       string // 127.0.0.1:PORT
	ConfigPath string
	Process    *Process
	client     *http.Client
}

// Sample is one element of an instant query result.
type Sample struct {
	Labels map[string]string // includes __name__ when the series has one
	Value  float64
	Time   time.Time
}

func (s Sample) String() string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", k, s.Labels[k])
	}
	fmt.Fprintf(&b, "} %g", s.Value)
	return b.String()
}

// StartPrometheus runs Prometheus scraping targets every scrapeInterval and
// waits until it is ready. A target is "host:port" (scraped at /metrics over
// http) or a URL such as "http://127.0.0.1:9464/custom/path". The server is
// stopped on t.Cleanup. It skips the test when the binary is missing.
func StartPrometheus(t testing.TB, targets []string, scrapeInterval time.Duration) *Prometheus {
	t.Helper()
	bin := PrometheusBin
	if v := os.Getenv("PROMETHEUS_BIN"); v != "" {
		bin = v
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("e2e: prometheus binary not available (%v): apt-get install prometheus, or set PROMETHEUS_BIN", err)
	}
	if scrapeInterval <= 0 {
		scrapeInterval = time.Second
	}
	jobs, err := scrapeJobs(targets)
	if err != nil {
		t.Fatalf("harness: prometheus: %v", err)
	}
	dir := t.TempDir()
	p := &Prometheus{ConfigPath: filepath.Join(dir, "prometheus.yml"), client: &http.Client{Timeout: 10 * time.Second}}

	mk := func() (*exec.Cmd, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		p.URL = "http://" + p.Addr
		cfg := prometheusConfig(p.Addr, scrapeInterval, jobs)
		if err := os.WriteFile(p.ConfigPath, []byte(cfg), 0o644); err != nil {
			return nil, fmt.Errorf("prometheus: write config: %w", err)
		}
		data, err := os.MkdirTemp(dir, "data-")
		if err != nil {
			return nil, fmt.Errorf("prometheus: storage dir: %w", err)
		}
		return exec.Command(bin,
			"--config.file="+p.ConfigPath,
			"--storage.tsdb.path="+data,
			"--web.listen-address="+p.Addr,
			"--log.level=info",
			// Keep the exemplars the agent exposes (OpenMetrics), so tests
			// can follow them to the spans in the collector.
			"--enable-feature=exemplar-storage",
		), nil
	}
	ready := func(proc *Process) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := proc.alive(); err != nil {
				return err
			}
			attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
			err := WaitHTTP(attempt, p.URL+"/-/ready")
			cancelAttempt()
			if err == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("prometheus on %s not ready: %w; output:\n%s", p.Addr, ctx.Err(), proc.LogTail(30))
			case <-tick.C:
			}
		}
	}
	proc, err := startServer(t, "prometheus", mk, ready)
	if err != nil {
		t.Fatalf("harness: start prometheus: %v", err)
	}
	p.Process = proc
	return p
}

type scrapeJob struct {
	scheme, path string
	targets      []string
}

func scrapeJobs(targets []string) ([]scrapeJob, error) {
	byKey := map[string]*scrapeJob{}
	var order []string
	for _, tg := range targets {
		scheme, path, host := "http", "/metrics", tg
		if strings.Contains(tg, "://") {
			u, err := url.Parse(tg)
			if err != nil {
				return nil, fmt.Errorf("target %q: %w", tg, err)
			}
			scheme, host = u.Scheme, u.Host
			if u.Path != "" {
				path = u.Path
			}
		}
		if host == "" || strings.ContainsAny(host, "\"'\n ") {
			return nil, fmt.Errorf("target %q: want host:port or a URL", tg)
		}
		key := scheme + "://" + path
		j, ok := byKey[key]
		if !ok {
			j = &scrapeJob{scheme: scheme, path: path}
			byKey[key] = j
			order = append(order, key)
		}
		j.targets = append(j.targets, host)
	}
	jobs := make([]scrapeJob, 0, len(order))
	for _, k := range order {
		jobs = append(jobs, *byKey[k])
	}
	return jobs, nil
}

func prometheusConfig(self string, interval time.Duration, jobs []scrapeJob) string {
	timeout := min(interval, 10*time.Second)
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n",
		promDuration(interval), promDuration(timeout), promDuration(interval))
	b.WriteString("scrape_configs:\n")
	fmt.Fprintf(&b, "  - job_name: prometheus\n    static_configs:\n      - targets: [%q]\n", self)
	for i, j := range jobs {
		name := "e2e"
		if i > 0 {
			name = fmt.Sprintf("e2e-%d", i)
		}
		// honor_labels: the agent exposes many services, each with its
		// own job and instance labels, which must not be overwritten by
		// the scrape target's.
		fmt.Fprintf(&b, "  - job_name: %q\n    honor_labels: true\n    scheme: %s\n    metrics_path: %q\n    static_configs:\n      - targets: [", name, j.scheme, j.path)
		for k, tg := range j.targets {
			if k > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", tg)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// promDuration formats d in Prometheus' duration syntax (milliseconds precision).
func promDuration(d time.Duration) string {
	if ms := d.Milliseconds(); ms%1000 != 0 {
		return fmt.Sprintf("%dms", ms)
	}
	return fmt.Sprintf("%ds", int64(d/time.Second))
}

type promResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

type promData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

type promVectorElem struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// Query runs an instant query through /api/v1/query and returns the samples
// of a vector result (or the single sample of a scalar result). Range-vector
// (matrix) and string results are errors.
func (p *Prometheus) Query(ctx context.Context, promql string) ([]Sample, error) {
	u := p.URL + "/api/v1/query?" + url.Values{"query": {promql}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", promql, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", promql, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("query %q: read response: %w", promql, err)
	}
	var pr promResponse
	if err := json.Unmarshal(body, &pr); err != nil {
		return nil, fmt.Errorf("query %q: HTTP %s, decode %q: %w", promql, resp.Status, truncate(string(body), 200), err)
	}
	if pr.Status != "success" {
		return nil, fmt.Errorf("query %q: HTTP %s: %s: %s", promql, resp.Status, pr.ErrorType, pr.Error)
	}
	var d promData
	if err := json.Unmarshal(pr.Data, &d); err != nil {
		return nil, fmt.Errorf("query %q: decode data: %w", promql, err)
	}
	switch d.ResultType {
	case "vector":
		var elems []promVectorElem
		if err := json.Unmarshal(d.Result, &elems); err != nil {
			return nil, fmt.Errorf("query %q: decode vector: %w", promql, err)
		}
		out := make([]Sample, 0, len(elems))
		for _, e := range elems {
			s, err := promSample(e.Metric, e.Value)
			if err != nil {
				return nil, fmt.Errorf("query %q: %w", promql, err)
			}
			out = append(out, s)
		}
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(d.Result, &v); err != nil {
			return nil, fmt.Errorf("query %q: decode scalar: %w", promql, err)
		}
		s, err := promSample(map[string]string{}, v)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", promql, err)
		}
		return []Sample{s}, nil
	default:
		return nil, fmt.Errorf("query %q: result type %q is not supported (want an instant vector or scalar)", promql, d.ResultType)
	}
}

func promSample(labels map[string]string, v [2]any) (Sample, error) {
	ts, ok := v[0].(float64)
	if !ok {
		return Sample{}, fmt.Errorf("sample timestamp %v is not a number", v[0])
	}
	vs, ok := v[1].(string)
	if !ok {
		return Sample{}, fmt.Errorf("sample value %v is not a string", v[1])
	}
	f, err := strconv.ParseFloat(vs, 64) // handles NaN, +Inf, -Inf
	if err != nil {
		return Sample{}, fmt.Errorf("sample value %q: %w", vs, err)
	}
	if labels == nil {
		labels = map[string]string{}
	}
	return Sample{Labels: labels, Value: f, Time: time.UnixMilli(int64(ts * 1000))}, nil
}

// Exemplar is one exemplar stored by Prometheus, with its series.
type Exemplar struct {
	Series map[string]string
	Labels map[string]string // trace_id, span_id
	Value  float64
}

// Exemplars runs /api/v1/query_exemplars for promql over [start, end].
func (p *Prometheus) Exemplars(ctx context.Context, promql string, start, end time.Time) ([]Exemplar, error) {
	u := p.URL + "/api/v1/query_exemplars?" + url.Values{
		"query": {promql},
		"start": {strconv.FormatFloat(float64(start.UnixMilli())/1000, 'f', 3, 64)},
		"end":   {strconv.FormatFloat(float64(end.UnixMilli())/1000, 'f', 3, 64)},
	}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("exemplars %q: %w", promql, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("exemplars %q: %w", promql, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("exemplars %q: read response: %w", promql, err)
	}
	var pr promResponse
	if err := json.Unmarshal(body, &pr); err != nil {
		return nil, fmt.Errorf("exemplars %q: HTTP %s, decode %q: %w", promql, resp.Status, truncate(string(body), 200), err)
	}
	if pr.Status != "success" {
		return nil, fmt.Errorf("exemplars %q: HTTP %s: %s: %s", promql, resp.Status, pr.ErrorType, pr.Error)
	}
	var data []struct {
		SeriesLabels map[string]string `json:"seriesLabels"`
		Exemplars    []struct {
			Labels map[string]string `json:"labels"`
			Value  string            `json:"value"`
		} `json:"exemplars"`
	}
	if err := json.Unmarshal(pr.Data, &data); err != nil {
		return nil, fmt.Errorf("exemplars %q: decode data: %w", promql, err)
	}
	var out []Exemplar
	for _, d := range data {
		for _, e := range d.Exemplars {
			v, err := strconv.ParseFloat(e.Value, 64)
			if err != nil {
				return nil, fmt.Errorf("exemplars %q: value %q: %w", promql, e.Value, err)
			}
			out = append(out, Exemplar{Series: d.SeriesLabels, Labels: e.Labels, Value: v})
		}
	}
	return out, nil
}

// WaitFor polls promql every 250ms until cond holds for the result, and returns
// that result. It fails the test after timeout, showing the last result or
// query error.
func (p *Prometheus) WaitFor(t testing.TB, promql string, cond func([]Sample) bool, timeout time.Duration) []Sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last []Sample
	var lastErr error
	for {
		last, lastErr = p.Query(ctx, promql)
		if lastErr == nil && cond(last) {
			return last
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				t.Fatalf("prometheus: %q: condition not met within %v; last error: %v", promql, timeout, lastErr)
			}
			t.Fatalf("prometheus: %q: condition not met within %v; last result (%d samples):\n%s", promql, timeout, len(last), samplesString(last))
			return nil
		case <-tick.C:
		}
	}
}

func samplesString(ss []Sample) string {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString("  ")
		b.WriteString(s.String())
		b.WriteString("\n")
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

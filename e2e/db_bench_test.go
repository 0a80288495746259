package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/e2e/harness"
)

var pgbenchTx = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
var pgbenchTPS = regexp.MustCompile(`tps = ([0-9.]+)`)

// pgbench runs pgbench's select-only script for d and returns the
// transactions it processed (one SELECT each) and their rate.
func pgbench(t *testing.T, bin string, port int, db, mode, service string, d time.Duration) (int64, float64) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "pgbench"), "-n", "-S", "-M", mode, "-c", "2", "-j", "2", "-T", strconv.Itoa(int(d.Seconds())),
		"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", db)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench: %v\n%s", err, out)
	}
	m, m2 := pgbenchTx.FindSubmatch(out), pgbenchTPS.FindSubmatch(out)
	if m == nil || m2 == nil {
		t.Fatalf("pgbench said:\n%s", out)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	tps, _ := strconv.ParseFloat(string(m2[1]), 64)
	return n, tps
}

// cpuTime is a process's user and system CPU time so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}

// TestDBPgbench: pgbench's select-only load (simple and prepared
// protocol) with and without the agent, in one run: every transaction is
// one "SELECT pgbench_accounts" operation, exactly, under load; the
// throughput ratio and the agent's CPU per operation are logged
// (docs/benchmarks.md), never asserted.
func TestDBPgbench(t *testing.T) {
	harness.RequireRoot(t)
	s := dbtest.StartPostgres(t)
	bin := dbtest.PostgresBin(t)
	db := "bench" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	for _, argv := range [][]string{
		{"psql", "-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", "-c", "CREATE DATABASE " + db},
		{filepath.Join(bin, "pgbench"), "-i", "-q", "-s", "2", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", db},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", argv[0], err, out)
		}
	}
	// baseline and agent alternate, each agent run with an agent of its
	// own, so that the machine's other load falls on both alike
	d := 5 * time.Second
	for _, mode := range []string{"simple", "prepared"} {
		_, base := pgbench(t, bin, s.Port, db, mode, "pgbench-base-"+db, d)
		agent := harness.StartAgent(t, nil, "--collectors=postgresql")
		time.Sleep(time.Second)
		service := "pgbench-" + mode + "-" + db
		cpu0 := cpuTime(t, agent.Pid())
		n, tps := pgbench(t, bin, s.Port, db, mode, service, d)
		cpu := cpuTime(t, agent.Pid()) - cpu0
		count := func(mfs map[string]*dto.MetricFamily) int64 {
			ops, _, _ := dbOps(mfs, db)
			return ops["SELECT pgbench_accounts -"]
		}
		rpWait(t, agent, "the operations", func(mfs map[string]*dto.MetricFamily) bool { return count(mfs) >= n })
		time.Sleep(time.Second)
		mfs := rpScrape(t, agent.MetricsURL)
		agent.Stop()
		if got := count(mfs); got != n {
			ops, _, _ := dbOps(mfs, db)
			t.Errorf("%s: %d SELECT pgbench_accounts operations, pgbench processed %d transactions; all: %v", mode, got, n, ops)
		}
		if dropped := rpCounter(mfs, "otelbee_l7_exchanges_dropped", map[string]string{"service_name": service, "protocol": "postgresql"}); dropped != 0 {
			var why []string
			for _, m := range mfs["otelbee_l7_exchanges_dropped_total"].GetMetric() {
				why = append(why, fmt.Sprint(m.GetLabel(), m.GetCounter().GetValue()))
			}
			t.Errorf("%s: %v exchanges dropped: %v", mode, dropped, why)
		}
		_, base2 := pgbench(t, bin, s.Port, db, mode, "pgbench-base-"+db, d)
		t.Logf("pgbench -S -M %s -c 2 -j 2: %.0f and %.0f tps without the agent, %.0f with it (ratio %.2f); agent CPU %v for %d operations: %.1f µs per operation",
			mode, base, base2, tps, 2*tps/(base+base2), cpu, n, float64(cpu.Microseconds())/float64(n))
	}
}

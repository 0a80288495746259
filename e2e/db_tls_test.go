package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
	"github.com/otelbee/otelbee/e2e/harness"
)

// TestDBPostgresTLS: psql with sslmode=require (libpq over libssl) against
// a PostgreSQL with ssl=on: the plaintext, through the TLS data source,
// gives the operations and their database exactly as the server logged
// them, once (the encrypted syscall connection is left alone after the
// server's 'S').
func TestDBPostgresTLS(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"psql", "openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not installed", bin)
		}
	}
	s := dbtest.StartPostgresTLS(t)
	db := "tls" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	psql := func(service, q string) {
		t.Helper()
		cmd := exec.Command("psql", "-X", "-q", "-d", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=require", s.Port, db), "-c", q)
		cmd.Env = append(cmd.Environ(), "OTEL_SERVICE_NAME="+service)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("psql %q: %v: %s", q, err, out)
		}
	}
	if out, err := exec.Command("psql", "-X", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", "-c", "CREATE DATABASE "+db).CombinedOutput(); err != nil {
		t.Fatalf("createdb: %v: %s", err, out)
	}
	agent := harness.StartAgent(t, nil, "--collectors=postgresql")
	// The server's libssl, which psql's libpq maps too, instrumented
	// before the first statement (found by the agent's start-up scan).
	waitLibUprobes(t, agent, pidFromFile(t, filepath.Join(s.Dir, "data", "postmaster.pid")), "libssl.so")
	off := dbtest.Size(t, s.Log)
	service := "psql-tls-" + db
	psql(service, "CREATE TABLE items (id int)")
	for i := range 4 {
		psql(service, fmt.Sprintf("INSERT INTO items VALUES (%d)", i))
	}
	psql(service, "SELECT count(*) FROM items")
	time.Sleep(300 * time.Millisecond)
	truth := dbtest.ReadPostgresLog(t, s.Log, off)
	want := map[string]int64{}
	for _, q := range truth.Statements {
		want[sqlsummary.Summarize(q, sqlsummary.Postgres).Summary+" -"]++
	}
	if len(truth.Statements) != 6 {
		t.Fatalf("the server logged %d statements: %v", len(truth.Statements), truth.Statements)
	}
	rpWait(t, agent, "the operations", func(mfs map[string]*dto.MetricFamily) bool {
		ops, _, _ := dbOps(mfs, db)
		return total(ops) >= 6
	})
	time.Sleep(time.Second)
	ops, jobs, _ := dbOps(rpScrape(t, agent.MetricsURL), db)
	// by the test's database: the service of a psql that exited before
	// its identity was read can be unknown_service (process identity's)
	if fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Errorf("operations over TLS:\n%s\nthe server's log:\n%s", fmtCounts(ops), fmtCounts(want))
	}
	t.Logf("per service %v", jobs)
}

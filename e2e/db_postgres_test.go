package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
	"github.com/otelbee/otelbee/e2e/harness"
)

// dbOps sums db.client.operation.duration's series of namespace ns by
// "summary error.type" (- when absent), and lists the jobs and server ports
// they carry.
func dbOps(mfs map[string]*dto.MetricFamily, ns string) (ops map[string]int64, jobs, ports map[string]int64) {
	ops, jobs, ports = map[string]int64{}, map[string]int64{}, map[string]int64{}
	mf := mfs["db_client_operation_duration_seconds"]
	if mf == nil {
		return
	}
	for _, m := range mf.GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["db_namespace"] != ns {
			continue
		}
		n := int64(m.GetHistogram().GetSampleCount())
		e := l["error_type"]
		if e == "" {
			e = "-"
		}
		ops[l["db_query_summary"]+" "+e] += n
		jobs[l["job"]] += n
		ports[l["server_port"]] += n
	}
	return
}

func total(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestDBPostgres: psql and pgx (simple and extended queries, prepared
// statements, a pipelined batch, COPY, a large result, failures) against a
// real PostgreSQL on this host, through the running agent: the operations
// per db.query.summary equal the server's log_statement=all log, the
// failures carry their SQLSTATE, and every operation is counted once, from
// the client's side (server.port is the server's; the server's own side
// of these loopback connections records nothing).
func TestDBPostgres(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("skipping: psql not installed")
	}
	s := dbtest.StartPostgres(t)
	db := "shop" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	if out, err := exec.Command("psql", "-X", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", "-c", "CREATE DATABASE "+db).CombinedOutput(); err != nil {
		t.Fatalf("createdb: %v: %s", err, out)
	}
	agent := harness.StartAgent(t, nil, "--collectors=postgresql")
	off := dbtest.Size(t, s.Log)
	dbtest.PostgresTraffic(t, s.Addr, db, "psql-"+db)
	time.Sleep(300 * time.Millisecond)
	truth := dbtest.ReadPostgresLog(t, s.Log, off)
	want := map[string]int64{}
	for _, q := range truth.Statements {
		want[sqlsummary.Summarize(q, sqlsummary.Postgres).Summary+" -"]++
	}
	// failed operations carry their SQLSTATE as error.type
	for _, q := range []struct{ summary, code string }{{"SELECT no_such_table", "42P01"}, {"SELECT", "22012"}} {
		n := int64(truth.Errors[q.code])
		want[q.summary+" -"] -= n
		if want[q.summary+" -"] == 0 {
			delete(want, q.summary+" -")
		}
		want[q.summary+" "+q.code] += n
	}
	if len(truth.Statements) < 30 || truth.Errors["42P01"] != 2 || truth.Errors["22012"] != 1 {
		t.Fatalf("server log: %d statements, errors %v", len(truth.Statements), truth.Errors)
	}
	rpWait(t, agent, "the operations", func(mfs map[string]*dto.MetricFamily) bool {
		ops, _, _ := dbOps(mfs, db)
		return total(ops) >= int64(len(truth.Statements))
	})
	time.Sleep(time.Second) // nothing more arrives
	ops, jobs, ports := dbOps(rpScrape(t, agent.MetricsURL), db)
	if fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Errorf("operations per summary and error.type:\n%s\nthe server's log:\n%s", fmtCounts(ops), fmtCounts(want))
	}
	if fmt.Sprint(ports) != fmt.Sprintf("map[%d:%d]", s.Port, len(truth.Statements)) {
		t.Errorf("server.port of the operations: %v, want all %d on %d", ports, len(truth.Statements), s.Port)
	}
	if jobs["psql-"+db] == 0 || len(jobs) != 2 {
		t.Errorf("operations per service: %v, want psql's and the test's (pgx)", jobs)
	}
	t.Logf("%d statements; per service %v", len(truth.Statements), jobs)
}

func fmtCounts(m map[string]int64) string {
	var b strings.Builder
	for _, k := range sortedKeys(m) {
		fmt.Fprintf(&b, "  %s = %d\n", k, m[k])
	}
	return b.String()
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}

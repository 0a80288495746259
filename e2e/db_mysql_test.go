package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
	"github.com/otelbee/otelbee/e2e/harness"
)

// TestDBMariaDB: the mariadb client and go-sql-driver/mysql (text queries,
// 2,000 prepared executions, a large result, failures) against a real
// MariaDB on this host, through the running agent: the operations per
// db.query.summary equal the server's general log (Query and Execute; the
// driver's one failed prepare is an operation the log lists as a Prepare),
// db.system.name is mariadb, and each is counted once, from the client's
// side.
func TestDBMariaDB(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Skip("skipping: mariadb client not installed")
	}
	s := dbtest.StartMariaDB(t)
	db := "shop" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	agent := harness.StartAgent(t, nil, "--collectors=mysql")
	off := dbtest.Size(t, s.Log)
	dbtest.MariaDBTraffic(t, s.Addr, db, "mariadb-"+db)
	time.Sleep(300 * time.Millisecond)
	truth := dbtest.ReadGeneralLog(t, s.Log, off)
	want := map[string]int64{}
	n := 0
	for _, cmd := range []string{"Query", "Execute"} {
		for _, q := range truth.Commands[cmd] {
			want[sqlsummary.Summarize(q, sqlsummary.MySQL).Summary+" -"]++
			n++
		}
	}
	// the two failures: one query (logged as Query) and the driver's
	// prepare (logged as Prepare), both 1146
	want["SELECT no_such_table -"]--
	want["SELECT no_such_table 1146"] = 2
	n++
	if want["SELECT no_such_table -"] == 0 {
		delete(want, "SELECT no_such_table -")
	}
	// operations before a database is chosen have no db.namespace (the
	// client's CREATE DATABASE and its version queries): they are taken
	// from this server's port below
	rpWait(t, agent, "the operations", func(mfs map[string]*dto.MetricFamily) bool {
		ops, _, _ := dbOps(mfs, db)
		return total(ops)+total(noNamespace(mfs, s.Port)) >= int64(n)
	})
	time.Sleep(time.Second)
	mfs := rpScrape(t, agent.MetricsURL)
	ops, jobs, ports := dbOps(mfs, db)
	for k, v := range noNamespace(mfs, s.Port) {
		ops[k] += v
	}
	if fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Errorf("operations per summary and error.type:\n%s\nthe general log:\n%s", fmtCounts(ops), fmtCounts(want))
	}
	if len(ports) != 1 || ports[strconv.Itoa(s.Port)] == 0 {
		t.Errorf("server.port: %v, want %d", ports, s.Port)
	}
	if m, _ := rpHist(mfs, "db_client_operation_duration_seconds", map[string]string{"db_namespace": db, "db_system_name": "mariadb"}); int64(m) != total(ops)-total(noNamespace(mfs, s.Port)) {
		t.Errorf("db.system.name=mariadb on %d of the operations", m)
	}
	t.Logf("%d operations; per service %v", n, jobs)
}

// noNamespace sums the operations on server port port without a
// db.namespace, by "summary error.type".
func noNamespace(mfs map[string]*dto.MetricFamily, port int) map[string]int64 {
	out := map[string]int64{}
	mf := mfs["db_client_operation_duration_seconds"]
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["db_namespace"] != "" || l["server_port"] != strconv.Itoa(port) {
			continue
		}
		e := l["error_type"]
		if e == "" {
			e = "-"
		}
		out[l["db_query_summary"]+" "+e] += int64(m.GetHistogram().GetSampleCount())
	}
	return out
}

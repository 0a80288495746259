package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
	"github.com/otelbee/otelbee/e2e/harness"
)

// TestDBMariaDBTLS: the mariadb client over TLS (--ssl, libssl) against a
// MariaDB with a certificate: the plaintext, through the TLS data source
// (which takes over the connection the syscalls classified on the
// greeting), gives the operations the general log lists, once, with their
// database.
func TestDBMariaDBTLS(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"mariadb", "openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not installed", bin)
		}
	}
	s := dbtest.StartMariaDBTLS(t)
	host, port, _ := strings.Cut(s.Addr, ":")
	db := "tls" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	cli := func(service, q string, useDB bool) {
		t.Helper()
		args := []string{"--no-defaults", "-h", host, "-P", port, "-u", "root", "--ssl", "--batch", "-e", q}
		if useDB {
			args = append(args, db)
		}
		cmd := exec.Command("mariadb", args...)
		cmd.Env = append(cmd.Environ(), "OTEL_SERVICE_NAME="+service)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mariadb %q: %v: %s", q, err, out)
		}
	}
	cli("setup", "CREATE DATABASE "+db+"; CREATE TABLE "+db+".items (id INT)", false)
	agent := harness.StartAgent(t, nil, "--collectors=mysql")
	// The server's libssl, which the mariadb client maps too, instrumented
	// before the first query (found by the agent's start-up scan).
	waitLibUprobes(t, agent, pidFromFile(t, filepath.Join(s.Dir, "pid")), "libssl.so")
	off := dbtest.Size(t, s.Log)
	service := "mariadb-tls-" + db
	for i := range 4 {
		cli(service, fmt.Sprintf("INSERT INTO items VALUES (%d)", i), true)
	}
	cli(service, "SELECT count(*) FROM items", true)
	time.Sleep(300 * time.Millisecond)
	truth := dbtest.ReadGeneralLog(t, s.Log, off)
	want := map[string]int64{}
	for _, q := range truth.Commands["Query"] {
		want[sqlsummary.Summarize(q, sqlsummary.MySQL).Summary+" -"]++
	}
	if len(truth.Commands["Query"]) < 5 {
		t.Fatalf("the general log: %v", truth.Commands)
	}
	rpWait(t, agent, "the operations", func(mfs map[string]*dto.MetricFamily) bool {
		ops, _, _ := dbOps(mfs, db)
		return total(ops) >= int64(len(truth.Commands["Query"]))
	})
	time.Sleep(time.Second)
	ops, jobs, _ := dbOps(rpScrape(t, agent.MetricsURL), db)
	// by the test's database: the service of a client that exited before
	// its identity was read can be unknown_service (process identity's)
	if fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Errorf("operations over TLS:\n%s\nthe general log:\n%s", fmtCounts(ops), fmtCounts(want))
	}
	t.Logf("per service %v", jobs)
}

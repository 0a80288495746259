package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/e2e/harness"
)

// TestL7ProtocolsShareOneCapture: HTTP/1, Redis and Memcached collectors
// enabled together run on one kernel capture (one set of read/write
// programs attached, whatever the number of protocols), and each real
// client's commands are counted exactly on its protocol's metric: redis-cli
// against redis-server, a Python socket client against memcached, curl
// against a Python HTTP server.
func TestL7ProtocolsShareOneCapture(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"redis-server", "redis-cli", "memcached", "python3", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not installed", bin)
		}
	}
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	agent := harness.StartAgent(t, nil, "--collectors=http,redis,memcached")

	rport := harness.FreePort(t)
	rpServer(t, "redis-"+sfx, fmt.Sprintf("127.0.0.1:%d", rport), "redis-server", "--port", strconv.Itoa(rport),
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	rcli := "rcli-" + sfx
	for i := 0; i < 3; i++ {
		runClient(t, rcli, "redis-cli", "-p", strconv.Itoa(rport), "SET", "k"+strconv.Itoa(i), "v")
	}
	for i := 0; i < 2; i++ {
		runClient(t, rcli, "redis-cli", "-p", strconv.Itoa(rport), "GET", "k0")
	}

	mport := harness.FreePort(t)
	rpServer(t, "memcached-"+sfx, fmt.Sprintf("127.0.0.1:%d", mport), "memcached", "-l", "127.0.0.1", "-p", strconv.Itoa(mport), "-U", "0", "-u", "nobody")
	mcli := "mcli-" + sfx
	py := fmt.Sprintf(`
import socket
s = socket.create_connection(("127.0.0.1", %d))
f = s.makefile("rb")
for i in range(2):
    s.sendall(b"set a%%d 0 0 1\r\nx\r\n" %% i)
    assert f.readline() == b"STORED\r\n"
for i in range(3):
    s.sendall(b"get a0\r\n")
    assert f.readline().startswith(b"VALUE")
    f.readline(); assert f.readline() == b"END\r\n"
s.close()
`, mport)
	runClient(t, mcli, "python3", "-c", py)

	hport := harness.FreePort(t)
	rpServer(t, "pyhttp-"+sfx, fmt.Sprintf("127.0.0.1:%d", hport), "python3", "-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(hport))
	hcli := "curl-" + sfx
	for i := 0; i < 4; i++ {
		runClient(t, hcli, "curl", "-s", "-o", "/dev/null", fmt.Sprintf("http://127.0.0.1:%d/", hport))
	}

	want := map[string]uint64{"SET": 3, "GET": 2}
	mwant := map[string]uint64{"set": 2, "get": 3}
	start := time.Now()
	mfs := rpWait(t, agent, "the redis, memcached and http requests", func(mfs map[string]*dto.MetricFamily) bool {
		r, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(rcli))
		m, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(mcli))
		h, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(hcli))
		if time.Since(start) > 25*time.Second {
			t.Logf("so far: redis %d, memcached %d, http %d", r, m, h)
		}
		return r >= 5 && m >= 5 && h >= 4
	})
	time.Sleep(time.Second) // nothing more may come
	mfs = rpScrape(t, agent.MetricsURL)
	for op, n := range want {
		got, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(rcli, "db_system_name", "redis", "db_operation_name", op))
		if got != n {
			t.Errorf("redis-cli %s: %d, want %d", op, got, n)
		}
	}
	if all, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(rcli)); all != 5 {
		t.Errorf("redis-cli: %d operations, want 5", all)
	}
	for op, n := range mwant {
		got, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(mcli, "db_system_name", "memcached", "db_operation_name", op))
		if got != n {
			t.Errorf("memcached client %s: %d, want %d", op, got, n)
		}
	}
	if h, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(hcli, "http_response_status_code", "200")); h != 4 {
		t.Errorf("curl: %d requests with 200, want 4", h)
	}
	// One set of kernel programs for the three protocols (the hooks are
	// registered under the first L7 collector's name).
	if mf := mfs["otelbee_bpf_program_attached"]; mf != nil {
		n := 0
		for _, m := range mf.GetMetric() {
			if rpMatch(m, map[string]string{"program": "recv"}) && m.GetGauge().GetValue() > 0 {
				n++
			}
		}
		if n != 1 {
			t.Errorf("the recv hook attached %d times, want once", n)
		}
	} else {
		t.Error("no otelbee_bpf_program_attached")
	}
	for _, p := range []string{"http", "redis", "memcached"} {
		if v := rpCounter(mfs, "otelbee_l7_connections", map[string]string{"protocol": p}); v < 1 {
			t.Errorf("otelbee.l7.connections{protocol=%s} %v", p, v)
		}
	}
}

// TestL7DatabasesOnTheCapture: psql against a real PostgreSQL and the
// mariadb client against a real MariaDB, both collectors on the one
// capture: the client's operations equal the statements each server logged
// (PostgreSQL log_statement=all, MariaDB's general log). MySQL is decided on
// the server's greeting, PostgreSQL on the client's startup message.
func TestL7DatabasesOnTheCapture(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"psql", "mariadb"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not installed", bin)
		}
	}
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	pg := dbtest.StartPostgres(t)
	my := dbtest.StartMariaDB(t)
	agent := harness.StartAgent(t, nil, "--collectors=postgresql,mysql")
	time.Sleep(time.Second) // the servers' own start-up traffic is not counted below
	pgOff, myOff := dbtest.Size(t, pg.Log), dbtest.Size(t, my.Log)

	pcli, mcli := "psql-"+sfx, "mariadb-"+sfx
	for i := 0; i < 3; i++ {
		runClient(t, pcli, "psql", "-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port), "-U", "postgres", "-d", "postgres",
			"-c", fmt.Sprintf("SELECT %d", i))
	}
	for i := 0; i < 2; i++ {
		runClient(t, mcli, "mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", strconv.Itoa(my.Port), "-u", "root",
			"-e", fmt.Sprintf("SELECT %d", i))
	}
	time.Sleep(500 * time.Millisecond) // the logs are written
	pgWant := len(dbtest.ReadPostgresLog(t, pg.Log, pgOff).Statements)
	myWant := len(dbtest.ReadGeneralLog(t, my.Log, myOff).Commands["Query"])
	if pgWant < 3 || myWant < 2 {
		t.Fatalf("the servers logged %d and %d statements, want at least 3 and 2", pgWant, myWant)
	}
	waitStart := time.Now()
	rpWait(t, agent, "the database operations", func(mfs map[string]*dto.MetricFamily) bool {
		p, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(pcli))
		m, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(mcli))
		if time.Since(waitStart) > 50*time.Second {
			// who the servers' operations were credited to (seen once at
			// load 29: a wait that ran out)
			byJob := map[string]uint64{}
			for _, x := range mfs["db_client_operation_duration_seconds"].GetMetric() {
				l := dnsLabelsOf(x)
				if l["server_port"] == strconv.Itoa(pg.Port) || l["server_port"] == strconv.Itoa(my.Port) {
					byJob[l["job"]+" "+l["server_port"]] += x.GetHistogram().GetSampleCount()
				}
			}
			t.Logf("so far: psql %d of %d, mariadb %d of %d; by service and port: %v", p, pgWant, m, myWant, byJob)
		}
		return p >= uint64(pgWant) && m >= uint64(myWant)
	})
	time.Sleep(time.Second)
	mfs := rpScrape(t, agent.MetricsURL)
	if p, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(pcli, "db_system_name", "postgresql")); p != uint64(pgWant) {
		t.Errorf("psql: %d operations, the server logged %d statements", p, pgWant)
	}
	if m, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(mcli)); m != uint64(myWant) {
		t.Errorf("mariadb: %d operations, the server logged %d queries", m, myWant)
	}
}

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/e2e/harness"
)

// redisStats is a redis-server's INFO commandstats: calls per top-level
// command (subcommands summed), and INFO errorstats: error replies per
// prefix. The INFO call asking is left out.
func redisStats(t *testing.T, port int) (calls, errs map[string]uint64) {
	t.Helper()
	calls, errs = map[string]uint64{}, map[string]uint64{}
	for _, section := range []string{"commandstats", "errorstats"} {
		out, err := exec.Command("redis-cli", "-p", strconv.Itoa(port), "INFO", section).Output()
		if err != nil {
			t.Fatalf("INFO %s: %v", section, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			l = strings.TrimSpace(l)
			if name, rest, ok := strings.Cut(l, ":calls="); ok && strings.HasPrefix(name, "cmdstat_") {
				op, _, _ := strings.Cut(strings.ToUpper(strings.TrimPrefix(name, "cmdstat_")), "|")
				n, _, _ := strings.Cut(rest, ",")
				v, _ := strconv.ParseUint(n, 10, 64)
				if op != "INFO" {
					calls[op] += v
				}
			}
			if name, rest, ok := strings.Cut(l, ":count="); ok && strings.HasPrefix(name, "errorstat_") {
				v, _ := strconv.ParseUint(rest, 10, 64)
				errs[strings.TrimPrefix(name, "errorstat_")] = v
			}
		}
	}
	return calls, errs
}

// redisOps is the agent's db.client.operation.duration count per command
// for a service.
func redisOps(mfs map[string]*dto.MetricFamily, service string) map[string]uint64 {
	n := map[string]uint64{}
	if mf := mfs["db_client_operation_duration_seconds"]; mf != nil {
		for _, m := range mf.GetMetric() {
			if !rpMatch(m, svc(service, "db_system_name", "redis")) {
				continue
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "db_operation_name" {
					n[l.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return n
}

// kvWait scrapes until cond holds (at most 30 s), then once more a second
// later (nothing more may come); it never fails: the caller compares.
func kvWait(t *testing.T, agent *harness.Agent, cond func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		if cond(rpScrape(t, agent.MetricsURL)) {
			break
		}
	}
	time.Sleep(time.Second)
	return rpScrape(t, agent.MetricsURL)
}

// kvNoDrops fails on anything the L7 layer gave up for service (and shows
// the layer's counters).
func kvNoDrops(t *testing.T, mfs map[string]*dto.MetricFamily, service string) {
	t.Helper()
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "otelbee_l7_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !rpMatch(m, map[string]string{"job": service}) {
				continue
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			if strings.Contains(name, "dropped") && v != 0 {
				t.Errorf("%s%v = %v", name, m.GetLabel(), v)
			}
		}
	}
}

// kvBigRing writes an agent configuration with a 64 MiB L7 ring buffer:
// redis-benchmark -P 16 at full speed on this host can fill the default
// faster than the agent drains it (0-28 % of its records dropped, counted
// as otelbee.l7.records.dropped{reason=ringbuf_full}; docs/databases.md).
func kvBigRing(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "otelbee.yaml")
	if err := os.WriteFile(p, []byte("l7:\n  ring_buffer_bytes: 67108864\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sum(m map[string]uint64) (s uint64) {
	for _, v := range m {
		s += v
	}
	return s
}

// TestKVRedisBenchmark: redis-benchmark against redis-server with the agent
// running: per command, the client's series equal what the server counted
// it ran (INFO commandstats), pipelined (-P 16, 100,000 requests per test),
// one command at a time, and inline PINGs; no command given up.
func TestKVRedisBenchmark(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"redis-server", "redis-cli", "redis-benchmark"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not installed", bin)
		}
	}
	agent := harness.StartAgent(t, nil, "--collectors=redis", "--config="+kvBigRing(t))
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"pipelined", []string{"-n", "100000", "-P", "16", "-c", "8", "-t", "ping_mbulk,set,get,incr,lpush,rpop,sadd,hset"}},
		{"unpipelined", []string{"-n", "20000", "-c", "10", "-t", "set,get,lrange_100"}},
		// inline commands ("PING\r\n"), which the kernel classifies as
		// Redis by their PING
		{"inline", []string{"-n", "20000", "-P", "16", "-c", "4", "-t", "ping_inline"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
			port := harness.FreePort(t)
			rpServer(t, "redis-"+sfx, fmt.Sprintf("127.0.0.1:%d", port), "redis-server", "--port", strconv.Itoa(port),
				"--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
			client := "rbench-" + sfx
			runClient(t, client, append([]string{"redis-benchmark", "-p", strconv.Itoa(port), "-q"}, tc.args...)...)
			calls, _ := redisStats(t, port)
			want := sum(calls)
			mfs := kvWait(t, agent, func(mfs map[string]*dto.MetricFamily) bool { return sum(redisOps(mfs, client)) >= want })
			got := redisOps(mfs, client)
			if fmt.Sprint(got) != fmt.Sprint(calls) {
				t.Errorf("per command: agent %v\nredis-server %v", got, calls)
			}
			kvNoDrops(t, mfs, client)
			if t.Failed() {
				for name, mf := range mfs {
					if strings.HasPrefix(name, "otelbee_l7") || strings.HasPrefix(name, "otelbee_ring") || strings.Contains(name, "lost") || strings.Contains(name, "drop") {
						for _, m := range mf.GetMetric() {
							t.Logf("%s %v %v%v", name, m.GetLabel(), m.GetCounter().GetValue(), m.GetGauge().GetValue())
						}
					}
				}
			}
		})
	}
}

// TestKVRedisClients: redis-cli with database selection, a transaction and
// a WRONGTYPE error, and a RESP subscriber counting the messages published
// to it: commands per name and database, error replies per prefix, and
// pub/sub messages equal the server's counts and the subscriber's own.
func TestKVRedisClients(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"redis-server", "redis-cli", "python3"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not installed", bin)
		}
	}
	agent := harness.StartAgent(t, nil, "--collectors=redis")
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	port := harness.FreePort(t)
	rpServer(t, "redis-"+sfx, fmt.Sprintf("127.0.0.1:%d", port), "redis-server", "--port", strconv.Itoa(port),
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	p := strconv.Itoa(port)
	cli := "rcli-" + sfx
	runClient(t, cli, "redis-cli", "-p", p, "RPUSH", "l", "a", "b")
	runClient(t, cli, "redis-cli", "-p", p, "INCR", "l") // WRONGTYPE
	runClient(t, cli, "redis-cli", "-p", p, "-n", "3", "SET", "k", "v")
	runClient(t, cli, "redis-cli", "-p", p, "-n", "3", "GET", "k")

	// The subscriber: SUBSCRIBE, then count the messages until it has 40.
	const published = 40
	sub := "rsub-" + sfx
	py := fmt.Sprintf(`
import socket
s = socket.create_connection(("127.0.0.1", %d))
s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n")
f = s.makefile("rb")
def read():
    line = f.readline()
    if line[:1] == b"*":
        return [read() for _ in range(int(line[1:]))]
    if line[:1] == b"$":
        v = f.read(int(line[1:]) + 2)
        return v[:-2]
    return line
assert read()[0] == b"subscribe"
open(%q, "w").write("ready")
n = 0
while n < %d:
    m = read()
    if m[0] == b"message":
        n += 1
print(n)
s.close()
`, port, "/tmp/rsub-ready-"+sfx, published)
	cmd := exec.Command("python3", "-c", py)
	cmd.Env = append(cmd.Environ(), "OTEL_SERVICE_NAME="+sub)
	subp := harness.StartProcess(t, sub, cmd)
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+p); err == nil {
			c.Close()
		}
		if out, _ := exec.Command("cat", "/tmp/rsub-ready-"+sfx).Output(); string(out) == "ready" {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the subscriber never subscribed")
		}
	}
	pub := "rpub-" + sfx
	var in strings.Builder
	for i := 0; i < published; i++ {
		fmt.Fprintf(&in, "PUBLISH news m%d\n", i)
	}
	pc := exec.Command("redis-cli", "-p", p)
	pc.Stdin = strings.NewReader(in.String())
	pc.Env = append(pc.Environ(), "OTEL_SERVICE_NAME="+pub)
	if err := harness.StartProcess(t, pub, pc).Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := subp.Wait(30 * time.Second); err != nil {
		t.Fatalf("subscriber: %v\n%s", err, subp.LogTail(10))
	}
	exec.Command("rm", "-f", "/tmp/rsub-ready-"+sfx).Run()

	mfs := kvWait(t, agent, func(mfs map[string]*dto.MetricFamily) bool {
		return rpCounter(mfs, "otelbee_redis_pubsub_messages", svc(sub)) >= published && sum(redisOps(mfs, pub)) >= published
	})
	for _, c := range []struct {
		service, op, ns, status string
		n                       uint64
	}{
		{cli, "RPUSH", "0", "", 1},
		{cli, "INCR", "0", "WRONGTYPE", 1},
		{cli, "SELECT", "3", "", 2},
		{cli, "SET", "3", "", 1},
		{cli, "GET", "3", "", 1},
		{sub, "SUBSCRIBE", "0", "", 1},
		{pub, "PUBLISH", "0", "", published},
	} {
		m := svc(c.service, "db_operation_name", c.op, "db_namespace", c.ns)
		if c.status != "" {
			m["db_response_status_code"], m["error_type"] = c.status, c.status
		}
		if got, _ := rpHist(mfs, "db_client_operation_duration_seconds", m); got != c.n {
			t.Errorf("%s %s db %s %s: %d, want %d", c.service, c.op, c.ns, c.status, got, c.n)
		}
	}
	// Everything the clients sent, by the server's count (redis-cli's
	// interactive publisher also asks COMMAND DOCS).
	calls, errs := redisStats(t, port)
	all := map[string]uint64{}
	for _, s := range []string{cli, sub, pub} {
		for op, n := range redisOps(mfs, s) {
			all[op] += n
		}
	}
	if fmt.Sprint(all) != fmt.Sprint(calls) {
		t.Logf("all clients: agent %v\nredis-server %v (COMMAND DOCS' reply is past any capture: given up, counted)", all, calls)
		delete(calls, "COMMAND")
		if fmt.Sprint(all) != fmt.Sprint(calls) {
			t.Errorf("all clients: agent %v\nredis-server %v", all, calls)
		}
	}
	if errs["WRONGTYPE"] != 1 {
		t.Errorf("server errorstats %v", errs)
	}
	if got := rpCounter(mfs, "otelbee_redis_pubsub_messages", svc(sub)); got != published {
		t.Errorf("pub/sub messages %v, want %d (the subscriber's count)", got, published)
	}
}

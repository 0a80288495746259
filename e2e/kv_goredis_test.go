package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestKVGoRedis: go-redis v9 in this test's process (service e2e.test),
// over RESP2 and RESP3, with the agent running: 15 pipelines of 20
// commands, a MULTI/EXEC transaction and a WRONGTYPE error; per command
// and error prefix equal to what redis-server counted (INFO commandstats,
// errorstats: a subcommand the server refuses is an ERR error there, not
// a call), every command once (the server's side is not recorded).
func TestKVGoRedis(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not installed", bin)
		}
	}
	const self = "e2e.test" // this process, as the agent names it
	agent := harness.StartAgent(t, nil, "--collectors=redis")
	before := map[string]uint64{}
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
			port := harness.FreePort(t)
			server := "goredis-srv-" + sfx
			rpServer(t, server, fmt.Sprintf("127.0.0.1:%d", port), "redis-server", "--port", strconv.Itoa(port),
				"--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Protocol: proto, PoolSize: 4})
			dbtest.GoRedisCommands(t, ctx, c)
			c.Close()
			calls, errs := redisStats(t, port)
			// this process's series accumulate over the subtests
			want := map[string]uint64{}
			for op, n := range before {
				want[op] = n
			}
			for op, n := range calls {
				want[op] += n
			}
			// go-redis's CLIENT SETINFO, which this redis-server (< 7.2)
			// does not know: refused before it runs, so counted by the
			// server as an ERR error reply, not as a call.
			want["CLIENT"] += errs["ERR"]
			if want["CLIENT"] == 0 {
				delete(want, "CLIENT")
			}
			mfs := kvWait(t, agent, func(mfs map[string]*dto.MetricFamily) bool { return sum(redisOps(mfs, self)) >= sum(want) })
			got := redisOps(mfs, self)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("per command: agent %v\nredis-server (and the subtests before) %v", got, want)
			}
			if n, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(self, "db_operation_name", "LPUSH", "error_type", "WRONGTYPE")); n != uint64(proto-1) || errs["WRONGTYPE"] != 1 {
				t.Errorf("WRONGTYPE: agent %d so far, server %v", n, errs)
			}
			if got := redisOps(mfs, server); len(got) != 0 {
				t.Errorf("server side: %v, want nothing (its client records)", got)
			}
			kvNoDrops(t, mfs, self)
			for op, n := range got {
				before[op] = n
			}
		})
	}
}

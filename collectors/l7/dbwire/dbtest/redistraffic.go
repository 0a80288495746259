package dbtest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// GoRedisCommands drives go-redis through c: 15 pipelines of 10 SET and 10
// GET each (every pipeline one write), a MULTI/EXEC transaction (INCR,
// HSET, HGETALL) and an LPUSH on a hash that fails with WRONGTYPE. The
// relay test and the agent's e2e test run this same workload and compare
// it with what redis-server counted.
func GoRedisCommands(t testing.TB, ctx context.Context, c *goredis.Client) {
	t.Helper()
	for round := 0; round < 15; round++ {
		cmds, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i := 0; i < 10; i++ {
				k := fmt.Sprintf("k%d", round*10+i)
				p.Set(ctx, k, strings.Repeat("v", i), 0)
				p.Get(ctx, k)
			}
			return nil
		})
		if err != nil || len(cmds) != 20 {
			t.Fatalf("pipeline: %d commands, %v", len(cmds), err)
		}
	}
	if _, err := c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Incr(ctx, "n")
		p.HSet(ctx, "h", "f", "v")
		p.HGetAll(ctx, "h")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.LPush(ctx, "h", "x").Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		t.Fatalf("LPUSH on a hash: %v", err)
	}
}

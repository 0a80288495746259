package postgres

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
)

func TestRealServer(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("no psql")
	}
	s := dbtest.StartPostgres(t)
	out, err := exec.Command("psql", "-X", "-h", "127.0.0.1", "-p", fmt.Sprint(s.Port), "-U", "postgres", "-c", "CREATE DATABASE shop").CombinedOutput()
	if err != nil {
		t.Fatalf("createdb: %v: %s", err, out)
	}
	for _, c := range []struct {
		name    string
		capture relay.Capture
	}{{"kernel", relay.Kernel}, {"head 1024", relay.Capture{Head: 1024, Tail: 32}}} {
		t.Run(c.name, func(t *testing.T) {
			off := dbtest.Size(t, s.Log)
			p := New(Options{})
			tally := relay.NewTally(p, "db.query.summary", "error.type")
			var bad []string
			tally.Check = func(x *l7.Exchange) {
				m := map[string]string{}
				for _, a := range x.Attrs[:x.NAttr] {
					m[string(a.Key)] = a.Value.Emit()
				}
				if m["db.namespace"] != "shop" || m["db.system.name"] != "postgresql" || x.End < x.Start ||
					m["db.response.status_code"] != x.Error || x.SpanName != m["db.query.summary"] {
					bad = append(bad, fmt.Sprintf("%s %v %q", x.SpanName, m, x.Error))
				}
			}
			r := relay.Start(t, s.Addr, p, tally, c.capture)
			dbtest.PostgresTraffic(t, r.Addr, "shop", "")
			if !r.Idle(10 * time.Second) {
				t.Fatal("relayed connections still open")
			}
			truth := dbtest.ReadPostgresLog(t, s.Log, off)
			want := map[string]int64{}
			for _, q := range truth.Statements {
				want[fmt.Sprintf("db.client.operation.duration %s -", sqlsummary.Summarize(q, sqlsummary.Postgres).Summary)]++
			}
			r.Locked(func() {
				got := map[string]int64{}
				errs := map[string]int{}
				for k, v := range tally.N {
					f := strings.Fields(k)
					code := f[len(f)-1]
					if code != "-" {
						errs[code] += int(v)
					}
					got[strings.Join(f[:len(f)-1], " ")+" -"] += v
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("operations per summary:\n%s\nserver log:\n%s", relay.Format(got), relay.Format(want))
				}
				if fmt.Sprint(errs) != fmt.Sprint(truth.Errors) || truth.Errors["42P01"] != 2 || truth.Errors["22012"] != 1 {
					t.Errorf("errors per SQLSTATE: got %v, server log %v", errs, truth.Errors)
				}
				if len(tally.Drops) != 0 {
					t.Errorf("drops: %v", tally.Drops)
				}
				if len(bad) > 0 {
					t.Errorf("exchanges with wrong attributes: %v", bad)
				}
				t.Logf("%d statements in the log\n%s", len(truth.Statements), tally)
			})
		})
	}
}

package postgres

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
)

// RealTraffic drives psql and pgx against s through addr: simple queries,
// a multi-statement string, COPY, extended queries with prepared
// statements, a pipelined batch and two failures (42P01 from psql and pgx's
// simple protocol, 22012 at an Execute).
func RealTraffic(t testing.TB, addr string, port string) {
	psql := func(stdin string, args ...string) error {
		cmd := exec.Command("psql", append([]string{"-X", "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "shop", "-v", "ON_ERROR_STOP=1"}, args...)...)
		cmd.Env = append(cmd.Environ(), "PGSSLMODE=prefer")
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(psql("", "-c", "CREATE TABLE items (id int PRIMARY KEY, name text)"))
	var script strings.Builder
	for i := range 5 {
		fmt.Fprintf(&script, "INSERT INTO items VALUES (%d, 'n%d');\n", i, i)
	}
	script.WriteString("SELECT * FROM items WHERE id = 3;\nUPDATE items SET name = 'x' WHERE id = 1;\nDELETE FROM items WHERE id = 4;\n")
	must(psql(script.String(), "-f", "-"))
	must(psql("", "-c", "BEGIN; INSERT INTO items VALUES (100, 'tx'); COMMIT"))
	var rows strings.Builder
	for i := 1000; i < 3000; i++ {
		fmt.Fprintf(&rows, "%d\tcopied row %d with some padding to make it long\n", i, i)
	}
	must(psql(rows.String(), "-c", "COPY items FROM STDIN"))
	if err := psql("", "-c", "SELECT * FROM no_such_table"); err == nil {
		t.Fatal("the failing query succeeded")
	}

	ctx := context.Background()
	dsn := fmt.Sprintf("postgres://postgres@%s/shop?sslmode=disable", addr)
	c, err := pgx.Connect(ctx, dsn)
	must(err)
	for i := range 7 {
		var n string
		must(c.QueryRow(ctx, "SELECT name FROM items WHERE id = $1", i%4).Scan(&n))
	}
	_, err = c.Exec(ctx, "UPDATE items SET name = $1 WHERE id = $2", "y", 2)
	must(err)
	b := &pgx.Batch{}
	for i := range 5 {
		b.Queue("INSERT INTO items VALUES ($1, $2)", 200+i, "batch")
	}
	b.Queue("SELECT count(*) FROM items")
	must(c.SendBatch(ctx, b).Close())
	var z int
	if err := c.QueryRow(ctx, "SELECT 1 / $1::int", 0).Scan(&z); err == nil {
		t.Fatal("division by zero succeeded")
	}
	// a large result: its end is in the capture's tail
	r, err := c.Query(ctx, "SELECT id, name FROM items ORDER BY id")
	must(err)
	for r.Next() {
	}
	r.Close()
	must(c.Close(ctx))

	cs, err := pgx.Connect(ctx, dsn+"&default_query_exec_mode=simple_protocol")
	must(err)
	for range 3 {
		_, err := cs.Exec(ctx, "SELECT count(*) FROM items WHERE name = $1", "x")
		must(err)
	}
	if _, err := cs.Exec(ctx, "SELECT * FROM no_such_table"); err == nil {
		t.Fatal("the failing query succeeded")
	}
	must(cs.Close(ctx))
	must(psql("", "-c", "DROP TABLE items"))
}

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
			RealTraffic(t, r.Addr, r.Addr[strings.LastIndex(r.Addr, ":")+1:])
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

package dbtest

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// PostgresTraffic drives psql and pgx through addr (host:port) on database
// db, psql with OTEL_SERVICE_NAME=service when set: simple queries,
// a multi-statement string, COPY, extended queries with prepared
// statements, a pipelined batch and two failures (42P01 from psql and pgx's
// simple protocol, 22012 at an Execute).
func PostgresTraffic(t testing.TB, addr, db, service string) {
	_, port, _ := strings.Cut(addr, ":")
	psql := func(stdin string, args ...string) error {
		cmd := exec.Command("psql", append([]string{"-X", "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1"}, args...)...)
		cmd.Env = append(cmd.Environ(), "PGSSLMODE=prefer")
		if service != "" {
			cmd.Env = append(cmd.Env, "OTEL_SERVICE_NAME="+service)
		}
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
	dsn := fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", addr, db)
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

package mysql

import (
	"database/sql"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
)

// RealTraffic drives the mariadb client and go-sql-driver/mysql (text
// queries, prepared statements, a large result, a failure with 1146)
// through addr (host:port).
func RealTraffic(t testing.TB, addr string) {
	host, port, _ := strings.Cut(addr, ":")
	cli := func(db, q string) error {
		args := []string{"-h", host, "-P", port, "-u", "root", "--batch"}
		if db != "" {
			args = append(args, db)
		}
		out, err := exec.Command("mariadb", append(args, "-e", q)...).CombinedOutput()
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
	must(cli("", "CREATE DATABASE IF NOT EXISTS shop"))
	must(cli("shop", "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(200))"))
	var q strings.Builder
	for i := range 5 {
		fmt.Fprintf(&q, "INSERT INTO items VALUES (%d, 'n%d');", i, i)
	}
	q.WriteString("SELECT * FROM items WHERE id = 3; UPDATE items SET name = 'x' WHERE id = 1; DELETE FROM items WHERE id = 4;")
	must(cli("shop", q.String()))
	if err := cli("shop", "SELECT * FROM no_such_table"); err == nil {
		t.Fatal("the failing query succeeded")
	}
	must(cli("", "USE shop; SELECT count(*) FROM items"))

	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(%s)/shop", addr))
	must(err)
	db.SetMaxOpenConns(1)
	ins, err := db.Prepare("INSERT INTO items VALUES (?, ?)")
	must(err)
	for i := range 2000 {
		_, err := ins.Exec(100+i, fmt.Sprintf("prepared row %d padded to be a longer value", i))
		must(err)
	}
	must(ins.Close())
	for i := range 7 {
		var n string
		must(db.QueryRow("SELECT name FROM items WHERE id = ?", i%4).Scan(&n))
	}
	_, err = db.Exec("UPDATE items SET name = 'y' WHERE id = 2")
	must(err)
	rows, err := db.Query("SELECT id, name FROM items ORDER BY id")
	must(err)
	n := 0
	for rows.Next() {
		n++
	}
	must(rows.Err())
	rows.Close()
	if n < 2000 {
		t.Fatalf("%d rows", n)
	}
	if _, err := db.Exec("SELECT * FROM no_such_table WHERE id = ?", 1); err == nil {
		t.Fatal("the failing query succeeded")
	}
	_, err = db.Exec("DROP TABLE items")
	must(err)
	must(db.Close())
}

func TestRealServer(t *testing.T) {
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Skip("no mariadb client")
	}
	s := dbtest.StartMariaDB(t)
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
				if m["db.system.name"] != "mariadb" || x.End < x.Start || m["db.response.status_code"] != x.Error ||
					(m["db.namespace"] != "shop" && !strings.Contains(m["db.query.summary"], "CREATE") && m["db.query.summary"] != "SELECT") {
					bad = append(bad, fmt.Sprintf("%s %v %q", x.SpanName, m, x.Error))
				}
			}
			r := relay.Start(t, s.Addr, p, tally, c.capture)
			RealTraffic(t, r.Addr)
			if !r.Idle(10 * time.Second) {
				t.Fatal("relayed connections still open")
			}
			time.Sleep(200 * time.Millisecond) // the general log is written after the reply
			truth := dbtest.ReadGeneralLog(t, s.Log, off)
			want := map[string]int64{}
			for _, cmd := range []string{"Query", "Execute"} {
				for _, q := range truth.Commands[cmd] {
					want[fmt.Sprintf("db.client.operation.duration %s", sqlsummary.Summarize(q, sqlsummary.MySQL).Summary)]++
				}
			}
			// the driver prepares a statement with arguments: a prepare that
			// fails (1146) is a failed operation, which the general log
			// lists as a Prepare like any other; the client's count
			want["db.client.operation.duration SELECT no_such_table"]++
			r.Locked(func() {
				got := map[string]int64{}
				errs := map[string]int64{}
				for k, v := range tally.N {
					f := strings.Fields(k)
					if code := f[len(f)-1]; code != "-" {
						errs[code] += v
					}
					got[strings.Join(f[:len(f)-1], " ")] += v
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("operations per summary:\n%s\ngeneral log:\n%s", relay.Format(got), relay.Format(want))
				}
				if fmt.Sprint(errs) != "map[1146:2]" {
					t.Errorf("errors per code: %v, want 2 of 1146", errs)
				}
				if len(tally.Drops) != 0 {
					t.Errorf("drops: %v", tally.Drops)
				}
				if len(bad) > 0 {
					t.Errorf("exchanges with wrong attributes: %v", bad)
				}
				t.Logf("%d queries and %d executes in the log\n%s", len(truth.Commands["Query"]), len(truth.Commands["Execute"]), tally)
			})
		})
	}
}

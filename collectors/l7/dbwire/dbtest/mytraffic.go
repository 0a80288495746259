package dbtest

import (
	"database/sql"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql"
)

// MariaDBTraffic drives the mariadb client and go-sql-driver/mysql (text
// queries, prepared statements, a large result, a failure with 1146)
// through addr (host:port) on database db (created), the client with
// OTEL_SERVICE_NAME=service when set.
func MariaDBTraffic(t testing.TB, addr, dbName, service string) {
	host, port, _ := strings.Cut(addr, ":")
	cli := func(db, q string) error {
		args := []string{"-h", host, "-P", port, "-u", "root", "--batch"}
		if db != "" {
			args = append(args, db)
		}
		cmd := exec.Command("mariadb", append(args, "-e", q)...)
		if service != "" {
			cmd.Env = append(cmd.Environ(), "OTEL_SERVICE_NAME="+service)
		}
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
	must(cli("", "CREATE DATABASE IF NOT EXISTS "+dbName))
	must(cli(dbName, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(200))"))
	var q strings.Builder
	for i := range 5 {
		fmt.Fprintf(&q, "INSERT INTO items VALUES (%d, 'n%d');", i, i)
	}
	q.WriteString("SELECT * FROM items WHERE id = 3; UPDATE items SET name = 'x' WHERE id = 1; DELETE FROM items WHERE id = 4;")
	must(cli(dbName, q.String()))
	if err := cli(dbName, "SELECT * FROM no_such_table"); err == nil {
		t.Fatal("the failing query succeeded")
	}
	must(cli("", "USE "+dbName+"; SELECT count(*) FROM items"))

	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(%s)/%s", addr, dbName))
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

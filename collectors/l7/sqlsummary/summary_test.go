package sqlsummary

import (
	"fmt"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		d             Dialect
		q             string
		sum, op, coll string
	}{
		{Postgres, "SELECT * FROM wuser_table", "SELECT wuser_table", "SELECT", "wuser_table"},
		{Postgres, "select a from Users where id = $1", "SELECT Users", "SELECT", "Users"},
		{Postgres, "INSERT INTO shipping_details (id, t) VALUES ($1, 'x')", "INSERT shipping_details", "INSERT", "shipping_details"},
		{Postgres, "INSERT INTO shipping_details (id) SELECT id FROM orders", "INSERT shipping_details SELECT orders", "", ""},
		{Postgres, "SELECT * FROM songs, artists WHERE songs.artist_id = artists.id", "SELECT songs artists", "SELECT", ""},
		{Postgres, "SELECT a, b FROM users u JOIN orders o ON u.id = o.uid WHERE x IN (1, 2)", "SELECT users orders", "SELECT", ""},
		{Postgres, "SELECT order_date FROM (SELECT * FROM orders o JOIN customers c ON o.c = c.id) x", "SELECT SELECT orders customers", "", ""},
		{Postgres, "UPDATE accounts SET v = v + 1 WHERE id = 3", "UPDATE accounts", "UPDATE", "accounts"},
		{Postgres, "DELETE FROM ONLY public.items WHERE id = 1", "DELETE public.items", "DELETE", "public.items"},
		{Postgres, `SELECT 1 FROM "Quoted" -- FROM comment_table`, "SELECT Quoted", "SELECT", "Quoted"},
		{Postgres, "SELECT 'FROM fake' FROM real_t", "SELECT real_t", "SELECT", "real_t"},
		{Postgres, "SELECT $$ FROM dollar $$ FROM t2", "SELECT t2", "SELECT", "t2"},
		{Postgres, "COPY items FROM STDIN", "COPY items", "COPY", "items"},
		{Postgres, "COPY (SELECT * FROM items) TO STDOUT", "COPY SELECT items", "", "items"},
		{Postgres, "CREATE TABLE IF NOT EXISTS items (id int)", "CREATE TABLE items", "CREATE TABLE", "items"},
		{Postgres, "DROP TABLE IF EXISTS items", "DROP TABLE items", "DROP TABLE", "items"},
		{Postgres, "TRUNCATE TABLE items", "TRUNCATE items", "TRUNCATE", "items"},
		{Postgres, "BEGIN", "BEGIN", "BEGIN", ""},
		{Postgres, "SET search_path = public", "SET", "SET", ""},
		{Postgres, "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", "INSERT t", "INSERT", "t"},
		{Postgres, "SELECT * FROM t WHERE id = 1 FOR UPDATE", "SELECT t", "SELECT", "t"},
		{Postgres, "WITH x AS (SELECT * FROM a) SELECT * FROM x", "SELECT a SELECT x", "", ""},
		{Postgres, "SELECT now()", "SELECT", "SELECT", ""},
		{Postgres, "", "", "", ""},
		{Postgres, "BEGIN; SELECT 1 FROM t; COMMIT", "BEGIN SELECT t COMMIT", "", "t"},
		{MySQL, "SELECT * FROM `shop`.`items` WHERE name = \"x\"", "SELECT `shop`.`items`", "SELECT", "`shop`.`items`"},
		{MySQL, "select * from `items` # FROM nope", "SELECT items", "SELECT", "items"},
		{MySQL, "REPLACE INTO kv VALUES (1, 2)", "REPLACE kv", "REPLACE", "kv"},
		{MySQL, "INSERT INTO kv VALUES (1) ON DUPLICATE KEY UPDATE v = 2", "INSERT kv", "INSERT", "kv"},
		{MySQL, "SHOW TABLES", "SHOW", "SHOW", ""},
		{MySQL, "SELECT @@version_comment LIMIT 1", "SELECT", "SELECT", ""},
	} {
		r := Summarize(c.q, c.d)
		if r.Summary != c.sum || r.Operation != c.op || r.Collection != c.coll {
			t.Errorf("Summarize(%q) = %q op %q coll %q, want %q op %q coll %q", c.q, r.Summary, r.Operation, r.Collection, c.sum, c.op, c.coll)
		}
	}
}

func TestSummaryTruncatedAtWord(t *testing.T) {
	q := "SELECT * FROM " + strings.Repeat("t_123456789, ", 40) + "last"
	r := Summarize(q, Postgres)
	if len(r.Summary) > MaxSummaryLen || strings.HasSuffix(r.Summary, " ") || !strings.HasPrefix(r.Summary, "SELECT t_123456789 t_") {
		t.Fatalf("summary %q (%d bytes)", r.Summary, len(r.Summary))
	}
	if got := len(r.Summary) % len(" t_123456789"); got != len("SELECT") {
		t.Fatalf("summary cut inside a word: %q", r.Summary)
	}
}

func TestSanitize(t *testing.T) {
	for _, c := range []struct {
		d       Dialect
		q, want string
	}{
		{Postgres, "SELECT * FROM t WHERE a = 'secret' AND b = 42 -- note", "SELECT * FROM t WHERE a = ? AND b = ?"},
		{Postgres, "SELECT $1, $$body$$, E'x\\'y'", "SELECT $1, ?, E?"},
		{Postgres, "SELECT 'unterminated", "SELECT ?"},
		{MySQL, "SELECT \"pw\", `col`\n\tFROM t WHERE x = 0x1F", "SELECT ?, `col` FROM t WHERE x = ?"},
	} {
		if got := Sanitize(c.q, c.d, 1000); got != c.want {
			t.Errorf("Sanitize(%q) = %q, want %q", c.q, got, c.want)
		}
	}
	if got := Sanitize("SELECT aaaa, bbbb, cccc", Postgres, 12); got != "SELECT aaaa," {
		t.Errorf("cut: %q", got)
	}
}

func TestLookupBoundedAndCached(t *testing.T) {
	s := New(Options{MaxSummaries: 2, MaxCollections: 2, QueryText: true})
	a := s.Bound(7, s.Lookup([]byte("SELECT * FROM a WHERE x = 1")))
	if a.Summary != "SELECT a" || a.Collection != "a" || a.Operation != "SELECT" || a.Text != "SELECT * FROM a WHERE x = ?" || a.Overflow {
		t.Fatalf("a: %+v", a)
	}
	s.Bound(7, s.Lookup([]byte("SELECT * FROM b")))
	c := s.Bound(7, s.Lookup([]byte("SELECT * FROM c")))
	if c.Summary != Other || c.Collection != Other || !c.Overflow {
		t.Fatalf("a process's third summary and collection past caps of 2: %+v", c)
	}
	// another process has caps of its own
	if c8 := s.Bound(8, s.Lookup([]byte("SELECT * FROM c"))); c8.Summary != "SELECT c" || c8.Overflow {
		t.Fatalf("process 8: %+v", c8)
	}
	// known values stay themselves after the caps are reached
	if a2 := s.Bound(7, s.Lookup([]byte("SELECT * FROM a WHERE x = 2"))); a2.Summary != "SELECT a" || a2.Collection != "a" || a2.Overflow {
		t.Fatalf("a again: %+v", a2)
	}
	q := []byte("SELECT * FROM a WHERE x = 1")
	if n := testing.AllocsPerRun(100, func() { s.Bound(7, s.Lookup(q)) }); n != 0 {
		t.Fatalf("a warm lookup allocates %v times", n)
	}
	// the agent-wide tables are bounded too
	g := New(Options{MaxSummaries: 1, MaxCollections: 1})
	var last Info
	for i := range globalFactor + 1 {
		last = g.Lookup([]byte(fmt.Sprintf("SELECT * FROM t%d", i)))
	}
	if last.Summary != Other || !last.Overflow {
		t.Fatalf("past the agent-wide table: %+v", last)
	}
}

func FuzzSummarize(f *testing.F) {
	for _, s := range []string{"SELECT * FROM t", "INSERT INTO `a`.b VALUES ('x')", "COPY t FROM STDIN", "$$", "'", "\"", "/*", "SELECT (((", "\xff\xfe"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, q string, mysql bool) {
		d := Postgres
		if mysql {
			d = MySQL
		}
		r := Summarize(q, d)
		if len(r.Summary) > MaxSummaryLen {
			t.Fatalf("summary of %d bytes", len(r.Summary))
		}
		if s := Sanitize(q, d, 64); len(s) > 64 {
			t.Fatalf("sanitized text of %d bytes", len(s))
		}
	})
}

func BenchmarkLookupCached(b *testing.B) {
	s := New(Options{})
	q := []byte("SELECT a, b FROM users u JOIN orders o ON u.id = o.uid WHERE x = $1")
	s.Lookup(q)
	b.ReportAllocs()
	for b.Loop() {
		s.Lookup(q)
	}
}

func BenchmarkSummarize(b *testing.B) {
	q := "SELECT a, b FROM users u JOIN orders o ON u.id = o.uid WHERE x = 'abc' AND y = 42"
	b.ReportAllocs()
	for b.Loop() {
		Summarize(q, Postgres)
	}
}

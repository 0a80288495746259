// Package sqlsummary turns SQL text into the database conventions'
// low-cardinality fields: db.query.summary (each operation and the
// collections it names, in order), db.operation.name and db.collection.name
// when the query has exactly one of each, and, only when enabled,
// db.query.text with its literals replaced by "?".
//
// The text is tokenized by go-sqllexer (strings, quoted identifiers,
// comments, dollar quoting and each dialect's quirks are its business, not
// ours); this package only walks the tokens. Results are cached by the
// text's hash and their values interned in bounded tables, so a statement
// seen before costs no allocation, and a service cannot grow the tables
// past their caps: past them the value is _OTHER and the caller counts it.
package sqlsummary

import (
	"hash/maphash"
	"strings"
	"sync"
	"unsafe"

	"github.com/DataDog/go-sqllexer"
)

// Other is the value recorded in place of a summary or collection past its
// cap.
const Other = "_OTHER"

// MaxSummaryLen is the conventions' bound on db.query.summary.
const MaxSummaryLen = 255

// Dialect selects the tokenizer's rules (MySQL's backticks and # comments,
// PostgreSQL's dollar quoting).
type Dialect uint8

const (
	Postgres Dialect = iota
	MySQL
)

// Info is what one query text yields. The strings are interned: keep them.
type Info struct {
	Summary    string // db.query.summary; "" when the text names no operation
	Operation  string // db.operation.name: set only when there is exactly one operation
	Collection string // db.collection.name: set only when there is exactly one collection
	Text       string // db.query.text with literals replaced; only when Options.QueryText
	// Overflow: Summary or Collection is Other because its table was full.
	Overflow bool
}

// Options bound a Summarizer. Zero values take the defaults.
type Options struct {
	Dialect Dialect
	// MaxSummaries caps distinct summaries per process (Bound), and
	// MaxCollections distinct collection names; the agent-wide tables
	// hold globalFactor times as many.
	MaxSummaries, MaxCollections int
	// CacheSize caps the texts whose results are remembered.
	CacheSize int
	// QueryText enables Info.Text.
	QueryText bool
	// MaxTextLen caps Info.Text in bytes.
	MaxTextLen int
}

const (
	defaultMaxSummaries   = 1000
	defaultMaxCollections = 1000
	defaultCacheSize      = 4096
	defaultMaxTextLen     = 2048
	// globalFactor: the agent-wide tables hold this many processes' worth
	// of values, each process its own MaxSummaries and MaxCollections.
	globalFactor = 16
	// maxProcs bounds the processes whose values are counted; past it the
	// counts start again (a process then may name up to its cap anew).
	maxProcs = 4096
)

// Summarizer is safe for concurrent use.
type Summarizer struct {
	opt  Options
	seed maphash.Seed

	mu sync.Mutex
	// cache maps a text's hash to its result; when it is full it becomes
	// old and a new one starts, so a working set survives a turnover.
	cache, old map[uint64]Info
	strs       map[string]string // interned summaries
	ops        map[string]string // interned operation names
	colls      map[string]string // interned collection names
	texts      map[string]string // interned sanitized texts (QueryText only)
	nsum       int
	procs      map[uint32]*proc
}

// proc is what one process has named.
type proc struct{ sums, colls map[string]struct{} }

// New returns a Summarizer.
func New(o Options) *Summarizer {
	if o.MaxSummaries <= 0 {
		o.MaxSummaries = defaultMaxSummaries
	}
	if o.MaxCollections <= 0 {
		o.MaxCollections = defaultMaxCollections
	}
	if o.CacheSize <= 0 {
		o.CacheSize = defaultCacheSize
	}
	if o.MaxTextLen <= 0 {
		o.MaxTextLen = defaultMaxTextLen
	}
	return &Summarizer{
		opt:   o,
		seed:  maphash.MakeSeed(),
		cache: make(map[uint64]Info, 64),
		strs:  make(map[string]string, 64),
		ops:   make(map[string]string, 16),
		colls: make(map[string]string, 64),
		texts: make(map[string]string),
		procs: make(map[uint32]*proc),
	}
}

// Bound applies the per-process caps to in, for process pid: a summary or
// collection the process has not named before, past its MaxSummaries or
// MaxCollections, becomes Other (Overflow set). Warm, it allocates nothing.
func (s *Summarizer) Bound(pid uint32, in Info) Info {
	if in.Summary == "" && in.Collection == "" {
		return in
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[pid]
	if p == nil {
		if len(s.procs) >= maxProcs {
			clear(s.procs)
		}
		p = &proc{sums: map[string]struct{}{}, colls: map[string]struct{}{}}
		s.procs[pid] = p
	}
	if v := in.Summary; v != "" && v != Other {
		if _, ok := p.sums[v]; !ok {
			if len(p.sums) >= s.opt.MaxSummaries {
				in.Summary, in.Overflow = Other, true
			} else {
				p.sums[v] = struct{}{}
			}
		}
	}
	if v := in.Collection; v != "" && v != Other {
		if _, ok := p.colls[v]; !ok {
			if len(p.colls) >= s.opt.MaxCollections {
				in.Collection, in.Overflow = Other, true
			} else {
				p.colls[v] = struct{}{}
			}
		}
	}
	return in
}

// Lookup returns the Info of the query text q. q is read only during the
// call.
func (s *Summarizer) Lookup(q []byte) Info {
	h := maphash.Bytes(s.seed, q)
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, ok := s.cache[h]; ok {
		return in
	}
	if in, ok := s.old[h]; ok {
		s.put(h, in)
		return in
	}
	// The lexer keeps substrings of its input only while we walk it; every
	// value we keep is copied by interning.
	r := Summarize(unsafe.String(unsafe.SliceData(q), len(q)), s.opt.Dialect)
	in := Info{Summary: s.intern(s.strs, r.Summary, &s.nsum, globalFactor*s.opt.MaxSummaries)}
	if in.Summary == Other {
		in.Overflow = true
	} else if r.Operation != "" {
		// operation names are words of summaries: bounded by them
		n := len(s.ops)
		in.Operation = s.intern(s.ops, r.Operation, &n, globalFactor*s.opt.MaxSummaries)
	}
	if r.Collection != "" {
		n := len(s.colls)
		in.Collection = s.intern(s.colls, r.Collection, &n, globalFactor*s.opt.MaxCollections)
		if in.Collection == Other {
			in.Overflow = true
		}
	}
	if s.opt.QueryText {
		t := Sanitize(unsafe.String(unsafe.SliceData(q), len(q)), s.opt.Dialect, s.opt.MaxTextLen)
		if v, ok := s.texts[t]; ok {
			in.Text = v
		} else if len(s.texts) < s.opt.CacheSize {
			s.texts[t] = t
			in.Text = t
		} else {
			in.Text = t // not interned: the table is full, the value is still bounded by MaxTextLen
		}
	}
	s.put(h, in)
	return in
}

func (s *Summarizer) put(h uint64, in Info) {
	if len(s.cache) >= s.opt.CacheSize {
		s.old, s.cache = s.cache, make(map[uint64]Info, len(s.cache))
	}
	s.cache[h] = in
}

// intern returns the table's copy of v, adding it while the table holds
// fewer than max values; "" stays "".
func (s *Summarizer) intern(tab map[string]string, v string, n *int, max int) string {
	if v == "" {
		return ""
	}
	if w, ok := tab[v]; ok {
		return w
	}
	if *n >= max {
		return Other
	}
	w := strings.Clone(v)
	tab[w] = w
	*n++
	return w
}

// Result is Summarize's answer; its strings may share q's memory.
type Result struct {
	Summary, Operation, Collection string
}

// operations that begin a statement and that the lexer does not class as
// commands.
var leading = map[string]bool{
	"SET": true, "SHOW": true, "COPY": true, "CALL": true, "ROLLBACK": true,
	"START": true, "SAVEPOINT": true, "RELEASE": true, "PREPARE": true,
	"DEALLOCATE": true, "LISTEN": true, "NOTIFY": true, "UNLISTEN": true,
	"LOCK": true, "ANALYZE": true, "REPLACE": true, "DESCRIBE": true, "DESC": true,
	"FETCH": true, "DECLARE": true, "CLOSE": true, "DISCARD": true, "RESET": true,
	"REINDEX": true, "CLUSTER": true, "REFRESH": true, "COMMENT": true,
	"HANDLER": true, "LOAD": true, "OPTIMIZE": true, "CHECKPOINT": true, "END": true,
	"ABORT": true, "VALUES": true, "TABLE": true, "WITH": true, "DO": true,
}

// objects named after CREATE, ALTER and DROP, which become part of the
// operation ("CREATE TABLE").
var objects = map[string]bool{
	"TABLE": true, "INDEX": true, "VIEW": true, "DATABASE": true, "SCHEMA": true,
	"SEQUENCE": true, "FUNCTION": true, "PROCEDURE": true, "TRIGGER": true,
	"TYPE": true, "EXTENSION": true, "USER": true, "ROLE": true, "MATERIALIZED": true,
	"TEMPORARY": true, "TEMP": true, "UNLOGGED": true, "UNIQUE": true, "OR": true,
}

// tableFollows: after these words the next name is a collection.
var tableFollows = map[string]bool{
	"FROM": true, "INTO": true, "UPDATE": true, "JOIN": true, "STRAIGHT_JOIN": true,
	"TABLE": true, "TRUNCATE": true, "COPY": true, "LOCK": true, "ANALYZE": true,
	"VACUUM": true, "REINDEX": true, "DESCRIBE": true, "DESC": true, "REPLACE": true,
}

// Summarize walks q's tokens. It allocates (the lexer does); Lookup caches.
func Summarize(q string, d Dialect) Result {
	opt := sqllexer.WithDBMS(sqllexer.DBMSPostgres)
	if d == MySQL {
		opt = sqllexer.WithDBMS(sqllexer.DBMSMySQL)
	}
	lx := sqllexer.New(q, opt)
	var (
		b          [MaxSummaryLen + 1]byte
		n          int
		full       bool
		ops        int
		op         string
		colls      int
		coll       string
		stmtStart  = true // the next word begins a statement
		expect     bool   // the next name is a collection
		listTables bool   // inside FROM a, b: a comma names another
		lastOp     string // the operation that may take an object word
		stmtOp     string // the statement's first operation
		prev       string // the previous word, upper-cased
		depth      int
		fromDepth  = -1
	)
	add := func(w string, upper bool) {
		if full {
			return
		}
		need := len(w)
		if n > 0 {
			need++
		}
		if n+need > MaxSummaryLen {
			full = true // the conventions truncate at a whole word
			return
		}
		if n > 0 {
			b[n] = ' '
			n++
		}
		if upper {
			n += copyUpper(b[n:], w)
		} else {
			n += copy(b[n:], w)
		}
	}
	addOp := func(w string) {
		if w == "" {
			return // a command the lexer knows and keywords does not: not named
		}
		ops++
		op = w
		add(w, true)
	}
	for {
		t := lx.Scan()
		switch t.Type {
		case sqllexer.EOF, sqllexer.ERROR:
			goto done
		case sqllexer.SPACE, sqllexer.COMMENT, sqllexer.MULTILINE_COMMENT:
			continue
		}
		v := t.Value
		word := t.Type == sqllexer.COMMAND || t.Type == sqllexer.KEYWORD || t.Type == sqllexer.IDENT ||
			t.Type == sqllexer.CTE_INDICATOR || t.Type == sqllexer.PROC_INDICATOR
		up := ""
		if word || t.Type == sqllexer.FUNCTION {
			up = keyword(v)
		}
		switch {
		case t.Type == sqllexer.PUNCTUATION && v == ";":
			stmtStart, expect, listTables, lastOp, stmtOp, fromDepth = true, false, false, "", "", -1
			depth = 0
			continue
		case t.Type == sqllexer.PUNCTUATION && v == "(":
			depth++
			expect = false
			continue
		case t.Type == sqllexer.PUNCTUATION && v == ")":
			depth--
			if depth < fromDepth {
				fromDepth = -1
			}
			continue
		case t.Type == sqllexer.PUNCTUATION && v == ",":
			if listTables && depth == fromDepth {
				expect = true
			}
			continue
		}
		if stmtStart {
			stmtStart = false
			if t.Type == sqllexer.COMMAND || (word && leading[up]) {
				if up == "WITH" {
					// a common table expression: its operations come as commands
					continue
				}
				addOp(up)
				lastOp, stmtOp, prev = up, up, up
				if tableFollows[up] {
					expect = true
				}
				continue
			}
			if !word {
				continue
			}
		}
		if lastOp != "" && word && objects[up] && (lastOp == "CREATE" || lastOp == "ALTER" || lastOp == "DROP" ||
			strings.HasPrefix(lastOp, "CREATE ") || strings.HasPrefix(lastOp, "ALTER ") || strings.HasPrefix(lastOp, "DROP ")) {
			// "CREATE TABLE": the object joins the operation
			op = op + " " + up
			add(up, true)
			lastOp = op
			if up == "TABLE" {
				expect = true
			}
			continue
		}
		lastOp = ""
		p := prev
		if word {
			prev = up
		}
		if expect {
			switch {
			case t.Type == sqllexer.IDENT || t.Type == sqllexer.QUOTED_IDENT:
				v = unquote(v)
				if colls == 0 || coll != v {
					colls++
				}
				coll = v
				add(v, false)
				expect = false
				continue
			case word && (up == "IF" || up == "NOT" || up == "EXISTS" || up == "ONLY" || up == "TABLE" || up == "IGNORE" || up == "LOW_PRIORITY"):
				continue // DROP TABLE IF EXISTS t, DELETE FROM ONLY t
			default:
				expect = false
			}
		}
		switch {
		case up == "UPDATE" && (p == "DO" || p == "KEY" || p == "FOR"):
			// ON CONFLICT DO UPDATE, ON DUPLICATE KEY UPDATE, FOR UPDATE:
			// clauses of the statement, not operations
		case (up == "FROM" || up == "TO") && stmtOp == "COPY" && depth == 0:
			// COPY t FROM STDIN: a file or stream, not a collection
		case t.Type == sqllexer.COMMAND && up != "JOIN" && up != "STRAIGHT_JOIN":
			addOp(up)
			if up == "UPDATE" {
				expect = true
			}
		case word && tableFollows[up]:
			expect = true
			if up == "FROM" {
				listTables, fromDepth = true, depth
			}
		case word && t.Type != sqllexer.IDENT && (up == "WHERE" || up == "SET" || up == "ON" || up == "USING" ||
			up == "GROUP" || up == "ORDER" || up == "LIMIT" || up == "VALUES" || up == "UNION" || up == "HAVING"):
			if depth == fromDepth {
				listTables = false
			}
		}
	}
done:
	r := Result{Summary: string(b[:n])}
	if ops == 1 {
		r.Operation = op
	}
	if colls == 1 {
		r.Collection = coll
	}
	return r
}

// Sanitize returns q with its literals replaced by "?", whitespace runs
// collapsed and comments dropped, cut to max bytes.
func Sanitize(q string, d Dialect, max int) string {
	opt := sqllexer.WithDBMS(sqllexer.DBMSPostgres)
	if d == MySQL {
		opt = sqllexer.WithDBMS(sqllexer.DBMSMySQL)
	}
	lx := sqllexer.New(q, opt)
	var sb strings.Builder
	space := false
	for sb.Len() < max {
		t := lx.Scan()
		var v string
		switch t.Type {
		case sqllexer.EOF, sqllexer.ERROR:
			goto done
		case sqllexer.SPACE, sqllexer.COMMENT, sqllexer.MULTILINE_COMMENT:
			space = sb.Len() > 0
			continue
		case sqllexer.STRING, sqllexer.INCOMPLETE_STRING, sqllexer.NUMBER, sqllexer.DOLLAR_QUOTED_STRING, sqllexer.BOOLEAN:
			v = "?"
		case sqllexer.UNKNOWN:
			// a stray byte (a cut multi-byte character, binary data): never
			// carried into telemetry
			v = "?"
		default:
			v = t.Value
		}
		if space {
			sb.WriteByte(' ')
			space = false
		}
		if sb.Len()+len(v) > max {
			break
		}
		sb.WriteString(v)
	}
done:
	return sb.String()
}

// unquote strips one pair of quotes around a simple quoted name, so
// "users", `users` and users are one collection.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '`') && v[len(v)-1] == v[0] &&
		!strings.ContainsAny(v[1:len(v)-1], "\"`.") {
		return v[1 : len(v)-1]
	}
	return v
}

// copyUpper copies w into dst upper-cased (ASCII) and returns the count.
func copyUpper(dst []byte, w string) int {
	n := copy(dst, w)
	for i := range n {
		if c := dst[i]; c >= 'a' && c <= 'z' {
			dst[i] = c - 32
		}
	}
	return n
}

// keywords are the words the walk looks at, upper-cased: the lexer's
// commands and every word of the tables above and of the walk.
var keywords = func() map[string]string {
	m := map[string]string{}
	for _, t := range []map[string]bool{leading, objects, tableFollows} {
		for k := range t {
			m[k] = k
		}
	}
	for _, k := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "JOIN", "GRANT",
		"REVOKE", "COMMIT", "BEGIN", "TRUNCATE", "MERGE", "EXECUTE", "EXEC", "EXPLAIN", "STRAIGHT_JOIN", "USE", "CLONE",
		"VACUUM", "IF", "NOT", "EXISTS", "ONLY", "IGNORE", "LOW_PRIORITY", "WHERE", "ON", "USING", "GROUP", "ORDER",
		"LIMIT", "UNION", "HAVING", "DO", "KEY", "FOR", "TO"} {
		m[k] = k
	}
	return m
}()

// keyword returns w upper-cased when it is one of keywords, else "":
// without allocating (the upper-casing is on the stack, the answer the
// table's own string).
func keyword(w string) string {
	if len(w) > 16 {
		return ""
	}
	var b [16]byte
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c >= 'a' && c <= 'z' {
			c -= 32
		}
		b[i] = c
	}
	return keywords[string(b[:len(w)])]
}

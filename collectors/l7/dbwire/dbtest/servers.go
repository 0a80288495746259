package dbtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a database server the test started.
type Server struct {
	Addr string // 127.0.0.1:port
	Port int
	Dir  string
	Log  string // the server's statement log
}

// freePort returns a loopback port nobody listens on now.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// unprivilegedDir makes a temporary directory the user nobody owns (the
// servers refuse to run as root).
func unprivilegedDir(t testing.TB, prefix string) string {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "-R", "nobody:nogroup", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v: %s", dir, err, out)
	}
	return dir
}

func asNobody(name string, args ...string) *exec.Cmd {
	// setpriv execs the program itself, so signals reach it
	return exec.Command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", name}, args...)...)
}

func waitPort(t testing.TB, addr string, logf string) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(logf)
	t.Fatalf("server on %s did not start:\n%s", addr, b)
}

// PostgresBin finds a PostgreSQL server binary directory (Debian keeps it
// out of PATH).
func PostgresBin(t testing.TB) string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(m) == 0 {
		t.Skip("no PostgreSQL server (Debian package postgresql; make deps installs it)")
	}
	return filepath.Dir(m[len(m)-1])
}

// StartPostgres runs initdb into a temporary directory and a server on a
// loopback port as nobody, every statement logged (log_statement=all, each
// line prefixed with its SQLSTATE), trust authentication, user postgres.
func StartPostgres(t testing.TB) *Server { return startPostgres(t, false) }

// StartPostgresTLS is StartPostgres with ssl=on and a self-signed
// certificate the test makes (openssl req).
func StartPostgresTLS(t testing.TB) *Server { return startPostgres(t, true) }

func startPostgres(t testing.TB, tls bool) *Server {
	bin := PostgresBin(t)
	dir := unprivilegedDir(t, "otelbee-pg-")
	data := filepath.Join(dir, "data")
	if out, err := asNobody(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	port := freePort(t)
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, Log: filepath.Join(dir, "server.log")}
	logf, err := os.Create(s.Log)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "log_statement=all", "-c", "log_line_prefix=%e %p ",
		"-c", "fsync=off", "-c", "logging_collector=off", "-c", "log_min_messages=warning"}
	if tls {
		crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		if out, err := asNobody("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
			"-keyout", key, "-out", crt).CombinedOutput(); err != nil {
			t.Fatalf("openssl req: %v: %s", err, out)
		}
		args = append(args, "-c", "ssl=on", "-c", "ssl_cert_file="+crt, "-c", "ssl_key_file="+key)
	}
	cmd := asNobody(filepath.Join(bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		logf.Close()
	})
	waitPort(t, s.Addr, s.Log)
	// the port accepts before the server takes connections
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if exec.Command(filepath.Join(bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(port)).Run() == nil {
			break
		}
		if time.Now().After(end) {
			b, _ := os.ReadFile(s.Log)
			t.Fatalf("server on %s not ready:\n%s", s.Addr, b)
		}
	}
	return s
}

// PostgresLog is what a PostgreSQL log says after offset: the statements
// run (simple queries and Executes, as their text) and the errors by
// SQLSTATE.
type PostgresLog struct {
	Statements []string
	Errors     map[string]int
}

// ReadPostgresLog parses the log written by StartPostgres's server from
// byte offset on.
func ReadPostgresLog(t testing.TB, path string, offset int64) PostgresLog {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		t.Fatal(err)
	}
	pl := PostgresLog{Errors: map[string]int{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	// lines are "SQLSTATE PID message", continued by lines that begin
	// with a tab
	var (
		cur     *string // the text continuation lines belong to
		errText string
		inError bool
		last    = map[string]string{} // each backend's last statement logged
		pid     string
	)
	endError := func() {
		// an error whose statement was not logged failed before it ran
		// (at Parse or Bind): an operation all the same
		if inError && errText != "" && last[pid] != errText {
			pl.Statements = append(pl.Statements, errText)
		}
		inError, errText = false, ""
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "\t") {
			if cur != nil {
				*cur += "\n" + line[1:]
			}
			continue
		}
		if cur != nil && !inError {
			last[pid] = *cur
		}
		cur = nil
		f := strings.SplitN(line, " ", 3)
		if len(f) < 3 {
			continue
		}
		code, p, rest := f[0], f[1], f[2]
		switch {
		case strings.HasPrefix(rest, "LOG:  statement: "):
			endError()
			pid = p
			pl.Statements = append(pl.Statements, strings.TrimPrefix(rest, "LOG:  statement: "))
			cur = &pl.Statements[len(pl.Statements)-1]
		case strings.HasPrefix(rest, "LOG:  execute "):
			endError()
			pid = p
			_, q, _ := strings.Cut(strings.TrimPrefix(rest, "LOG:  execute "), ": ")
			pl.Statements = append(pl.Statements, q)
			cur = &pl.Statements[len(pl.Statements)-1]
		case strings.HasPrefix(rest, "ERROR:  "):
			endError()
			pid = p
			pl.Errors[code]++
			inError = true
		case inError && strings.HasPrefix(rest, "STATEMENT:  "):
			errText = strings.TrimPrefix(rest, "STATEMENT:  ")
			cur = &errText
		default:
			endError()
		}
	}
	if cur != nil && !inError {
		last[pid] = *cur
	}
	endError()
	return pl
}

// Size is a file's current size (a log offset).
func Size(t testing.TB, path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// StartMariaDB runs mariadb-install-db into a temporary directory and a
// server on a loopback port as nobody, with the general log on and grant
// tables skipped (any user, no password).
func StartMariaDB(t testing.TB) *Server { return startMariaDB(t, false) }

// StartMariaDBTLS is StartMariaDB with TLS on (a self-signed certificate
// the test makes).
func StartMariaDBTLS(t testing.TB) *Server { return startMariaDB(t, true) }

func startMariaDB(t testing.TB, tls bool) *Server {
	if _, err := exec.LookPath("mariadbd"); err != nil {
		t.Skip("no MariaDB server (Debian package mariadb-server; make deps installs it)")
	}
	dir := unprivilegedDir(t, "otelbee-mariadb-")
	data := filepath.Join(dir, "data")
	if out, err := asNobody("mariadb-install-db", "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal",
		"--skip-test-db").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v: %s", err, out)
	}
	port := freePort(t)
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, Log: filepath.Join(dir, "general.log")}
	errlog := filepath.Join(dir, "error.log")
	cmd := asNobody("mariadbd", "--no-defaults", "--datadir="+data, "--socket="+filepath.Join(dir, "sock"),
		"--port="+strconv.Itoa(port), "--bind-address=127.0.0.1", "--general-log=1", "--general-log-file="+s.Log,
		"--log-error="+errlog, "--skip-grant-tables", "--pid-file="+filepath.Join(dir, "pid"), "--innodb-buffer-pool-size=16M",
		"--skip-log-bin", "--innodb-flush-log-at-trx-commit=0")
	if tls {
		crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		if out, err := asNobody("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
			"-keyout", key, "-out", crt).CombinedOutput(); err != nil {
			t.Fatalf("openssl req: %v: %s", err, out)
		}
		cmd.Args = append(cmd.Args, "--ssl-cert="+crt, "--ssl-key="+key)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // mariadbd shuts down on TERM
		cmd.Wait()
	})
	waitPort(t, s.Addr, errlog)
	for range 100 { // the general log file appears once the server is up
		if _, err := os.Stat(s.Log); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// GeneralLog counts a MariaDB general log's commands after offset, by
// command ("Query", "Execute", "Prepare", "Init DB"), with their texts.
type GeneralLog struct {
	Commands map[string][]string
}

// ReadGeneralLog parses the general log from byte offset on.
func ReadGeneralLog(t testing.TB, path string, offset int64) GeneralLog {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	gl := GeneralLog{Commands: map[string][]string{}}
	var cur *string
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		// "[yymmdd hh:mm:ss]\t    id Command\targument"; a text with
		// newlines goes on over the next lines
		f := strings.SplitN(line, "\t", 4)
		if len(f) >= 3 {
			idc := strings.TrimSpace(f[len(f)-2])
			arg := f[len(f)-1]
			if len(f) == 4 {
				idc, arg = strings.TrimSpace(f[2]), f[3]
				if idc == "" {
					idc = strings.TrimSpace(f[1])
				}
			}
			if id, cmd, ok := strings.Cut(idc, " "); ok && isDigits(id) {
				gl.Commands[cmd] = append(gl.Commands[cmd], arg)
				l := gl.Commands[cmd]
				cur = &l[len(l)-1]
				continue
			}
		}
		if cur != nil && line != "" {
			*cur += "\n" + line
		}
	}
	return gl
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

package redis

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
)

// The tests below put a relay between real Redis clients (redis-cli,
// redis-benchmark, go-redis) and a real redis-server, feed what the relay
// reads to the parser as the kernel would capture it, and compare what the
// parser found with MONITOR: every command the server ran, per command and
// database, for the relayed connections only.

type server struct {
	addr string
	mon  *monitor
}

func startRedis(t *testing.T) *server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (Debian package redis-server; make deps)")
	}
	port := freePort(t)
	dir := t.TempDir()
	proc := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := proc.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var c net.Conn
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("redis-server did not listen: %v", err)
		}
	}
	m := &monitor{c: c, r: bufio.NewReader(c)}
	if _, err := c.Write([]byte(cmd("MONITOR"))); err != nil {
		t.Fatal(err)
	}
	if l, _ := m.r.ReadString('\n'); l != "+OK\r\n" {
		t.Fatalf("MONITOR: %q", l)
	}
	go m.read()
	t.Cleanup(func() { c.Close() })
	return &server{addr: addr, mon: m}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// monitor keeps MONITOR's lines: `+<time> [<db> <client>] "<command>" ...`.
type monitor struct {
	c     net.Conn
	r     *bufio.Reader
	mu    sync.Mutex
	lines []string
}

func (m *monitor) read() {
	for {
		l, err := m.r.ReadString('\n')
		if err != nil {
			return
		}
		m.mu.Lock()
		m.lines = append(m.lines, l)
		m.mu.Unlock()
	}
}

// sync runs ECHO marker on a connection of its own and waits for MONITOR to
// show it: every command run before is in the lines then.
func (s *server) sync(t *testing.T) {
	t.Helper()
	marker := fmt.Sprintf("sync-%d", time.Now().UnixNano())
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(cmd("ECHO", marker)))
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		s.mon.mu.Lock()
		n := len(s.mon.lines)
		found := n > 0 && strings.Contains(s.mon.lines[n-1], marker)
		s.mon.mu.Unlock()
		if found {
			return
		}
	}
	t.Fatal("MONITOR never showed the marker")
}

// counts returns the relayed connections' commands as MONITOR saw them:
// "db.client.operation.duration <COMMAND> <db>" → n.
func (s *server) counts(t *testing.T, r *relay.Relay) map[string]int64 {
	t.Helper()
	s.sync(t)
	s.mon.mu.Lock()
	defer s.mon.mu.Unlock()
	n := map[string]int64{}
	for _, l := range s.mon.lines {
		open, close := strings.IndexByte(l, '['), strings.IndexByte(l, ']')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(l[open+1 : close])
		if len(f) != 2 || !r.Upstream(f[1]) {
			continue
		}
		if strings.Contains(l[close+1:], `"sync-`) {
			// sync's own marker, on a connection of its own whose port
			// may be one a relayed connection had before it closed.
			continue
		}
		rest := l[close+1:]
		q := strings.IndexByte(rest, '"')
		e := strings.IndexByte(rest[q+1:], '"')
		op := strings.ToUpper(rest[q+1 : q+1+e])
		n["db.client.operation.duration "+op+" "+f[0]]++
	}
	return n
}

// counts returns, besides MONITOR's lines, the commands MONITOR leaves out
// (CONFIG, CLIENT, QUIT: administrative ones) from the server's own
// INFO commandstats; only relayed clients send those here.
func (s *server) all(t *testing.T, r *relay.Relay) map[string]int64 {
	t.Helper()
	n := s.counts(t, r)
	logged := map[string]bool{}
	for k := range n {
		logged[strings.Fields(k)[1]] = true
	}
	out, err := exec.Command("redis-cli", "-u", "redis://"+s.addr, "INFO", "commandstats").Output()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), ":calls=")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		op := strings.ToUpper(strings.TrimPrefix(name, "cmdstat_"))
		op, _, _ = strings.Cut(op, "|")
		if logged[op] || op == "ECHO" || op == "MONITOR" || op == "INFO" {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		v, _ := strconv.ParseInt(calls, 10, 64)
		n["db.client.operation.duration "+op+" 0"] += v
	}
	return n
}

// compare checks the parser's counts against the server's: commands per
// name and database against MONITOR (and commandstats), error replies per
// prefix against INFO errorstats, and extra (the clients' own counts of
// what the server does not count).
func compare(t *testing.T, srv *server, got *relay.Tally, mon map[string]int64, extra map[string]int64) {
	t.Helper()
	exp := map[string]int64{}
	for _, m := range []map[string]int64{mon, extra} {
		for k, v := range m {
			exp[k] += v
		}
	}
	g, gotErr := map[string]int64{}, map[string]int64{}
	for k, v := range got.N {
		f := strings.Fields(k)
		if f[0] == "db.client.operation.duration" {
			if f[3] != "-" {
				gotErr[f[3]] += v
			}
			k = strings.Join(f[:3], " ")
			if _, ok := exp[k]; !ok && f[3] != "-" {
				// A command the server refused before running it (an
				// unknown subcommand) is only in errorstats.
				continue
			}
		}
		g[k] += v
	}
	if a, b := relay.Format(g), relay.Format(exp); a != b {
		t.Errorf("parser\n%s\nground truth (MONITOR, commandstats, clients)\n%s", a, b)
	}
	if a, b := relay.Format(gotErr), relay.Format(srv.errors(t)); a != b {
		t.Errorf("error replies: parser\n%s\nINFO errorstats\n%s", a, b)
	}
}

// errors is INFO errorstats: error replies per prefix.
func (s *server) errors(t *testing.T) map[string]int64 {
	t.Helper()
	out, err := exec.Command("redis-cli", "-u", "redis://"+s.addr, "INFO", "errorstats").Output()
	if err != nil {
		t.Fatalf("INFO errorstats: %v", err)
	}
	n := map[string]int64{}
	for _, l := range strings.Split(string(out), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), ":count=")
		if ok && strings.HasPrefix(name, "errorstat_") {
			v, _ := strconv.ParseInt(rest, 10, 64)
			n[strings.TrimPrefix(name, "errorstat_")] = v
		}
	}
	return n
}

func newTally() *relay.Tally {
	return relay.NewTally(New(), "db.operation.name", "db.namespace", "error.type")
}

func TestRealRedisCLI(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli not installed (Debian package redis-tools)")
	}
	srv := startRedis(t)
	tally := newTally()
	r := relay.Start(t, srv.addr, New(), tally, relay.Kernel)
	host, port, _ := net.SplitHostPort(r.Addr)
	cli := func(stdin string, args ...string) string {
		c := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...)
		c.Stdin = strings.NewReader(stdin)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cli("", "SET", "a", "1")
	cli("", "INCR", "a")
	cli("", "-n", "3", "SET", "b", "x")
	cli("", "-n", "3", "GET", "b")
	cli("", "RPUSH", "l", "x", "y")
	if out := cli("", "INCR", "l"); !strings.Contains(out, "WRONGTYPE") {
		t.Fatalf("INCR on a list: %q", out)
	}
	cli("MULTI\nSET c 1\nINCR c\nEXEC\nSELECT 5\nSET d 1\nGET d\n")
	if !r.Idle(10 * time.Second) {
		t.Fatal("connections still open")
	}
	mon := srv.all(t, r)
	// Interactive redis-cli asks COMMAND DOCS first: a reply of hundreds
	// of KiB of small elements, whose middle no capture keeps. It is
	// counted as given up, and the commands after it are found.
	docs := mon["db.client.operation.duration COMMAND 0"]
	delete(mon, "db.client.operation.duration COMMAND 0")
	compare(t, srv, tally, mon, nil)
	if n := tally.N["db.client.operation.duration INCR 0 WRONGTYPE"]; n != 1 {
		t.Errorf("INCR WRONGTYPE = %d, want 1\n%s", n, tally)
	}
	if docs != 1 || len(tally.Drops) != 1 || tally.Drops["incomplete"] != 1 {
		t.Errorf("COMMAND DOCS %d, drops %v", docs, tally.Drops)
	}
}

func TestRealGoRedis(t *testing.T) {
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			srv := startRedis(t)
			tally := newTally()
			r := relay.Start(t, srv.addr, New(), tally, relay.Kernel)
			ctx := context.Background()
			c := goredis.NewClient(&goredis.Options{Addr: r.Addr, Protocol: proto, PoolSize: 4})
			// Pipelines (each in one write within the default 1 KiB capture),
			// a transaction and an error.
			dbtest.GoRedisCommands(t, ctx, c)
			// A large value: its middle is past the capture.
			big := strings.Repeat("b", 300<<10)
			if err := c.Set(ctx, "big", big, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if v, err := c.Get(ctx, "big").Result(); err != nil || v != big {
				t.Fatalf("GET big: %d bytes, %v", len(v), err)
			}
			// Pub/sub: what the subscriber receives is counted, not paired.
			sub := c.Subscribe(ctx, "news", "sport")
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			const published = 50
			received := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				for received < published {
					if _, err := sub.ReceiveMessage(ctx); err != nil {
						return
					}
					received++
				}
			}()
			for i := 0; i < published; i++ {
				ch := "news"
				if i%2 == 1 {
					ch = "sport"
				}
				if err := c.Publish(ctx, ch, "m").Err(); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("subscriber received %d of %d", received, published)
			}
			sub.Close()
			c.Close()
			if !r.Idle(10 * time.Second) {
				t.Fatal("connections still open")
			}
			mon := srv.all(t, r)
			compare(t, srv, tally, mon, map[string]int64{
				// The subscriber's messages, as the subscriber counted them.
				"otelbee.redis.pubsub.messages - - -": int64(received),
			})
			if n := tally.N["db.client.operation.duration LPUSH 0 WRONGTYPE"]; n != 1 {
				t.Errorf("LPUSH WRONGTYPE = %d, want 1", n)
			}
			if n := tally.N["db.client.operation.duration SUBSCRIBE 0 -"]; n != 1 {
				t.Errorf("SUBSCRIBE = %d, want 1 (two channels, one command)", n)
			}
			if len(tally.Drops) != 0 {
				t.Errorf("drops %v", tally.Drops)
			}
		})
	}
}

func TestRealRedisBenchmark(t *testing.T) {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		t.Skip("redis-benchmark not installed (Debian package redis-tools)")
	}
	for _, tc := range []struct {
		name  string
		args  []string
		cap   relay.Capture
		exact bool
	}{
		{"pipelined", []string{"-n", "100000", "-P", "16", "-t", "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin"}, relay.Kernel, true},
		{"one at a time", []string{"-n", "20000", "-c", "10", "-t", "set,get,ping,lrange_100"}, relay.Kernel, true},
		// Sixteen MSETs (7 KiB) or LRANGE replies (16 × 1 KiB) in one
		// call lose their middle to the 4 KiB capture: every command is
		// found or counted as given up, none misattributed.
		{"past the capture", []string{"-n", "20000", "-P", "16", "-t", "mset,lrange_100"}, relay.Kernel, false},
		// A capture of 200 bytes: pipelined commands lose their middle; the
		// replies, each read, stand for them.
		{"small capture", []string{"-n", "20000", "-P", "16", "-t", "set,get,mset"}, relay.Capture{Head: 200, Tail: 32}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRedis(t)
			tally := newTally()
			r := relay.Start(t, srv.addr, New(), tally, tc.cap)
			host, port, _ := net.SplitHostPort(r.Addr)
			c := exec.Command("redis-benchmark", append([]string{"-h", host, "-p", port, "-q"}, tc.args...)...)
			c.Env = append(os.Environ(), "TERM=dumb")
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("redis-benchmark: %v\n%s", err, out)
			}
			if !r.Idle(20 * time.Second) {
				t.Fatal("connections still open")
			}
			mon := srv.all(t, r)
			if tc.exact {
				compare(t, srv, tally, mon, nil)
				if len(tally.Drops) != 0 {
					t.Errorf("drops %v", tally.Drops)
				}
				return
			}
			accounted(t, tally, mon, nil)
		})
	}
}

// accounted checks that every command the server ran was found or counted
// as given up, and that no command was found more often than it ran.
func accounted(t *testing.T, got *relay.Tally, mon, clients map[string]int64) {
	t.Helper()
	exp := map[string]int64{}
	var run, found int64
	for _, m := range []map[string]int64{mon, clients} {
		for k, v := range m {
			exp[k] += v
			run += v
		}
	}
	for k, v := range got.N {
		f := strings.Fields(k)
		op := strings.Join(f[:3], " ")
		if f[0] == "db.client.operation.duration" {
			if v > exp[op] {
				t.Errorf("%s: %d found, %d run", op, v, exp[op])
			}
		}
		found += v
	}
	var dropped int64
	for _, n := range got.Drops {
		dropped += int64(n)
	}
	t.Logf("%d of %d found, %d given up %v", found, run, dropped, got.Drops)
	if found+dropped != run || got.Drops["unpaired"] != 0 {
		t.Errorf("found %d + given up %d != %d run\n%s", found, dropped, run, got)
	}
}

// TestCommandsKnownToServer checks the command list against the server's
// own: a misspelt entry would never match.
func TestCommandsKnownToServer(t *testing.T) {
	srv := startRedis(t)
	out, err := exec.Command("redis-cli", "-u", "redis://"+srv.addr, "COMMAND", "LIST").Output()
	if err != nil {
		t.Skipf("redis-cli: %v", err)
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		have[strings.ToUpper(l)] = true
	}
	newer := map[string]bool{"HEXPIRE": true, "HEXPIREAT": true, "HEXPIRETIME": true, "HPERSIST": true, "HPEXPIRE": true,
		"HPEXPIREAT": true, "HPEXPIRETIME": true, "HPTTL": true, "HTTL": true, "HGETDEL": true, "HGETEX": true, "HSETEX": true, "WAITAOF": true}
	for _, c := range commands {
		if !have[c] && !newer[c] {
			t.Errorf("%s: not a command of this redis-server", c)
		}
	}
}

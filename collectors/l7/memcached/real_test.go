package memcached

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
)

// TestRealPymemcache runs pymemcache (Debian python3-pymemcache) against
// memcached -vv through the capturing relay: commands per name, noreply
// ones apart, equal what memcached logged it received.
func TestRealPymemcache(t *testing.T) {
	bin, err := exec.LookPath("memcached")
	if err != nil {
		t.Skip("memcached not installed (Debian package memcached; make deps)")
	}
	py := "/usr/bin/python3"
	if exec.Command(py, "-c", "import pymemcache").Run() != nil {
		t.Skip("python3-pymemcache not installed (make deps)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command(bin, "-vv", "-p", strconv.Itoa(port), "-l", "127.0.0.1", "-U", "0", "-u", "nobody", "-m", "64")
	var logMu sync.Mutex
	var log bytes.Buffer
	stderr, _ := srv.StderrPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(end) {
			t.Fatal("memcached did not listen")
		}
	}

	tally := relay.NewTally(New(), "db.operation.name", "db.response.status_code")
	r := relay.Start(t, addr, New(), tally, relay.Kernel)
	host, rport, _ := net.SplitHostPort(r.Addr)
	script := fmt.Sprintf(`
from pymemcache.client.base import Client
c = Client((%q, %s), default_noreply=False)
nr = Client((%q, %s), default_noreply=True)
for i in range(50):
    c.set('a%%d' %% i, 'x' * i)
for i in range(30):
    nr.set('b%%d' %% i, 'y')
nr.version()  # a reply on the same connection: the noreply sets have run
for i in range(20):
    got = c.get_many(['a1', 'b1', 'b2', 'missing%%d' %% i])
    assert len(got) == 3, got
v, cas = c.gets('a1')
assert c.cas('a1', 'z', cas) is True
assert c.cas('a1', 'w', cas) is False
assert c.add('a1', 'q') is False
c.replace('a2', 'r'); c.append('a2', 's'); c.prepend('a2', 'p')
c.set('n', '10'); c.incr('n', 5); c.decr('n', 2); nr.incr('n', 1)
c.touch('a3', 100); c.delete('a4'); c.delete('nothere'); nr.delete('a5')
big = 'B' * 500000
c.set('big', big)
assert c.get('big').decode() == big
c.stats(); c.version()
c.close(); nr.close()
`, host, rport, host, rport)
	if out, err := exec.Command(py, "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	if !r.Idle(10 * time.Second) {
		t.Fatal("connections still open")
	}
	time.Sleep(200 * time.Millisecond) // memcached's log lines of the last commands
	logMu.Lock()
	text := log.String()
	logMu.Unlock()
	want := map[string]int64{}
	cmdLine := regexp.MustCompile(`^<\d+ (\S+)(.*)$`)
	for _, l := range strings.Split(text, "\n") {
		m := cmdLine.FindStringSubmatch(l)
		if m == nil || m[1] == "new" || m[1] == "connection" || m[1] == "server" {
			continue
		}
		if strings.HasSuffix(m[2], " noreply") {
			want["otelbee.memcached.noreply.operations "+m[1]+" -"]++
			continue
		}
		want["db.client.operation.duration "+m[1]]++
	}
	got := map[string]int64{}
	for k, v := range tally.N {
		f := strings.Fields(k)
		if f[0] == "db.client.operation.duration" {
			k = f[0] + " " + f[1]
		}
		got[k] += v
	}
	// stats answers with ~70 STAT lines (2 KiB): past the default 1 KiB
	// capture, its middle is lost, and it is counted as given up.
	if want["db.client.operation.duration stats"] != 1 {
		t.Fatalf("memcached logged %v", want)
	}
	delete(want, "db.client.operation.duration stats")
	if a, b := relay.Format(got), relay.Format(want); a != b {
		t.Errorf("parser\n%s\nmemcached -vv\n%s", a, b)
	}
	// Outcomes the script asserted: one cas refused (EXISTS), add refused
	// (NOT_STORED), a delete of a missing key (NOT_FOUND).
	for k, n := range map[string]int64{
		"db.client.operation.duration cas EXISTS":       1,
		"db.client.operation.duration add NOT_STORED":   1,
		"db.client.operation.duration delete NOT_FOUND": 1,
	} {
		if tally.N[k] != n {
			t.Errorf("%s = %d, want %d\n%s", k, tally.N[k], n, tally)
		}
	}
	if len(tally.Drops) != 1 || tally.Drops["incomplete"] != 1 {
		t.Errorf("drops %v, want the stats reply only", tally.Drops)
	}
}

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestDoctorTLSDiscovery: with a Node https server (OpenSSL built into the
// executable) and a gnutls-cli connected to it running, `otelbee doctor`
// lists node's file as instrumentable with its OpenSSL version, GnuTLS's
// library as not instrumentable (unsupported_stack) with the client's pid,
// and itself, a stripped Go binary, as instrumentable from the offset table.
func TestDoctorTLSDiscovery(t *testing.T) {
	harness.RequireRoot(t)
	bin, err := harness.AgentBin()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	if _, err := exec.LookPath("gnutls-cli"); err != nil {
		t.Skip("gnutls-cli not installed (make deps installs gnutls-bin)")
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	// A copy of node is its own file, so its line lists only this test's
	// process whatever other node programs run on the host.
	node := filepath.Join(dir, "node")
	if out, err := exec.Command("cp", "/usr/bin/node", node).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	js := fmt.Sprintf(`require("https").createServer({cert: require("fs").readFileSync(%q), key: require("fs").readFileSync(%q)},
		(q, s) => s.end("ok")).listen(0, "127.0.0.1", function() { console.log("listening " + this.address().port) })`, cert, key)
	server, line := tlsDiscoveryStart(t, "listening", node, "-e", js)
	// A copy of GnuTLS too (through LD_LIBRARY_PATH), so that its line
	// lists only this test's gnutls-cli: the system's is mapped by other
	// programs on the host (PostgreSQL, QEMU), past the line's 8 processes.
	gnutls := filepath.Join(dir, "libgnutls.so.30")
	if out, err := exec.Command("cp", "-L", "/lib/x86_64-linux-gnu/libgnutls.so.30", gnutls).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	client, _ := tlsDiscoveryStart(t, "Handshake was completed", "env", "LD_LIBRARY_PATH="+dir, "gnutls-cli", "--insecure", "-p",
		strings.TrimPrefix(line, "listening "), "127.0.0.1") // env execs gnutls-cli: one pid
	version, err := exec.Command(node, "-p", "process.versions.openssl").Output()
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(bin)

	out, err := exec.Command(bin, "doctor").CombinedOutput()
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	doctor := string(out)
	_, section, ok := strings.Cut(doctor, "\nTLS (uprobe targets")
	if !ok {
		t.Fatalf("doctor has no TLS section:\n%s", doctor)
	}
	t.Logf("TLS section:%s", section)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(regexp.QuoteMeta(node+": openssl "+strings.TrimSpace(string(version))+
			" (built into the executable): instrumentable: SSL_read SSL_write SSL_read_ex SSL_write_ex") +
			`.*\n    processes: ` + fmt.Sprintf(`%d\(node\)\n`, server.Process.Pid)),
		regexp.MustCompile(regexp.QuoteMeta(gnutls+": gnutls: not instrumentable: unsupported_stack") +
			`.*\n    processes: .*` + fmt.Sprintf(`\b%d\(gnutls-cli\)`, client.Process.Pid)),
		regexp.MustCompile(regexp.QuoteMeta(abs+": go go1.") + `\d+\.\d+: instrumentable: ` +
			regexp.QuoteMeta(`crypto/tls.(*Conn).Read[`) + `\d+ returns\] ` + regexp.QuoteMeta(`crypto/tls.(*Conn).Write[`) +
			`\d+ returns\], fd offsets from table\n`),
	} {
		if !want.MatchString(section) {
			t.Errorf("TLS section does not match %s", want)
		}
	}
}

// tlsDiscoveryStart runs a program for the test's length with a stdin held
// open and returns once it printed a line containing ready.
func tlsDiscoveryStart(t *testing.T, ready, name string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	stdin, keep, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = stdin
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); keep.Close() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s exited before printing %q", name, ready)
			}
			if strings.Contains(l, ready) {
				go func() {
					for range lines {
					}
				}()
				return cmd, l
			}
		case <-timeout:
			t.Fatalf("%s printed no %q within 20s", name, ready)
		}
	}
}

package capture

import (
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors/l7"
)

const seenChildEnv = "OTELBEE_TEST_SEEN_CHILD"

// TestPrivilegedSeenMarkForkedChild: a child forked by a process that
// accepted a connection, which has tracked no connection of its own, serves
// the connection it inherited, and it is parsed in the child: the fork
// program marks the child (bpf/l7.c inherit_seen), so its calls look for the
// inherited entry although the child's slot has no conns mark. Exactly one
// connection, one request and one response, served in the child (credited
// to the acceptor, which still runs: Engine.identityOf).
func TestPrivilegedSeenMarkForkedChild(t *testing.T) {
	if os.Getenv(seenChildEnv) != "" {
		// The child (this binary again): one read of the request, one
		// write of the answer, on the inherited descriptor 3; no process
		// of its own in between, which would not be the acceptor's child.
		buf := make([]byte, len(ping))
		if n, err := unix.Read(3, buf); n != len(ping) || err != nil {
			os.Exit(2)
		}
		if _, err := unix.Write(3, []byte("+PONG\r\n")); err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	eng, probes := startProbes(t, "redis")
	p := probes["redis"]
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, server := loopbackPair(t, ln) // accepted here: this process owns it
	f, err := server.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pong := []byte("+PONG\r\n")
	cmd := exec.Command(os.Args[0], "-test.run=^TestPrivilegedSeenMarkForkedChild$")
	cmd.Env = append(os.Environ(), seenChildEnv+"=1")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write(ping); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, make([]byte, len(pong))); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the child: %v", err)
	}
	want := [2]uint64{uint64(len(ping)), uint64(len(pong))}
	var conns [3]int
	var got [3][2]uint64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if conns, got = p.snapshot(); got[l7.RoleServer] == want {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // nothing more may come
	conns, got = p.snapshot()
	if conns[l7.RoleServer] != 1 || got[l7.RoleServer] != want {
		t.Errorf("the child's server end: %d connections, bytes [to server, to client] %v; want 1, %v",
			conns[l7.RoleServer], got[l7.RoleServer], want)
	}
	if n := hookSum(eng)[CounterConnsInherited]; n != 1 {
		t.Errorf("connections inherited: %d, want 1", n)
	}
}

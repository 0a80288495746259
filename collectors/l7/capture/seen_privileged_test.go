package capture

import (
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
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
	if v := os.Getenv(seenChildEnv); v != "" {
		// The child (this binary again): one read of the request, one
		// write of the answer, on the inherited descriptor; no process of
		// its own in between, which would not be the acceptor's child.
		fd, err := strconv.Atoi(v)
		if err != nil {
			os.Exit(4)
		}
		buf := make([]byte, len(ping))
		if n, err := unix.Read(fd, buf); n != len(ping) || err != nil {
			os.Exit(2)
		}
		if _, err := unix.Write(fd, []byte("+PONG\r\n")); err != nil {
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
	rc, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sfd int
	rc.Control(func(fd uintptr) { sfd = int(fd) })
	// The child has the descriptor under the number it was accepted as,
	// as a forked server's child does: the kernel-function source finds
	// the connection by socket, then by that number in the child.
	files := make([]uintptr, sfd+1)
	for i := range files {
		files[i] = ^uintptr(0) // closed in the child
	}
	files[0], files[1], files[2], files[sfd] = 0, 1, 2, uintptr(sfd)
	pid, err := syscall.ForkExec(os.Args[0], []string{os.Args[0], "-test.run=^TestPrivilegedSeenMarkForkedChild$"},
		&syscall.ProcAttr{Env: append(os.Environ(), seenChildEnv+"="+strconv.Itoa(sfd)), Files: files})
	if err != nil {
		t.Fatal(err)
	}
	pong := []byte("+PONG\r\n")
	if _, err := client.Write(ping); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, make([]byte, len(pong))); err != nil {
		t.Fatal(err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		t.Fatalf("the child: %v, exit status %d", err, ws.ExitStatus())
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

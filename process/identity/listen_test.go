package identity

import (
	"net"
	"os"
	"testing"
)

// TestListening: a process is a server while it holds a listening TCP
// (v4, v6) or Unix socket.
func TestListening(t *testing.T) {
	pid := uint32(os.Getpid())
	for _, tc := range []struct{ network, addr string }{
		{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}, {"unix", "@otelbee-listen-test-" + t.Name()},
	} {
		t.Run(tc.network, func(t *testing.T) {
			var c listenCache
			if c.listening("/proc", pid) {
				t.Fatal("listening before Listen")
			}
			ln, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Skip(err)
			}
			defer ln.Close()
			var fresh listenCache
			if !fresh.listening("/proc", pid) {
				t.Errorf("not listening with a %s listener", tc.network)
			}
		})
	}
}

package prometheus

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// TestConnLimitEvicts: at the cap a new connection closes the oldest idle
// one, then the oldest draining one; with every connection busy rendering,
// the newcomer itself.
func TestConnLimitEvicts(t *testing.T) {
	l := newConnLimit(3)
	mk := func() net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a
	}
	closed := func(c net.Conn) bool { return c.SetDeadline(time.Time{}) != nil }
	busy1, idle, drain, busy2 := mk(), mk(), mk(), mk()
	for _, c := range []net.Conn{busy1, idle, drain} {
		l.track(c, http.StateNew)
		l.track(c, http.StateActive)
	}
	l.track(idle, http.StateIdle)
	l.draining(drain)

	l.track(busy2, http.StateNew) // evicts the idle one
	l.track(busy2, http.StateActive)
	if !closed(idle) || closed(busy1) || closed(drain) || closed(busy2) {
		t.Fatalf("first eviction: idle closed %v, busy %v, draining %v, new %v", closed(idle), closed(busy1), closed(drain), closed(busy2))
	}
	next := mk()
	l.track(next, http.StateNew) // evicts the draining one
	l.track(next, http.StateActive)
	if !closed(drain) || closed(busy1) || closed(next) {
		t.Fatalf("second eviction: draining closed %v, busy %v, new %v", closed(drain), closed(busy1), closed(next))
	}
	last := mk()
	l.track(last, http.StateNew) // all busy: the newcomer goes
	if !closed(last) || closed(busy1) || closed(busy2) || closed(next) {
		t.Fatalf("third eviction: newcomer closed %v", closed(last))
	}
	if n := len(l.conns); n != 3 {
		t.Fatalf("%d connections tracked, want 3", n)
	}
}

package tcp

import (
	"net"
	"testing"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/process/identity"

	"go.opentelemetry.io/otel/attribute"
)

func TestKeyAttributes(t *testing.T) {
	k4 := tcpConnKey{ServerPort: 80, Direction: uint8(tcpDirectionDIRECTION_OUTBOUND)}
	copy(k4.Peer[:], net.IPv4(198, 18, 0, 2).To16())
	k6 := tcpConnKey{ServerPort: 443, Direction: uint8(tcpDirectionDIRECTION_INBOUND)}
	copy(k6.Peer[:], net.ParseIP("fd00::2").To16())
	tests := []struct {
		key  tcpConnKey
		want map[attribute.Key]string
	}{
		{k4, map[attribute.Key]string{keyDirection: "outbound", keyPeerAddress: "198.18.0.2", keyServerPort: "80", keyNetworkType: "ipv4", keyTransport: "tcp"}},
		{k6, map[attribute.Key]string{keyDirection: "inbound", keyPeerAddress: "fd00::2", keyServerPort: "443", keyNetworkType: "ipv6"}},
		{tcpConnKey{Direction: 9}, map[attribute.Key]string{keyDirection: "unknown", keyPeerAddress: "::"}},
	}
	for _, tt := range tests {
		set := attribute.NewSet(keyAttributes(tt.key)...)
		for k, v := range tt.want {
			if got, ok := set.Value(k); !ok || got.Emit() != v {
				t.Errorf("%s = %q, want %q", k, got.Emit(), v)
			}
		}
	}
}

func attributeKey(s string) attribute.Key { return attribute.Key(s) }

// TestPeerFolding: past MaxPeersPerProcess a process's new peers share one
// _OTHER series; known peers and other processes are unaffected.
func TestPeerFolding(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxPeersPerProcess = 2
	c := New(collectors.Deps{Processes: identity.NewResolver("/proc", "h")}, cfg)
	key := func(tgid uint32, last byte) tcpConnKey {
		k := tcpConnKey{Tgid: tgid, ServerPort: 443, Direction: uint8(tcpDirectionDIRECTION_OUTBOUND)}
		copy(k.Peer[:], net.IPv4(198, 18, 0, last).To16())
		return k
	}
	a1, a2 := c.attrsFor(key(7, 1)), c.attrsFor(key(7, 2))
	o3, o4 := c.attrsFor(key(7, 3)), c.attrsFor(key(7, 4))
	if a1 == a2 || o3 != o4 || o3 == a1 {
		t.Fatalf("want two own series and one shared overflow series")
	}
	if v, _ := o3.set.Value(keyPeerAddress); v.AsString() != "_OTHER" {
		t.Fatalf("overflow peer = %q", v.AsString())
	}
	if c.attrsFor(key(7, 1)) != a1 {
		t.Fatal("a known peer must keep its series")
	}
	if b := c.attrsFor(key(8, 3)); b == o3 {
		t.Fatal("another process has its own budget")
	}
	if n := c.folded.Load(); n != 2 {
		t.Fatalf("folded = %d, want 2", n)
	}
}

// error.type values are the conventions' own: a failure with no name of its
// own is _OTHER, and every failure has a value.
func TestFailureNames(t *testing.T) {
	for f, name := range failureNames {
		if name == "" {
			t.Errorf("failure %d has no error.type", f)
		}
	}
	if got := failureNames[tcpConnectFailureFAILURE_OTHER]; got != "_OTHER" {
		t.Errorf("error.type of an unclassified failure = %q, want _OTHER", got)
	}
}

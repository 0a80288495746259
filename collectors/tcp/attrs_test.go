package tcp

import (
	"net"
	"testing"

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

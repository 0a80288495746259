package tcp

import (
	"context"
	"encoding/binary"
	"net"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/identity"
)

func encodeCloseEvent(k tcpConnKey, durNs uint64, srtt uint32) []byte {
	b := make([]byte, closeEventSize)
	copy(b[0:16], k.Peer[:])
	binary.LittleEndian.PutUint32(b[16:20], k.Tgid)
	binary.LittleEndian.PutUint16(b[20:22], k.ServerPort)
	b[22] = k.Direction
	binary.LittleEndian.PutUint64(b[24:32], durNs)
	binary.LittleEndian.PutUint32(b[32:36], srtt)
	return b
}

func TestDecodeCloseEvent(t *testing.T) {
	k := tcpConnKey{Tgid: 4242, ServerPort: 8443, Direction: uint8(tcpDirectionDIRECTION_INBOUND)}
	copy(k.Peer[:], net.ParseIP("2001:db8::7").To16())
	tests := []struct {
		name    string
		in      []byte
		want    closeEvent
		wantErr bool
	}{
		{"full", encodeCloseEvent(k, 1_500_000_000, 20123), closeEvent{key: k, durationNs: 1_500_000_000, srttUs: 20123}, false},
		{"trailing bytes ignored", append(encodeCloseEvent(k, 1, 2), 0xff, 0xff), closeEvent{key: k, durationNs: 1, srttUs: 2}, false},
		{"short", make([]byte, 39), closeEvent{}, true},
		{"empty", nil, closeEvent{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got closeEvent
			err := decodeCloseEvent(tt.in, &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

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

// FuzzDecodeCloseEvent: any byte string decodes or errors, never panics, and
// a successful decode re-encodes to the same 36 meaningful bytes.
func FuzzDecodeCloseEvent(f *testing.F) {
	f.Add(encodeCloseEvent(tcpConnKey{Tgid: 1}, 2, 3))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev closeEvent
		if err := decodeCloseEvent(b, &ev); err != nil {
			return
		}
		again := encodeCloseEvent(ev.key, ev.durationNs, ev.srttUs)
		if string(again[:23]) != string(b[:23]) || string(again[24:36]) != string(b[24:36]) {
			t.Fatalf("round trip differs: %x vs %x", again, b[:closeEventSize])
		}
	})
}

func BenchmarkDecodeCloseEvent(b *testing.B) {
	raw := encodeCloseEvent(tcpConnKey{Tgid: 7, ServerPort: 80}, 123456, 789)
	var ev closeEvent
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeCloseEvent(raw, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordClose is the whole user-space path of one ring buffer
// record: decode, cached attribute lookup, two histogram recordings.
func BenchmarkRecordClose(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	c := New(collectors.Deps{Meter: mp.Meter("bench"), Processes: identity.NewResolver("/proc", "h")}, DefaultConfig())
	if err := c.instrumentsForBench(); err != nil {
		b.Fatal(err)
	}
	raw := encodeCloseEvent(tcpConnKey{Tgid: 0, ServerPort: 80}, 123456, 789)
	var ev closeEvent
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeCloseEvent(raw, &ev); err != nil {
			b.Fatal(err)
		}
		c.recordClose(ctx, &ev)
	}
}

package tcp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
)

// closeEventSize is sizeof(struct close_event) in bpf/tcp.c.
const closeEventSize = 40

var errShortEvent = errors.New("close event shorter than 40 bytes")

// closeEvent is a decoded ring buffer record.
type closeEvent struct {
	key        tcpConnKey
	durationNs uint64
	srttUs     uint32
}

// decodeCloseEvent reads a struct close_event without reflection or
// allocation: it runs once per closed connection.
func decodeCloseEvent(b []byte, ev *closeEvent) error {
	if len(b) < closeEventSize {
		return errShortEvent
	}
	copy(ev.key.Peer[:], b[0:16])
	ev.key.Tgid = binary.LittleEndian.Uint32(b[16:20])
	ev.key.ServerPort = binary.LittleEndian.Uint16(b[20:22])
	ev.key.Direction = b[22]
	ev.key.Pad = 0
	ev.durationNs = binary.LittleEndian.Uint64(b[24:32])
	ev.srttUs = binary.LittleEndian.Uint32(b[32:36])
	return nil
}

// Attribute keys of the TCP metrics.
const (
	keyDirection   = attribute.Key("network.connection.direction")
	keyPeerAddress = attribute.Key("network.peer.address")
	keyServerPort  = attribute.Key("server.port")
	keyNetworkType = attribute.Key("network.type")
	keyTransport   = attribute.Key("network.transport")
	keyIODirection = attribute.Key("network.io.direction")
	keyErrorType   = attribute.Key("error.type")
)

func directionName(d uint8) string {
	switch tcpDirection(d) {
	case tcpDirectionDIRECTION_OUTBOUND:
		return "outbound"
	case tcpDirectionDIRECTION_INBOUND:
		return "inbound"
	}
	return "unknown"
}

// failureNames are the error.type values of failed connects, indexed like
// enum connect_failure.
var failureNames = [tcpConnectFailureFAILURE_MAX]string{
	tcpConnectFailureFAILURE_REFUSED:     "refused",
	tcpConnectFailureFAILURE_TIMEOUT:     "timeout",
	tcpConnectFailureFAILURE_RESET:       "reset",
	tcpConnectFailureFAILURE_UNREACHABLE: "unreachable",
	tcpConnectFailureFAILURE_OTHER:       "other",
}

// keyAttributes are the non-identity attributes of a series.
func keyAttributes(k tcpConnKey) []attribute.KeyValue {
	addr := netip.AddrFrom16(k.Peer)
	netType := "ipv6"
	if addr.Is4In6() {
		addr = addr.Unmap()
		netType = "ipv4"
	}
	return []attribute.KeyValue{
		keyDirection.String(directionName(k.Direction)),
		keyPeerAddress.String(addr.String()),
		keyServerPort.Int(int(k.ServerPort)),
		keyNetworkType.String(netType),
		keyTransport.String("tcp"),
	}
}

func peerString(k tcpConnKey) string {
	addr := netip.AddrFrom16(k.Peer).Unmap()
	return addr.String() + ":" + strconv.Itoa(int(k.ServerPort))
}

package tcp

import (
	"net/netip"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
)

// Attribute keys of the TCP metrics.
const (
	keyDirection   = attribute.Key("otelbee.network.connection.direction")
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
	tcpConnectFailureFAILURE_OTHER:       "_OTHER",
}

// keyAttributes are the non-identity attributes of a series.
func keyAttributes(k tcpConnKey) []attribute.KeyValue {
	if k.Peer == otherPeer {
		return []attribute.KeyValue{
			keyDirection.String(directionName(k.Direction)),
			keyPeerAddress.String("_OTHER"),
			keyServerPort.Int(int(k.ServerPort)),
			keyTransport.String("tcp"),
		}
	}
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

// groupAttributes are the non-identity attributes of a histogram series
// (histGroup): the direction, and with perPeer the series' own.
func groupAttributes(k tcpConnKey, perPeer bool) []attribute.KeyValue {
	if perPeer {
		return keyAttributes(k)
	}
	return []attribute.KeyValue{
		keyDirection.String(directionName(k.Direction)),
		keyTransport.String("tcp"),
	}
}

package dns

import (
	"encoding/binary"
	"errors"
	"unsafe"
)

// The layout of struct dns_event (bpf/dns.c), from the generated type.
var evLayout dnsDnsEvent

const (
	offTsNs      = unsafe.Offsetof(evLayout.TsNs)
	offQueryTsNs = unsafe.Offsetof(evLayout.QueryTsNs)
	offCookie    = unsafe.Offsetof(evLayout.Cookie)
	offTgid      = unsafe.Offsetof(evLayout.Tgid)
	offMsgLen    = unsafe.Offsetof(evLayout.MsgLen)
	offCapLen    = unsafe.Offsetof(evLayout.CapLen)
	offSaddr     = unsafe.Offsetof(evLayout.Saddr)
	offDaddr     = unsafe.Offsetof(evLayout.Daddr)
	offSport     = unsafe.Offsetof(evLayout.Sport)
	offDport     = unsafe.Offsetof(evLayout.Dport)
	offKind      = unsafe.Offsetof(evLayout.Kind)
	offTransport = unsafe.Offsetof(evLayout.Transport)
	offID        = unsafe.Offsetof(evLayout.Id)
	offError     = unsafe.Offsetof(evLayout.Error)

	// eventHeaderSize is offsetof(struct dns_event, data), and eventSize
	// its sizeof.
	eventHeaderSize = int(unsafe.Offsetof(evLayout.Data))
	captureSize     = len(evLayout.Data)
	eventSize       = int(unsafe.Sizeof(evLayout))
)

var errShortEvent = errors.New("dns event shorter than its header")

// event is a decoded ring buffer record. data aliases the record's bytes.
type event struct {
	tsNs      uint64
	queryTsNs uint64
	cookie    uint64
	tgid      uint32
	msgLen    uint16
	saddr     [16]byte
	daddr     [16]byte
	sport     uint16
	dport     uint16
	kind      uint8
	transport uint8
	id        uint16
	errno     int32 // KIND_SOCK_ERROR
	data      []byte
}

// decodeEvent reads a struct dns_event without reflection or allocation.
func decodeEvent(b []byte, ev *event) error {
	if len(b) < eventHeaderSize {
		return errShortEvent
	}
	le := binary.LittleEndian
	ev.tsNs = le.Uint64(b[offTsNs:])
	ev.queryTsNs = le.Uint64(b[offQueryTsNs:])
	ev.cookie = le.Uint64(b[offCookie:])
	ev.tgid = le.Uint32(b[offTgid:])
	ev.msgLen = le.Uint16(b[offMsgLen:])
	capLen := int(le.Uint16(b[offCapLen:]))
	copy(ev.saddr[:], b[offSaddr:offSaddr+16])
	copy(ev.daddr[:], b[offDaddr:offDaddr+16])
	ev.sport = le.Uint16(b[offSport:])
	ev.dport = le.Uint16(b[offDport:])
	ev.kind = b[offKind]
	ev.transport = b[offTransport]
	ev.id = le.Uint16(b[offID:])
	ev.errno = int32(le.Uint32(b[offError:]))
	if capLen > captureSize {
		capLen = captureSize
	}
	if eventHeaderSize+capLen > len(b) {
		capLen = len(b) - eventHeaderSize
	}
	ev.data = b[eventHeaderSize : eventHeaderSize+capLen]
	return nil
}

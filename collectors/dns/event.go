package dns

import (
	"encoding/binary"
	"errors"
)

// eventHeaderSize is offsetof(struct dns_event, data) in bpf/dns.c, and
// eventSize its sizeof.
const (
	eventHeaderSize = 72
	captureSize     = 512
	eventSize       = eventHeaderSize + captureSize
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
	data      []byte
}

// decodeEvent reads a struct dns_event without reflection or allocation.
func decodeEvent(b []byte, ev *event) error {
	if len(b) < eventHeaderSize {
		return errShortEvent
	}
	le := binary.LittleEndian
	ev.tsNs = le.Uint64(b[0:8])
	ev.queryTsNs = le.Uint64(b[8:16])
	ev.cookie = le.Uint64(b[16:24])
	ev.tgid = le.Uint32(b[24:28])
	ev.msgLen = le.Uint16(b[28:30])
	capLen := int(le.Uint16(b[30:32]))
	copy(ev.saddr[:], b[32:48])
	copy(ev.daddr[:], b[48:64])
	ev.sport = le.Uint16(b[64:66])
	ev.dport = le.Uint16(b[66:68])
	ev.kind = b[68]
	ev.transport = b[69]
	ev.id = le.Uint16(b[70:72])
	if capLen > captureSize {
		capLen = captureSize
	}
	if eventHeaderSize+capLen > len(b) {
		capLen = len(b) - eventHeaderSize
	}
	ev.data = b[eventHeaderSize : eventHeaderSize+capLen]
	return nil
}

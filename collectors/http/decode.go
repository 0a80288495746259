package httpc

import (
	"encoding/binary"
	"errors"
)

// Record layouts of bpf/http.c.
const (
	connEventSize = 80 // sizeof(struct conn_event), checked by TestRecordLayout
	dataHdrSize   = 56 // offsetof(struct data_event, data)
)

var (
	errShort   = errors.New("http record too short")
	errUnknown = errors.New("http record of unknown type")
)

// record is a decoded ring buffer record. Data aliases the ring buffer
// sample: valid until the next read.
type record struct {
	typ       uint8
	dir       uint8
	role      uint8
	family    uint8
	tgid      uint32
	fd        uint32
	seq       uint32
	startNs   uint64
	enterNs   uint64
	exitNs    uint64 // data: call exit; open/close: when emitted
	total     uint64
	peer      [16]byte
	local     [16]byte
	peerPort  uint16
	localPort uint16
	// close: records of the response direction emitted or dropped, and
	// whether the last request start was dropped with no response since
	respRecords uint32
	lostStart   bool
	errno       uint8  // data with total 0: the call failed (transport.go)
	owner       uint32 // open: the process that accepted or connected
	data        []byte
	segs        []byte // data: segments past the prefix (Conn.FeedSegments)
}

// decodeRecord reads a conn_event or data_event without allocating.
func decodeRecord(b []byte, r *record) error {
	if len(b) < 1 {
		return errShort
	}
	le := binary.LittleEndian
	switch r.typ = b[0]; r.typ {
	case uint8(httpHttpEventTypeEVENT_OPEN), uint8(httpHttpEventTypeEVENT_CLOSE):
		if len(b) < connEventSize {
			return errShort
		}
		r.role = b[1]
		r.family = b[2]
		r.lostStart = b[3] != 0
		r.tgid = le.Uint32(b[4:8])
		r.fd = le.Uint32(b[8:12])
		r.seq = le.Uint32(b[12:16])
		r.startNs = le.Uint64(b[16:24])
		r.exitNs = le.Uint64(b[24:32])
		r.enterNs = r.exitNs
		copy(r.peer[:], b[32:48])
		copy(r.local[:], b[48:64])
		r.peerPort = le.Uint16(b[64:66])
		r.localPort = le.Uint16(b[66:68])
		r.respRecords = le.Uint32(b[68:72])
		r.owner = le.Uint32(b[72:76])
		r.total = 0
		r.data = nil
		r.segs = nil
		return nil
	case uint8(httpHttpEventTypeEVENT_DATA):
		if len(b) < dataHdrSize {
			return errShort
		}
		r.dir = b[1]
		r.role = b[2]
		r.errno = b[3]
		r.tgid = le.Uint32(b[4:8])
		r.fd = le.Uint32(b[8:12])
		captured := le.Uint32(b[12:16])
		r.startNs = le.Uint64(b[16:24])
		r.enterNs = le.Uint64(b[24:32])
		r.exitNs = le.Uint64(b[32:40])
		r.total = le.Uint64(b[40:48])
		r.seq = le.Uint32(b[48:52])
		segBytes := le.Uint32(b[52:56])
		if uint64(captured)+uint64(segBytes) > uint64(len(b)-dataHdrSize) || uint64(captured) > r.total {
			return errShort
		}
		r.data = b[dataHdrSize : dataHdrSize+int(captured)]
		r.segs = b[dataHdrSize+int(captured) : dataHdrSize+int(captured)+int(segBytes)]
		return nil
	}
	return errUnknown
}

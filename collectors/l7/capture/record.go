package capture

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"github.com/otelbee/otelbee/collectors/l7"
)

// Record layouts of bpf/l7.c, from the bpf2go-generated types: an offset
// here is never written by hand.
var (
	ConnEventSize = int(unsafe.Sizeof(l7ConnEvent{}))
	DataHdrSize   = int(unsafe.Offsetof(l7DataEvent{}.Data))
)

var (
	offConn = struct {
		role, family, lostStart, tgid, fd, reqRecords, startNs, tsNs, peer, local,
		peerPort, localPort, respRecords, owner, proto, source, midstream uintptr
	}{
		unsafe.Offsetof(l7ConnEvent{}.Role), unsafe.Offsetof(l7ConnEvent{}.Family),
		unsafe.Offsetof(l7ConnEvent{}.LostStart), unsafe.Offsetof(l7ConnEvent{}.Tgid),
		unsafe.Offsetof(l7ConnEvent{}.Fd), unsafe.Offsetof(l7ConnEvent{}.ReqRecords),
		unsafe.Offsetof(l7ConnEvent{}.StartNs), unsafe.Offsetof(l7ConnEvent{}.TsNs),
		unsafe.Offsetof(l7ConnEvent{}.Peer), unsafe.Offsetof(l7ConnEvent{}.Local),
		unsafe.Offsetof(l7ConnEvent{}.PeerPort), unsafe.Offsetof(l7ConnEvent{}.LocalPort),
		unsafe.Offsetof(l7ConnEvent{}.RespRecords), unsafe.Offsetof(l7ConnEvent{}.Owner),
		unsafe.Offsetof(l7ConnEvent{}.Proto), unsafe.Offsetof(l7ConnEvent{}.Source),
		unsafe.Offsetof(l7ConnEvent{}.Midstream),
	}
	offData = struct {
		dir, role, err, tgid, fd, captured, startNs, enterNs, exitNs, total, reqRecords, segBytes, proto, source, respRecords uintptr
	}{
		unsafe.Offsetof(l7DataEvent{}.Dir), unsafe.Offsetof(l7DataEvent{}.Role),
		unsafe.Offsetof(l7DataEvent{}.Err), unsafe.Offsetof(l7DataEvent{}.Tgid),
		unsafe.Offsetof(l7DataEvent{}.Fd), unsafe.Offsetof(l7DataEvent{}.Captured),
		unsafe.Offsetof(l7DataEvent{}.StartNs), unsafe.Offsetof(l7DataEvent{}.EnterNs),
		unsafe.Offsetof(l7DataEvent{}.ExitNs), unsafe.Offsetof(l7DataEvent{}.Total),
		unsafe.Offsetof(l7DataEvent{}.ReqRecords), unsafe.Offsetof(l7DataEvent{}.SegBytes),
		unsafe.Offsetof(l7DataEvent{}.Proto), unsafe.Offsetof(l7DataEvent{}.Source),
		unsafe.Offsetof(l7DataEvent{}.RespRecords),
	}
)

// Record types.
const (
	TypeOpen  = uint8(l7HttpEventTypeEVENT_OPEN)
	TypeData  = uint8(l7HttpEventTypeEVENT_DATA)
	TypeClose = uint8(l7HttpEventTypeEVENT_CLOSE)
)

var (
	errShort   = errors.New("l7 record too short")
	errUnknown = errors.New("l7 record of unknown type")
)

// Record is one decoded ring buffer record. Data and Segs alias the ring
// buffer sample: valid until the next read.
type Record struct {
	Type      uint8
	Read      bool // data: the call was a read (else a write)
	Role      uint8
	Family    uint8
	Proto     Proto
	Source    l7.Source
	TGID      uint32
	FD        uint32
	StartNs   uint64 // when the kernel began tracking the connection
	EnterNs   uint64
	ExitNs    uint64 // data: call exit; open/close: when emitted
	Total     uint64
	Peer      [16]byte
	Local     [16]byte
	PeerPort  uint16
	LocalPort uint16
	// The connection's records of each direction emitted or dropped (the
	// kernel numbers each direction on its own): open and close, so far;
	// data, before this one, its own direction's count being its number
	// there and the other's what its CPU saw (one may be on its way).
	ReqRecords, RespRecords uint32
	// close: the last request start was dropped with no response since
	LostStart bool
	Midstream bool  // open: the connection existed before the agent
	Errno     uint8 // data with Total 0: the call failed with this errno
	Owner     uint32
	Data      []byte
	Segs      []byte // data: segments past the prefix (Tail)
}

// Server reports whether the observed end accepted the connection.
func (r *Record) Server() bool { return r.Role == uint8(l7HttpRoleROLE_SERVER) }

// Dir is the record's direction on the wire: a server reads requests, a
// client writes them.
func (r *Record) Dir() l7.Dir {
	if r.Read == r.Server() {
		return l7.ToServer
	}
	return l7.ToClient
}

// Decode reads a conn_event or data_event without allocating.
func Decode(b []byte, r *Record) error {
	if len(b) < 1 {
		return errShort
	}
	le := binary.LittleEndian
	u32 := func(off uintptr) uint32 { return le.Uint32(b[off:]) }
	u64 := func(off uintptr) uint64 { return le.Uint64(b[off:]) }
	switch r.Type = b[0]; r.Type {
	case TypeOpen, TypeClose:
		if len(b) < ConnEventSize {
			return errShort
		}
		o := &offConn
		r.Role = b[o.role]
		r.Family = b[o.family]
		r.LostStart = b[o.lostStart] != 0
		r.TGID = u32(o.tgid)
		r.FD = u32(o.fd)
		r.ReqRecords = u32(o.reqRecords)
		r.StartNs = u64(o.startNs)
		r.ExitNs = u64(o.tsNs)
		r.EnterNs = r.ExitNs
		copy(r.Peer[:], b[o.peer:o.peer+16])
		copy(r.Local[:], b[o.local:o.local+16])
		r.PeerPort = le.Uint16(b[o.peerPort:])
		r.LocalPort = le.Uint16(b[o.localPort:])
		r.RespRecords = u32(o.respRecords)
		r.Owner = u32(o.owner)
		r.Proto = Proto(b[o.proto])
		r.Source = l7.Source(b[o.source])
		r.Midstream = b[o.midstream] != 0
		r.Read, r.Errno, r.Total, r.Data, r.Segs = false, 0, 0, nil, nil
		return nil
	case TypeData:
		if len(b) < DataHdrSize {
			return errShort
		}
		o := &offData
		r.Read = b[o.dir] == uint8(l7HttpDirDIR_READ)
		r.Role = b[o.role]
		r.Errno = b[o.err]
		r.TGID = u32(o.tgid)
		r.FD = u32(o.fd)
		captured := u32(o.captured)
		r.StartNs = u64(o.startNs)
		r.EnterNs = u64(o.enterNs)
		r.ExitNs = u64(o.exitNs)
		r.Total = u64(o.total)
		r.ReqRecords = u32(o.reqRecords)
		segBytes := u32(o.segBytes)
		r.Proto = Proto(b[o.proto])
		r.Source = l7.Source(b[o.source])
		r.RespRecords = u32(o.respRecords)
		if uint64(captured)+uint64(segBytes) > uint64(len(b)-DataHdrSize) || uint64(captured) > r.Total {
			return errShort
		}
		r.Data = b[DataHdrSize : DataHdrSize+int(captured)]
		r.Segs = b[DataHdrSize+int(captured) : DataHdrSize+int(captured)+int(segBytes)]
		return nil
	}
	return errUnknown
}

// Tail returns the segment that ends the call (the call's last bytes), or
// nil: what a head-and-tail capture policy kept past the prefix.
func Tail(segs []byte, total uint64) []byte {
	var tail []byte
	s := l7.Segs(segs)
	for {
		off, b, rest, ok := s.Next()
		if !ok {
			if len(s) >= l7.SegHdr {
				return nil // a length past the record
			}
			return tail
		}
		if off+uint64(len(b)) == total {
			tail = b
		}
		s = rest
	}
}

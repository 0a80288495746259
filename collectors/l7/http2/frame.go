package http2

import (
	"encoding/binary"

	"golang.org/x/net/http2/hpack"
)

// Frame types and flags (RFC 9113 section 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingHeaderTableSize = 0x1
	settingMaxFrameSize    = 0x5

	frameHeaderLen = 9
	maxFrameLen    = 1<<24 - 1
)

const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

type phase uint8

const (
	phDesync  phase = iota // frame boundaries unknown
	phPreface              // inside the client preface
	phHeader               // reading a frame header
	phPayload              // inside a frame's payload
)

// blockKind says what a header block is for, and so which fields it keeps.
type blockKind uint8

const (
	blockDiscard  blockKind = iota // decoded for the HPACK state only
	blockRequest                   // request headers
	blockResponse                  // response headers (or trailers-only)
	blockTrailers                  // response trailers
	blockReqTrail                  // request trailers
)

// reader is one direction of a connection: its frame state machine and its
// HPACK decoder (which decodes the header blocks this direction carries).
type reader struct {
	p       *Parser
	dir     Dir
	ph      phase
	started bool
	joined  bool // the direction's beginning was not seen
	pre     int  // preface bytes matched

	hdr    [frameHeaderLen]byte
	hn     int
	ftype  uint8
	flags  uint8
	sid    uint32
	length uint32
	off    uint32 // payload bytes consumed
	// headLen is the payload prefix before the fragment (pad length,
	// priority, promised id); padLen the padding after it.
	headLen uint32
	padLen  uint32
	scratch [8]byte // the prefix, or a fixed-size payload (RST, GOAWAY, one setting)
	sn      int
	dataLen int64 // DATA payload bytes of the current frame

	// The header block being decoded (HEADERS then CONTINUATIONs).
	inBlock   bool
	blkSID    uint32
	blkKind   blockKind
	blkSt     *stream
	blkEnd    bool // the HEADERS had END_STREAM
	blkBroken bool // the decoder failed on this block

	dec *hpack.Decoder
	// maxFrame is the largest frame this direction may send: the other
	// side's SETTINGS_MAX_FRAME_SIZE.
	maxFrame uint32
	// allowedTable is the dynamic table size this direction's encoder may
	// use (the other side's SETTINGS_HEADER_TABLE_SIZE, capped);
	// pendingTable a new value the other side announced that takes effect
	// once this direction acknowledges it (-1: none).
	allowedTable uint32
	pendingTable int64
}

func isPrefacePrefix(b []byte) bool {
	n := min(len(b), len(preface))
	return n > 0 && string(b[:n]) == preface[:n]
}

func isServerPreface(b []byte) bool {
	return len(b) >= frameHeaderLen && b[3] == frameSettings && b[4]&flagAck == 0 &&
		binary.BigEndian.Uint32(b[5:9])&0x7fffffff == 0
}

// plausible reports whether b, the start of a captured call, is a chain of
// well-formed frames to its end (the last one may continue beyond it). Only
// such a call is a safe place to find frame boundaries again: a write
// starting mid-frame would need nine bytes to look like a frame header and
// every frame after it to line up.
func (r *reader) plausible(b []byte) bool {
	if len(b) < frameHeaderLen {
		return false
	}
	first := true
	for len(b) >= frameHeaderLen {
		length, typ, flags, sid, reserved := splitHeader(b)
		if reserved || !validHeader(length, typ, flags, sid, r.maxFrame) || (first && typ == frameContinuation) {
			return false
		}
		first = false
		if uint64(len(b)) < frameHeaderLen+uint64(length) {
			return true
		}
		b = b[frameHeaderLen+length:]
	}
	// A trailing partial header cannot be checked: accept only a call that
	// ends on a frame boundary or inside a frame.
	return len(b) == 0
}

func splitHeader(b []byte) (length uint32, typ, flags uint8, sid uint32, reserved bool) {
	length = uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
	typ, flags = b[3], b[4]
	raw := binary.BigEndian.Uint32(b[5:9])
	return length, typ, flags, raw & 0x7fffffff, raw&0x80000000 != 0
}

// validHeader checks what RFC 9113 fixes for each known type; unknown
// types are legal (extensions) but not trusted for resynchronising, which
// is why plausible calls this strictly and frameStart leniently.
func validHeader(length uint32, typ, flags uint8, sid uint32, maxFrame uint32) bool {
	if length > maxFrame {
		return false
	}
	switch typ {
	case frameData:
		return sid != 0 && flags&^(flagEndStream|flagPadded) == 0
	case frameHeaders:
		return sid != 0 && flags&^(flagEndStream|flagEndHeaders|flagPadded|flagPriority) == 0
	case framePriority:
		return sid != 0 && length == 5 && flags == 0
	case frameRSTStream:
		return sid != 0 && length == 4 && flags == 0
	case frameSettings:
		return sid == 0 && length%6 == 0 && flags&^flagAck == 0 && (flags&flagAck == 0 || length == 0)
	case framePushPromise:
		return sid != 0 && flags&^(flagEndHeaders|flagPadded) == 0
	case framePing:
		return sid == 0 && length == 8 && flags&^flagAck == 0
	case frameGoAway:
		return sid == 0 && length >= 8 && flags == 0
	case frameWindowUpdate:
		return length == 4 && flags == 0
	case frameContinuation:
		return sid != 0 && flags&^flagEndHeaders == 0
	}
	return false
}

// resync makes the start of the current call a frame boundary. The HPACK
// decoder restarts empty: whatever the lost bytes inserted is unknown, and
// references to it fail instead of decoding to something else.
func (r *reader) resync() {
	r.ph = phHeader
	r.hn = 0
	r.p.stats.Resyncs++
}

// desync drops the direction's frame boundaries and everything that
// depended on the bytes lost: the decoder's table and every open stream.
func (r *reader) desync() {
	r.p.stats.Desyncs++
	r.ph = phDesync
	r.hn = 0
	r.endBlockState()
	r.resetDecoder()
	r.p.abandonAll()
	if r.dir == FromClient && r.p.maxClientID > 0 {
		// Requests may start in the bytes skipped until the next safe
		// boundary: the stream ids they took show how many.
		r.p.countGap = true
	}
}

// resetDecoder empties the decoder's table and drops any partial field,
// reusing the decoder: a shrink to 0 evicts every entry.
func (r *reader) resetDecoder() {
	r.p.stats.DecoderResets++
	r.dec.Close()
	r.dec.Close() // the first only drops a partial field
	r.dec.SetMaxDynamicTableSize(0)
	capSize := r.p.lim.MaxHeaderTable
	r.dec.SetMaxDynamicTableSize(capSize)
	if r.joined {
		r.dec.SetAllowedMaxDynamicTableSize(capSize)
	} else {
		r.dec.SetAllowedMaxDynamicTableSize(min(r.allowedTable, capSize))
	}
}

func (r *reader) endBlockState() {
	r.inBlock = false
	r.blkSt = nil
	r.blkKind = blockDiscard
	r.blkBroken = false
}

// consume parses b, which follows the bytes already consumed.
func (r *reader) consume(b []byte) {
	for len(b) > 0 {
		switch r.ph {
		case phDesync:
			r.p.stats.SkippedBytes += uint64(len(b))
			return
		case phPreface:
			n := min(len(b), len(preface)-r.pre)
			if string(b[:n]) != preface[r.pre:r.pre+n] {
				r.desync()
				continue
			}
			r.pre += n
			b = b[n:]
			if r.pre == len(preface) {
				r.ph = phHeader
			}
		case phHeader:
			n := copy(r.hdr[r.hn:], b)
			r.hn += n
			b = b[n:]
			if r.hn < frameHeaderLen {
				return
			}
			r.headerDone()
		case phPayload:
			n := min(uint32(len(b)), r.length-r.off)
			if !r.payload(b[:n]) {
				r.desync()
				continue
			}
			b = b[n:]
			if r.off == r.length {
				r.ph = phHeader
				r.frameEnd()
			}
		}
	}
}

// headerDone starts the frame whose header r.hdr holds.
func (r *reader) headerDone() {
	r.hn = 0
	if !r.frameStart() {
		r.desync()
		return
	}
	if r.length == 0 {
		r.ph = phHeader
		r.frameEnd()
	}
}

// skip accounts for missing bytes that followed the captured ones. Inside
// a DATA payload (or padding) they cost nothing, since only its length
// counts; anywhere else the frame boundaries are lost.
func (r *reader) skip(missing uint64) {
	r.p.stats.SkippedBytes += missing
	if r.ph == phDesync {
		return
	}
	if r.ph == phPayload && r.ftype == frameData && r.off >= r.headLen &&
		missing <= uint64(r.length-r.off) {
		m := uint32(missing)
		if end := r.length - r.padLen; r.off < end {
			r.dataLen += int64(min(m, end-r.off))
		}
		r.off += m
		if r.off == r.length {
			r.ph = phHeader
			r.frameEnd()
		}
		return
	}
	r.desync()
}

// frameStart checks the frame header just read and prepares its payload.
func (r *reader) frameStart() bool {
	length, typ, flags, sid, _ := splitHeader(r.hdr[:])
	if length > maxFrameLen {
		return false
	}
	r.ftype, r.flags, r.sid, r.length = typ, flags, sid, length
	r.off, r.headLen, r.padLen, r.sn, r.dataLen = 0, 0, 0, 0, 0
	if r.inBlock && (typ != frameContinuation || sid != r.blkSID) {
		return false // a header block must not be interleaved
	}
	switch typ {
	case frameData, frameHeaders, framePushPromise, frameContinuation, frameRSTStream, framePriority:
		if sid == 0 {
			return false
		}
	case frameSettings, framePing, frameGoAway:
		if sid != 0 {
			return false
		}
	}
	switch typ {
	case frameData:
		if flags&flagPadded != 0 {
			r.headLen = 1
		}
	case frameHeaders:
		if flags&flagPadded != 0 {
			r.headLen = 1
		}
		if flags&flagPriority != 0 {
			r.headLen += 5
		}
		r.startBlock(sid, flags&flagEndStream != 0)
	case framePushPromise:
		r.headLen = 4
		if flags&flagPadded != 0 {
			r.headLen++
		}
		// A promised request is decoded for the table's sake only.
		r.inBlock, r.blkSID, r.blkKind, r.blkSt, r.blkEnd, r.blkBroken = true, sid, blockDiscard, nil, false, false
	case frameContinuation:
		if !r.inBlock {
			return false
		}
	case frameSettings:
		if length%6 != 0 || (flags&flagAck != 0 && length != 0) {
			return false
		}
	case frameRSTStream:
		if length != 4 {
			return false
		}
	case frameGoAway:
		if length < 8 {
			return false
		}
	}
	if r.headLen > length {
		return false
	}
	r.ph = phPayload
	return true
}

// payload consumes b, all within the current frame.
func (r *reader) payload(b []byte) bool {
	for len(b) > 0 {
		switch {
		case r.off < r.headLen:
			n := min(uint32(len(b)), r.headLen-r.off)
			copy(r.scratch[r.off:], b[:n])
			r.off += n
			b = b[n:]
			if r.off == r.headLen && r.flags&flagPadded != 0 && r.ftype != frameContinuation {
				r.padLen = uint32(r.scratch[0])
				if r.headLen+r.padLen > r.length {
					return false
				}
			}
		case r.off < r.length-r.padLen:
			n := min(uint32(len(b)), r.length-r.padLen-r.off)
			r.body(b[:n])
			r.off += n
			b = b[n:]
		default: // padding
			n := min(uint32(len(b)), r.length-r.off)
			r.off += n
			b = b[n:]
		}
	}
	return true
}

// body handles payload bytes after the prefix and before the padding.
func (r *reader) body(b []byte) {
	switch r.ftype {
	case frameData:
		r.dataLen += int64(len(b))
	case frameHeaders, frameContinuation, framePushPromise:
		if r.blkBroken {
			return
		}
		if _, err := r.dec.Write(b); err != nil {
			r.blockFailed()
		}
	case frameSettings:
		for len(b) > 0 {
			n := copy(r.scratch[r.sn:6], b)
			r.sn += n
			b = b[n:]
			if r.sn == 6 {
				r.sn = 0
				r.p.setting(r.dir, binary.BigEndian.Uint16(r.scratch[:2]), binary.BigEndian.Uint32(r.scratch[2:6]))
			}
		}
	case frameRSTStream, frameGoAway:
		if r.sn < 8 {
			r.sn += copy(r.scratch[r.sn:8], b)
		}
	}
}

// blockFailed restarts the decoder: the rest of the block, with whatever
// entries it would have inserted, is unknown, so the table is no longer
// the encoder's. The stream is undecodable.
func (r *reader) blockFailed() {
	r.blkBroken = true
	if r.blkSt != nil {
		r.blkSt.undecodable = true
	}
	r.resetDecoder()
}

func (r *reader) frameEnd() {
	switch r.ftype {
	case frameData:
		r.p.onData(r.dir, r.sid, r.dataLen, r.flags&flagEndStream != 0)
	case frameHeaders, frameContinuation, framePushPromise:
		if r.flags&flagEndHeaders != 0 {
			r.endBlock()
		}
	case frameSettings:
		if r.flags&flagAck != 0 {
			r.p.settingsAck(r.dir)
		}
	case frameRSTStream:
		r.p.onReset(r.sid, binary.BigEndian.Uint32(r.scratch[:4]))
	case frameGoAway:
		r.p.onGoAway(r.dir, binary.BigEndian.Uint32(r.scratch[:4])&0x7fffffff)
	}
}

package http2

import (
	"unicode/utf8"

	"github.com/otelbee/otelbee/collectors/attrs"
	"golang.org/x/net/http2/hpack"
)

// stream is one request/response exchange in flight. Streams are recycled
// with their buffers (l7.ByID), so a warm connection allocates none.
type stream struct {
	id                              uint32
	method, path, authority, scheme field
	ctype                           field
	status                          int
	grpcStatus                      int
	reqBytes, respBytes             int64
	start                           int64
	reqHeaders, reqDone             bool
	respHeaders, respDone           bool
	grpc, undecodable, reset        bool
	resetCode                       uint32
	grpcTimeout                     int64
	hasParent                       bool
	traceID                         [16]byte
	spanID                          [8]byte
	traceFlags                      byte
}

// field is one kept header value: a fixed buffer, so a recycled stream
// (zeroed by l7.ByID) keeps its memory.
type field struct {
	b [defaultMaxField]byte
	n uint16
}

func (f *field) bytes() []byte { return f.b[:f.n] }

// set keeps at most max bytes of v as valid UTF-8.
func (f *field) set(v string, max int) {
	kept := keep(f.b[:0], v, max)
	if len(kept) > len(f.b) {
		// Invalid bytes replaced by U+FFFD outgrew the buffer (the rare
		// path that allocates): cut on a rune boundary.
		kept = kept[:len(f.b)]
		for len(kept) > 0 && !utf8.Valid(kept) {
			kept = kept[:len(kept)-1]
		}
		copy(f.b[:], kept)
	}
	f.n = uint16(len(kept))
}

// alloc opens stream id, or returns nil when MaxStreams are open.
func (p *Parser) alloc(id uint32) *stream {
	st, _ := p.streams.Add(id)
	if st != nil {
		st.id, st.grpcStatus = id, -1
	}
	return st
}

// detach makes sure no header block still being decoded writes into st
// after it is recycled.
func (p *Parser) detach(st *stream) {
	for d := range p.dirs {
		if p.dirs[d].blkSt == st {
			p.dirs[d].blkSt = nil
			p.dirs[d].blkKind = blockDiscard
		}
	}
}

// startBlock opens the header block of a HEADERS frame on stream sid and
// decides what it is for.
func (r *reader) startBlock(sid uint32, endStream bool) {
	p := r.p
	r.inBlock, r.blkSID, r.blkEnd, r.blkBroken = true, sid, endStream, false
	r.blkKind, r.blkSt = blockDiscard, nil
	st := p.streams.Get(sid)
	if r.dir == FromClient {
		switch {
		case st != nil:
			r.blkKind, r.blkSt = blockReqTrail, st
		case sid%2 == 0 || sid <= p.maxClientID:
			// A server-initiated id, or a stream dropped or finished
			// already: nothing to attribute.
		default:
			if p.countGap {
				// Clients number their streams 1, 3, 5, ...: the ids
				// between the last seen and this one were opened in the
				// bytes lost.
				p.stats.Unseen += uint64((sid-p.maxClientID)/2 - 1)
				p.countGap = false
			}
			p.maxClientID = sid
			if st = p.alloc(sid); st == nil {
				p.stats.DroppedStreams++
				return
			}
			st.start = p.now.Start
			p.stats.Streams++
			r.blkKind, r.blkSt = blockRequest, st
		}
		return
	}
	if st == nil {
		return
	}
	if st.respHeaders {
		r.blkKind = blockTrailers
	} else {
		r.blkKind = blockResponse
	}
	r.blkSt = st
}

// endBlock completes a header block (END_HEADERS seen).
func (r *reader) endBlock() {
	if !r.blkBroken {
		if err := r.dec.Close(); err != nil {
			r.blockFailed()
		}
	}
	st, kind, end, broken := r.blkSt, r.blkKind, r.blkEnd, r.blkBroken
	r.endBlockState()
	if st == nil {
		return
	}
	switch kind {
	case blockRequest:
		st.reqHeaders = true
		st.reqDone = end
		st.grpc = isGRPC(st.ctype.bytes())
	case blockReqTrail:
		st.reqDone = st.reqDone || end
	case blockResponse:
		if !broken && st.status >= 100 && st.status < 200 && !end {
			st.status = 0 // informational: the final response follows
			return
		}
		st.respHeaders = true
		st.respDone = end
	case blockTrailers:
		st.respDone = st.respDone || end
	}
	r.p.maybeFinish(st)
}

func isGRPC(ctype []byte) bool {
	const g = "application/grpc"
	return len(ctype) >= len(g) && string(ctype[:len(g)]) == g &&
		(len(ctype) == len(g) || ctype[len(g)] == '+' || ctype[len(g)] == ';')
}

// onField receives each decoded header field of this direction's current
// block; only the fields an Exchange names are kept.
func (r *reader) onField(f hpack.HeaderField) {
	st := r.blkSt
	if st == nil {
		return
	}
	max := r.p.lim.MaxField
	switch r.blkKind {
	case blockRequest:
		switch f.Name {
		case ":method":
			st.method.set(f.Value, max)
		case ":path":
			st.path.set(cutQuery(f.Value), max)
		case ":authority":
			st.authority.set(f.Value, max)
		case "host":
			// Allowed instead of :authority (RFC 9113 8.3.1), e.g. from
			// a request translated from HTTP/1.1.
			if st.authority.n == 0 {
				st.authority.set(f.Value, max)
			}
		case ":scheme":
			st.scheme.set(f.Value, max)
		case "content-type":
			st.ctype.set(f.Value, max)
		case "traceparent":
			st.hasParent = parseTraceparent(f.Value, &st.traceID, &st.spanID, &st.traceFlags)
		case "grpc-timeout":
			st.grpcTimeout = parseTimeout(f.Value)
		}
	case blockResponse:
		switch f.Name {
		case ":status":
			st.status = atoi(f.Value, 999)
		case "content-type":
			st.ctype.set(f.Value, max)
		case "grpc-status":
			st.grpcStatus = atoi(f.Value, 1<<16)
		}
	case blockTrailers:
		if f.Name == "grpc-status" {
			st.grpcStatus = atoi(f.Value, 1<<16)
		}
	}
}

// keep appends at most max bytes of v to dst as valid UTF-8, cut on a rune
// boundary.
func keep(dst []byte, v string, max int) []byte {
	if len(v) > max {
		v = v[:max]
		for i := 0; i < utf8.UTFMax && len(v) > 0; i++ {
			if r, n := utf8.DecodeLastRuneInString(v); r != utf8.RuneError || n != 1 {
				break
			}
			v = v[:len(v)-1]
		}
	}
	if utf8.ValidString(v) {
		return append(dst, v...)
	}
	return attrs.AppendValid(dst, []byte(v))
}

// atoi parses a decimal status; -1 when it is not one or exceeds max.
func atoi(s string, max int) int {
	if len(s) == 0 || len(s) > 6 {
		return -1
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	if n > max {
		return -1
	}
	return n
}

func (p *Parser) onData(dir Dir, sid uint32, n int64, end bool) {
	st := p.streams.Get(sid)
	if st == nil {
		return
	}
	if dir == FromClient {
		st.reqBytes += n
		st.reqDone = st.reqDone || end
	} else {
		st.respBytes += n
		st.respDone = st.respDone || end
	}
	p.maybeFinish(st)
}

func (p *Parser) onReset(sid uint32, code uint32) {
	st := p.streams.Get(sid)
	if st == nil {
		return
	}
	st.reset, st.resetCode = true, code
	p.maybeFinish(st)
}

// onGoAway drops the streams the sender says it never processed: when the
// server sends it, client streams above its last stream id.
func (p *Parser) onGoAway(dir Dir, last uint32) {
	if dir != FromServer {
		return
	}
	p.streams.Each(func(id uint32, st *stream) {
		if id > last {
			p.stats.Unfinished++
			p.detach(st)
			p.streams.Remove(id)
		}
	})
}

// setting applies one SETTINGS parameter sent by dir: it bounds what the
// other direction may send.
func (p *Parser) setting(dir Dir, id uint16, v uint32) {
	o := &p.dirs[1-dir]
	switch id {
	case settingHeaderTableSize:
		v = min(v, p.lim.MaxHeaderTable)
		// Until the other side acknowledges, its encoder may use either
		// the old or the new size; the new one binds once the ACK is seen
		// in its direction.
		o.pendingTable = int64(v)
		if o.dec != nil && v > o.allowedTable {
			o.dec.SetAllowedMaxDynamicTableSize(v)
		}
		if v > o.allowedTable {
			o.allowedTable = v
		}
	case settingMaxFrameSize:
		if v >= initialMaxFrame && v <= maxFrameLen {
			o.maxFrame = v
		}
	}
}

// settingsAck: dir acknowledged the other side's SETTINGS, so its encoder
// now works within them.
func (p *Parser) settingsAck(dir Dir) {
	r := &p.dirs[dir]
	if r.pendingTable < 0 {
		return
	}
	r.allowedTable = uint32(r.pendingTable)
	r.pendingTable = -1
	if r.dec != nil && !r.joined {
		r.dec.SetAllowedMaxDynamicTableSize(r.allowedTable)
	}
}

// maybeFinish emits st once both directions ended it, or it was reset.
func (p *Parser) maybeFinish(st *stream) {
	if !st.reset && !(st.reqDone && st.respDone) {
		return
	}
	if st.reqDone && !st.respDone && !st.reset {
		return
	}
	p.detach(st)
	switch {
	case !st.reqHeaders:
		p.stats.Unfinished++
	case st.undecodable || st.method.n == 0 || st.path.n == 0 && string(st.method.bytes()) != "CONNECT":
		// Never a guess: a stream without its method and path is not
		// attributed to anything.
		p.stats.Undecodable++
	default:
		p.stats.Exchanges++
		if p.emit != nil {
			e := &p.ex
			*e = Exchange{
				StreamID: st.id, Method: st.method.bytes(), Path: st.path.bytes(), Authority: st.authority.bytes(),
				Scheme: st.scheme.bytes(), ContentType: st.ctype.bytes(), Status: st.status, GRPC: st.grpc,
				GRPCStatus: st.grpcStatus, RequestBytes: st.reqBytes, ResponseBytes: st.respBytes,
				Start: st.start, End: p.now.End, Reset: st.reset,
				ResetCode: st.resetCode, GRPCTimeout: st.grpcTimeout, HasParent: st.hasParent,
				TraceID: st.traceID, ParentSpanID: st.spanID, TraceFlags: st.traceFlags,
			}
			if st.status < 0 {
				e.Status = 0
			}
			p.emit(e)
		}
	}
	// Last: the stream's buffers back the exchange until emit returns.
	p.streams.Remove(st.id)
}

// parseTraceparent reads a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>
// (a later version may append fields; version ff is invalid).
func parseTraceparent(v string, tid *[16]byte, sid *[8]byte, flags *byte) bool {
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || v[:2] == "ff" ||
		(len(v) > 55 && (v[:2] == "00" || v[55] != '-')) {
		return false
	}
	var f [1]byte
	if !unhexInto(tid[:], v[3:35]) || !unhexInto(sid[:], v[36:52]) || !unhexInto(f[:], v[53:55]) {
		return false
	}
	*flags = f[0]
	return *tid != [16]byte{} && *sid != [8]byte{}
}

func unhexInto(dst []byte, src string) bool {
	for i := range dst {
		hi, ok1 := unhex(src[2*i])
		lo, ok2 := unhex(src[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// parseTimeout reads a grpc-timeout (at most 8 digits and a unit: H, M, S,
// m, u, n) in nanoseconds; 0 when it is not one.
func parseTimeout(v string) int64 {
	if len(v) < 2 || len(v) > 9 {
		return 0
	}
	var n int64
	for i := 0; i < len(v)-1; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	var unit int64
	switch v[len(v)-1] {
	case 'H':
		unit = 3600e9
	case 'M':
		unit = 60e9
	case 'S':
		unit = 1e9
	case 'm':
		unit = 1e6
	case 'u':
		unit = 1e3
	case 'n':
		unit = 1
	default:
		return 0
	}
	return n * unit
}

package httpc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
)

// The HTTP/1.x parser. It frames the two byte streams of one connection into
// messages (request line or status line, headers, a body delimited by
// Content-Length, chunked encoding or the end of the connection), pairs each
// final response with the oldest request waiting for one (pipelining), skips
// interim 1xx responses (100-continue), and reports one Exchange per request
// that got its response.
//
// It sees each read or write as the kernel reported it: the total byte count,
// a bounded prefix of the bytes and a few small segments past it (the first
// bytes of each further iovec, the call's last bytes). Body bytes are
// counted, not read, so a Content-Length body needs no captured data at all.
// Where framing needs bytes that were not captured, a head longer than the
// capture is assumed to end with the call; a chunk-size line past what was
// captured makes the chunked body "blind": its end is still found where a
// call (or its captured tail) ends with the last chunk, or where a call starts
// with a chunk-size line again, but its size is then unknown (BodyUnknown,
// size reported as -1). A blind message whose end is not found (the next
// message starts, the connection closes) is given up and counted
// (FramingLost), never reported with a guessed duration. It allocates
// nothing per call: lines are assembled in fixed buffers and requests wait in
// a fixed ring.

// Method is a request method: the nine of RFC 9110 and PATCH, and the
// further ones declared known (SetKnownMethods). MethodOther is any other
// token (reported as "_OTHER" with the method itself in
// http.request.method_original, per the semantic conventions).
type Method uint8

const (
	MethodOther Method = iota
	MethodGet
	MethodHead
	MethodPost
	MethodPut
	MethodDelete
	MethodConnect
	MethodOptions
	MethodTrace
	MethodPatch
	methodCount
)

// maxMethod bounds a method token; maxMethods the methods in the table.
const (
	maxMethod  = 20
	maxMethods = 64
)

var builtinMethods = [methodCount]string{"_OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// methodNames is every method the parser tells apart, by Method; the
// builtin ones always (HEAD and CONNECT frame messages differently), then
// the further known ones. methodKnown has a bit per Method reported as
// itself; the rest are reported as MethodOther. Both are set by
// SetKnownMethods before any parsing and only read afterwards.
var (
	methodNames = builtinMethods[:]
	methodKnown = uint64(1<<methodCount-1) &^ 1
)

// SetKnownMethods sets the methods reported as themselves, as
// OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS does (case-sensitive); nil or
// empty restores the default (the RFC 9110 methods and PATCH). It must be
// called before any connection is parsed.
func SetKnownMethods(names []string) error {
	if len(names) == 0 {
		methodNames = builtinMethods[:]
		methodKnown = uint64(1<<methodCount-1) &^ 1
		return nil
	}
	table := append([]string{}, builtinMethods[:]...)
	var known uint64
	for _, n := range names {
		if !isToken([]byte(n)) || len(n) > maxMethod {
			return fmt.Errorf("http known method %q is not an HTTP token of at most %d bytes", n, maxMethod)
		}
		i := slices.Index(table, n)
		if i <= 0 {
			if len(table) == maxMethods {
				return fmt.Errorf("more than %d http known methods", maxMethods-int(methodCount))
			}
			i = len(table)
			table = append(table, n)
		}
		known |= 1 << i
	}
	methodNames, methodKnown = table, known
	return nil
}

func (m Method) String() string {
	if int(m) < len(methodNames) {
		return methodNames[m]
	}
	return "_OTHER"
}

// reported is the method as exported: m if it is known, else MethodOther.
func (m Method) reported() Method {
	if m < 64 && methodKnown&(1<<m) != 0 {
		return m
	}
	return MethodOther
}

func parseMethod(b []byte) Method {
	for i := 1; i < len(methodNames); i++ {
		if string(b) == methodNames[i] {
			return Method(i)
		}
	}
	return MethodOther
}

// isToken: an HTTP token (RFC 9110 5.6.2), as bpf/http.c is_tchar.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Upgrade is the protocol a request asked to switch to (Upgrade header),
// for the connections a 101 response ended HTTP/1 on.
type Upgrade uint8

const (
	UpgradeNone Upgrade = iota
	UpgradeWebSocket
	UpgradeH2C
	UpgradeOther
	upgradeCount
)

var upgradeNames = [upgradeCount]string{"", "websocket", "h2c", "other"}

func (u Upgrade) String() string { return upgradeNames[u] }

func parseUpgrade(v []byte) Upgrade {
	// the first protocol offered is the one a server picks first
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = bytes.TrimSpace(v[:i])
	}
	switch {
	case bytes.EqualFold(v, []byte("websocket")):
		return UpgradeWebSocket
	case bytes.EqualFold(v, []byte("h2c")):
		return UpgradeH2C
	}
	return UpgradeOther
}

const (
	maxLine     = 1024 // bytes of one head line kept; longer lines are scanned, not kept
	maxPath     = 256  // bytes of the request target kept (url.path, route)
	maxPending  = 16   // pipelined requests waiting for a response
	maxChunkHdr = 64
	// maxValue bounds the Host, User-Agent and query bytes kept per request:
	// attribute values from traffic stay small whatever a client sends.
	maxValue = 256
)

// Times of one read or write, monotonic nanoseconds.
type callTimes struct {
	enter, exit uint64
}

// Exchange is one request with its response. Path is only valid during the
// callback.
type Exchange struct {
	Method       Method  // as reported: MethodOther unless known
	MethodRaw    []byte  // the request's method token (only valid during the callback)
	Upgrade      Upgrade // a 101 response: the protocol the connection switched to
	Status       int
	Minor        uint8 // HTTP/1.<Minor>
	Path         []byte
	Host         []byte // the Host header's value, at most maxValue bytes ("": none seen)
	UserAgent    []byte // the User-Agent header's value, at most maxValue bytes
	Query        []byte // the request target's query (after '?', before '#'), at most maxValue bytes
	ReqBody      int64  // -1: not known (framing not captured)
	RespBody     int64  // -1: not known
	Start, End   uint64 // monotonic ns
	HasParent    bool
	TraceID      [16]byte
	ParentSpanID [8]byte
	TraceFlags   byte
	Truncated    bool // some of the head was not seen
}

// Stats counts what the parser could not turn into exchanges.
// Several connections may share one Stats.
type Stats struct {
	Malformed  atomic.Uint64 // bytes that start no message where one must start, bad start lines
	Incomplete atomic.Uint64 // requests left without a response when the connection closed
	Lost       atomic.Uint64 // requests given up because records of the connection were lost
	Overflow   atomic.Uint64 // pipelined requests beyond maxPending
	Unpaired   atomic.Uint64 // responses with no request waiting
	// FramingLost: requests given up because the end of a message could not
	// be found (chunk framing not captured); BodyUnknown: exchanges reported
	// without a body size for that reason.
	FramingLost atomic.Uint64
	BodyUnknown atomic.Uint64
	Upgraded    [upgradeCount]atomic.Uint64 // connections a 101 switched, by protocol
}

// pending is a request waiting for its response. Its text buffers are
// outside pendingHead, which alone is zeroed per request: the lengths say
// how much of each buffer is the request's.
type pending struct {
	pendingHead
	raw   [maxMethod]byte
	path  [maxPath]byte
	host  [maxValue]byte
	ua    [maxValue]byte
	query [maxValue]byte
}

type pendingHead struct {
	method    Method
	upgrade   Upgrade
	rawLen    uint8
	minor     uint8
	headDone  bool
	bodyDone  bool
	truncated bool
	hasParent bool
	flags     byte
	pathLen   uint16
	hostLen   uint16
	uaLen     uint16
	queryLen  uint16
	reqBody   int64
	start     uint64
	traceID   [16]byte
	spanID    [8]byte
}

type streamState uint8

const (
	stIdle       streamState = iota // between messages
	stHead                          // in the start line or headers
	stBodyLen                       // Content-Length body
	stChunkSize                     // chunked: size line
	stChunkData                     // chunked: data (and its CRLF)
	stTrailer                       // chunked: trailer lines
	stUntilClose                    // body delimited by the connection's end
	stLost                          // out of sync: wait for a call that starts a message
	stTunnel                        // upgraded or CONNECT: no more HTTP
	stChunkBlind                    // chunked, a size line not captured: look for the end
)

// stream is one direction of a connection.
type stream struct {
	response  bool
	state     streamState
	firstLine bool
	lineLen   int
	lineTrunc bool
	line      [maxLine]byte
	tail      [12]byte // last bytes of an overlong line (the version of a long request line)
	tailLen   int
	cutLine   bool // the header line being read was cut by the end of the capture

	// the message being read
	msgStart   callTimes
	status     int
	minor      uint8
	method     Method
	contentLen int64
	chunked    bool
	noBody     bool
	truncated  bool
	blind      bool // the body's size is not known (stChunkBlind was entered)
	upgrade    Upgrade
	remaining  int64
	body       int64
	lastTimes  callTimes
	chunkLen   int
	chunkHdr   [maxChunkHdr]byte
	cur        *pending // request being read (request stream)
	hasParent  bool
	traceID    [16]byte
	spanID     [8]byte
	traceFlags byte
}

// Conn parses one connection. Server is true for accepted connections:
// requests are read and responses written; a client writes requests.
type Conn struct {
	Server bool
	req    stream
	resp   stream
	ring   [maxPending]pending
	head   int // oldest pending
	n      int // pending count
	ex     Exchange
	stats  *Stats
	sink   func(*Exchange)
	// upgraded: the response being finished is a 101 to this protocol
	upgraded Upgrade
}

// NewConn returns a parser for one connection; sink gets every exchange.
func NewConn(server bool, stats *Stats, sink func(*Exchange)) *Conn {
	c := &Conn{}
	c.Reset(server, stats, sink)
	return c
}

// Reset makes c parse a new connection, keeping its memory.
func (c *Conn) Reset(server bool, stats *Stats, sink func(*Exchange)) {
	c.Server = server
	c.req = stream{}
	c.resp = stream{response: true}
	c.head, c.n = 0, 0
	c.stats = stats
	c.sink = sink
}

// Feed gives the parser one call: read is the direction (a server reads
// requests, a client reads responses), data the captured prefix, total the
// byte count of the call.
func (c *Conn) Feed(read bool, data []byte, total uint64, t callTimes) {
	c.FeedSegments(read, data, nil, total, t)
}

// segHdr is the size of a segment descriptor (bpf/http.c SEG_HDR): offset in
// the call (u32 LE), length (u16 LE).
const segHdr = 6

// FeedSegments is Feed with the segments the kernel captured past the
// prefix, encoded as bpf/http.c writes them; segments out of order or past
// total are ignored from there on.
func (c *Conn) FeedSegments(read bool, head, segs []byte, total uint64, t callTimes) {
	s := &c.req
	if read != c.Server {
		s = &c.resp
	}
	if uint64(len(head)) > total {
		head = head[:total]
		segs = nil
	}
	data, off, first := head, uint64(len(head)), true
	for {
		var next []byte
		nextOff, ok := uint64(0), false
		for len(segs) >= segHdr {
			so := uint64(binary.LittleEndian.Uint32(segs))
			sl := int(binary.LittleEndian.Uint16(segs[4:]))
			if len(segs) < segHdr+sl || so+uint64(sl) > total {
				segs = nil
				break
			}
			next, segs = segs[segHdr:segHdr+sl], segs[segHdr+sl:]
			if so < off { // overlaps what was fed: keep what is new
				if so+uint64(len(next)) <= off {
					continue
				}
				next = next[off-so:]
				so = off
			}
			nextOff, ok = so, true
			break
		}
		gap := total - off
		if ok {
			gap = nextOff - off
		}
		if !c.feed(s, data, int64(gap), t, first, !ok) || !ok {
			return
		}
		data, off, first = next, nextOff+uint64(len(next)), false
	}
}

// Lost tells the parser that records of the connection were lost: what was
// waiting is given up and both directions resynchronise.
func (c *Conn) Lost() {
	c.stats.Lost.Add(uint64(c.n))
	c.n = 0
	c.head = 0
	c.req.state = stLost
	c.req.cur = nil
	c.resp.state = stLost
}

// Close ends the connection: a response delimited by the close completes,
// requests still waiting are counted incomplete.
func (c *Conn) Close() {
	if c.resp.state == stUntilClose {
		c.finishResponse(&c.resp, c.resp.lastTimes)
	}
	if c.resp.state == stChunkBlind {
		c.giveUp()
	}
	if c.req.state == stHead && c.req.cur != nil && !c.req.cur.headDone {
		// A half request: its slot was counted in n.
		c.req.cur = nil
	}
	c.stats.Incomplete.Add(uint64(c.n))
	c.n = 0
	c.head = 0
	c.req.state = stTunnel
	c.resp.state = stTunnel
}

// Pending is the number of requests waiting for a response.
func (c *Conn) Pending() int { return c.n }

// feed consumes one piece of a call: captured bytes, then gap bytes that
// were not captured. atCallStart: the piece begins the call; final: nothing
// of the call follows the gap. It returns false when the rest of the call
// is to be skipped.
func (c *Conn) feed(s *stream, data []byte, gap int64, t callTimes, atCallStart, final bool) bool {
	for len(data) > 0 || gap > 0 {
		switch s.state {
		case stTunnel:
			return false
		case stLost:
			if !atCallStart || len(data) == 0 || !startsMessage(data, s.response) {
				return false
			}
			s.state = stIdle
		case stIdle:
			if len(data) == 0 {
				// Uncaptured bytes where a message must start.
				c.stats.Malformed.Add(1)
				s.state = stLost
				return false
			}
			// Tolerate the CRLF some clients send after a body.
			for len(data) > 0 && (data[0] == '\r' || data[0] == '\n') {
				data = data[1:]
			}
			if len(data) == 0 {
				continue
			}
			if !startsMessage(data, s.response) {
				c.stats.Malformed.Add(1)
				s.state = stLost
				return false
			}
			c.beginMessage(s, t)
		case stHead:
			if len(data) == 0 {
				// The rest of the head was not captured: assume it ends
				// with this call.
				s.truncated = true
				if s.lineLen > 0 || s.firstLine {
					line := s.line[:s.lineLen]
					s.lineLen = 0
					if s.firstLine {
						s.firstLine = false
						if !c.startLine(s, line, true) {
							c.stats.Malformed.Add(1)
							c.dropMessage(s)
							s.state = stLost
							return false
						}
					} else {
						// Cut by the capture: a Host or User-Agent value
						// here may be cut too, and is not kept.
						s.cutLine = true
						c.header(s, line)
						s.cutLine = false
					}
				}
				c.endHead(s, t)
				return false
			}
			data = c.headBytes(s, data, t)
		case stBodyLen:
			n := s.remaining
			if int64(len(data)) >= n {
				data = data[n:]
			} else if int64(len(data)) > 0 {
				n = int64(len(data))
				data = data[:0]
			} else {
				if gap < n {
					n = gap
				}
				gap -= n
			}
			s.remaining -= n
			s.body += n
			if s.remaining == 0 {
				c.endMessage(s, t)
			}
		case stUntilClose:
			s.body += int64(len(data)) + gap
			data, gap = nil, 0
			s.lastTimes = t
		case stChunkSize, stTrailer:
			if len(data) == 0 {
				// A size or trailer line was not captured: the body's
				// size can no longer be followed.
				s.state = stChunkBlind
				s.blind = true
				s.chunkLen = 0
				continue
			}
			data = c.chunkLine(s, data, t)
		case stChunkData:
			n := s.remaining
			if int64(len(data)) >= n {
				data = data[n:]
			} else if len(data) > 0 {
				n = int64(len(data))
				data = data[:0]
			} else {
				if gap < n {
					n = gap
				}
				gap -= n
			}
			s.remaining -= n
			if s.remaining == 0 {
				s.state = stChunkSize
			}
		case stChunkBlind:
			if len(data) > 0 && atCallStart {
				if startsMessage(data, s.response) {
					// A new message: where the last one ended was not seen.
					c.giveUpStream(s)
					continue
				}
				if chunkSizeLine(data) {
					// Writers mostly write a chunk per call: follow again.
					s.state = stChunkSize
					continue
				}
			}
			if final && gap == 0 && endsLastChunk(data, atCallStart) {
				c.endMessage(s, t)
				return false
			}
			data, gap = nil, 0
		}
		atCallStart = false
	}
	if s.state == stUntilClose {
		s.lastTimes = t
	}
	return true
}

// chunkSizeLine reports whether b starts with a whole chunk-size line (hex
// digits, maybe extensions, CRLF) of a chunk that is not the last.
func chunkSizeLine(b []byte) bool {
	i := 0
	for i < len(b) && i < 9 {
		if _, ok := unhex(b[i] | 0x20); !ok {
			break
		}
		i++
	}
	if i == 0 || i == 9 || (i == 1 && b[0] == '0') {
		return false
	}
	j := bytes.IndexByte(b[i:], '\n')
	if j < 1 || j > maxChunkHdr || b[i+j-1] != '\r' {
		return false
	}
	return j == 1 || b[i] == ';'
}

// endsLastChunk reports whether b, the end of a call, ends with the last
// chunk and an empty trailer: after a chunk's CRLF, or as the whole call.
func endsLastChunk(b []byte, wholeCall bool) bool {
	const last = "0\r\n\r\n"
	if !bytes.HasSuffix(b, []byte(last)) {
		return false
	}
	if len(b) == len(last) {
		return wholeCall
	}
	return b[len(b)-len(last)-1] == '\n'
}

// giveUpStream ends a blind message that another one follows.
func (c *Conn) giveUpStream(s *stream) {
	s.state = stIdle
	if s.response {
		c.giveUp()
		return
	}
	// The request's end was not seen; its response still pairs with it.
	if p := s.cur; p != nil {
		p.bodyDone = true
		p.reqBody = -1
		s.cur = nil
	}
}

// giveUp drops the request a blind response answers: its duration is not
// known.
func (c *Conn) giveUp() {
	c.resp.state = stIdle
	if c.n == 0 {
		return
	}
	c.head = (c.head + 1) % maxPending
	c.n--
	c.stats.FramingLost.Add(1)
}

func (c *Conn) beginMessage(s *stream, t callTimes) {
	s.state = stHead
	s.firstLine = true
	s.lineLen = 0
	s.lineTrunc = false
	s.tailLen = 0
	s.msgStart = t
	s.status = 0
	s.minor = 1
	s.method = MethodOther
	s.contentLen = -1
	s.chunked = false
	s.noBody = false
	s.truncated = false
	s.blind = false
	s.upgrade = UpgradeNone
	s.body = 0
	s.hasParent = false
	s.cur = nil
	if !s.response {
		if c.n == maxPending {
			c.stats.Overflow.Add(1)
			return
		}
		p := &c.ring[(c.head+c.n)%maxPending]
		c.n++
		p.pendingHead = pendingHead{}
		p.start = t.exit
		if !c.Server {
			p.start = t.enter // the client's first byte leaves at the write
		}
		s.cur = p
	}
}

// headBytes consumes head bytes line by line; it returns what follows the
// head (the body, or the next message).
func (c *Conn) headBytes(s *stream, data []byte, t callTimes) []byte {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var line []byte
		trunc := false
		if i >= 0 && s.lineLen == 0 && i <= len(s.line) {
			// The whole line is in this call and fits: parsed where it
			// is, not copied (most lines of most heads).
			line = data[:i]
		} else {
			chunk := data
			if i >= 0 {
				chunk = data[:i]
			}
			if n := copy(s.line[s.lineLen:], chunk); n < len(chunk) {
				s.lineTrunc = true
				s.lineLen += n
				// keep the line's last bytes for an overlong request line
				if len(chunk) >= len(s.tail) {
					s.tailLen = copy(s.tail[:], chunk[len(chunk)-len(s.tail):])
				}
			} else {
				s.lineLen += n
			}
			if i < 0 {
				return nil
			}
			line = s.line[:s.lineLen]
			trunc = s.lineTrunc
			s.lineLen = 0
			s.lineTrunc = false
		}
		data = data[i+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if s.firstLine {
			s.firstLine = false
			if !c.startLine(s, line, trunc) {
				c.stats.Malformed.Add(1)
				c.dropMessage(s)
				s.state = stLost
				return nil
			}
			s.tailLen = 0
			continue
		}
		if len(line) == 0 {
			if !c.endHead(s, t) {
				return nil
			}
			return data
		}
		c.header(s, line)
	}
	return nil
}

// dropMessage forgets a request whose start line made no sense.
func (c *Conn) dropMessage(s *stream) {
	if s.cur != nil {
		c.n--
		s.cur = nil
	}
}

func (c *Conn) startLine(s *stream, line []byte, trunc bool) bool {
	if s.response {
		// HTTP/1.x SSS reason
		if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
			return false
		}
		s.minor = line[7] - '0'
		st := 0
		for _, ch := range line[9:12] {
			if ch < '0' || ch > '9' {
				return false
			}
			st = st*10 + int(ch-'0')
		}
		if st < 100 {
			return false
		}
		s.status = st
		return true
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || sp > maxMethod || !isToken(line[:sp]) {
		return false
	}
	s.method = parseMethod(line[:sp])
	rest := line[sp+1:]
	var target []byte
	if trunc {
		target = rest
		if s.tailLen >= 9 && string(s.tail[s.tailLen-9:s.tailLen-1]) == " HTTP/1." {
			s.minor = s.tail[s.tailLen-1] - '0'
		}
	} else {
		sp2 := bytes.LastIndexByte(rest, ' ')
		if sp2 < 0 {
			return false
		}
		target = rest[:sp2]
		v := rest[sp2+1:]
		if len(v) != 8 || string(v[:7]) != "HTTP/1." {
			return false
		}
		s.minor = v[7] - '0'
	}
	if p := s.cur; p != nil {
		p.method = s.method
		p.rawLen = uint8(copy(p.raw[:], line[:sp]))
		p.minor = s.minor
		// Keep the path only: no query, no fragment, no scheme://authority.
		if len(target) > 0 && target[0] != '/' {
			if i := bytes.Index(target, []byte("://")); i >= 0 {
				target = target[i+3:]
				if j := bytes.IndexByte(target, '/'); j >= 0 {
					target = target[j:]
				} else {
					target = nil
				}
			}
		}
		if i := bytes.IndexByte(target, '#'); i >= 0 {
			target = target[:i]
		}
		p.queryLen = 0
		if i := bytes.IndexByte(target, '?'); i >= 0 {
			p.queryLen = uint16(copy(p.query[:], target[i+1:]))
			target = target[:i]
		}
		p.pathLen = uint16(copy(p.path[:], target))
		p.truncated = trunc
	}
	return true
}

var (
	hdrContentLength    = []byte("content-length")
	hdrTransferEncoding = []byte("transfer-encoding")
	hdrTraceparent      = []byte("traceparent")
	hdrUpgrade          = []byte("upgrade")
	hdrHost             = []byte("host")
	hdrUserAgent        = []byte("user-agent")
)

// hdrLens are the lengths of the names header reads, shortest first (nameLen
// depends on the order; TestNameLen checks it). A name header reads is added
// here too.
var hdrLens = [...]int{len(hdrHost), len(hdrUpgrade), len(hdrUserAgent), len(hdrTraceparent), len(hdrContentLength), len(hdrTransferEncoding)}

// nameLen is the only one of hdrLens that line's header name can have, or 0;
// the name is line[:n] unless line[:n] holds a colon, which no name does.
// Only those names are read, so a colon is looked for at their lengths
// instead of searching each line for it (BenchmarkRequestPath/nginx 0.92x):
// the first of those places holding a colon is the only one that can end a
// name of one of those lengths.
func nameLen(line []byte) int {
	for _, l := range hdrLens {
		if len(line) > l && line[l] == ':' {
			return l
		}
	}
	return 0
}

func (c *Conn) header(s *stream, line []byte) {
	n := nameLen(line)
	if n == 0 {
		return
	}
	name := line[:n]
	// the value is trimmed only for the headers read (most are not)
	val := line[n+1:]
	switch n {
	case len(hdrContentLength):
		if bytes.EqualFold(name, hdrContentLength) {
			val = bytes.TrimSpace(val)
			var n int64
			for _, ch := range val {
				if ch < '0' || ch > '9' || n > 1<<50 {
					return
				}
				n = n*10 + int64(ch-'0')
			}
			if len(val) > 0 {
				s.contentLen = n
			}
		}
	case len(hdrTransferEncoding):
		if bytes.EqualFold(name, hdrTransferEncoding) {
			val = bytes.TrimSpace(val)
			// chunked is last when present
			if len(val) >= 7 && bytes.EqualFold(val[len(val)-7:], []byte("chunked")) {
				s.chunked = true
			}
		}
	case len(hdrTraceparent):
		if !s.response && bytes.EqualFold(name, hdrTraceparent) {
			s.hasParent = parseTraceparent(bytes.TrimSpace(val), &s.traceID, &s.spanID, &s.traceFlags)
		}
	case len(hdrUpgrade):
		if !s.response && bytes.EqualFold(name, hdrUpgrade) {
			s.upgrade = parseUpgrade(bytes.TrimSpace(val))
		}
	case len(hdrHost):
		if p := s.cur; p != nil && !s.response && !s.cutLine && p.hostLen == 0 && bytes.EqualFold(name, hdrHost) {
			p.hostLen = uint16(copy(p.host[:], bytes.TrimSpace(val)))
		}
	case len(hdrUserAgent):
		if p := s.cur; p != nil && !s.response && !s.cutLine && p.uaLen == 0 && bytes.EqualFold(name, hdrUserAgent) {
			p.uaLen = uint16(copy(p.ua[:], bytes.TrimSpace(val)))
		}
	}
}

// parseTraceparent reads a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>.
func parseTraceparent(v []byte, tid *[16]byte, sid *[8]byte, flags *byte) bool {
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return false
	}
	if v[0] == 'f' && v[1] == 'f' {
		return false
	}
	if len(v) > 55 && (v[0] == '0' && v[1] == '0') {
		return false
	}
	if !hexDecode(tid[:], v[3:35]) || !hexDecode(sid[:], v[36:52]) {
		return false
	}
	var f [1]byte
	if !hexDecode(f[:], v[53:55]) {
		return false
	}
	*flags = f[0]
	var zt [16]byte
	var zs [8]byte
	return *tid != zt && *sid != zs
}

func hexDecode(dst, src []byte) bool {
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

// endHead decides the body framing. It returns false when the stream stops
// (tunnel).
func (c *Conn) endHead(s *stream, t callTimes) bool {
	if !s.response {
		if p := s.cur; p != nil {
			p.headDone = true
			p.truncated = p.truncated || s.truncated
			p.hasParent = s.hasParent
			p.traceID = s.traceID
			p.spanID = s.spanID
			p.flags = s.traceFlags
			p.upgrade = s.upgrade
		}
		switch {
		case s.chunked:
			s.state = stChunkSize
			s.chunkLen = 0
		case s.contentLen > 0:
			s.state = stBodyLen
			s.remaining = s.contentLen
		default:
			c.endMessage(s, t)
		}
		if s.method == MethodConnect {
			s.state = stTunnel
			return false
		}
		return true
	}
	// A response: its framing depends on the request it answers.
	var reqMethod Method = MethodOther
	if c.n > 0 {
		reqMethod = c.ring[c.head].method
	} else if cur := c.req.cur; cur != nil && c.req.state == stHead {
		reqMethod = cur.method
	}
	st := s.status
	switch {
	case st >= 100 && st < 200 && st != 101:
		// Interim (100 Continue, 103 Early Hints): no body, not final.
		s.state = stIdle
		return true
	case st == 101, reqMethod == MethodConnect && st < 300:
		// The connection no longer speaks HTTP/1 (the kernel stops its
		// records after a 101). An HTTP/2 parser for an h2c upgrade would
		// take the connection over here.
		if st == 101 {
			u := UpgradeOther
			if c.n > 0 && c.ring[c.head].upgrade != UpgradeNone {
				u = c.ring[c.head].upgrade
			}
			c.stats.Upgraded[u].Add(1)
			c.upgraded = u
		}
		c.finishResponse(s, t)
		c.upgraded = UpgradeNone
		s.state = stTunnel
		c.req.state = stTunnel
		return false
	case reqMethod == MethodHead, st == 204, st == 304:
		c.endMessage(s, t)
	case s.chunked:
		s.state = stChunkSize
		s.chunkLen = 0
	case s.contentLen >= 0:
		if s.contentLen == 0 {
			c.endMessage(s, t)
		} else {
			s.state = stBodyLen
			s.remaining = s.contentLen
		}
	default:
		s.state = stUntilClose
		s.lastTimes = t
	}
	return true
}

// chunkLine reads a chunk-size line or a trailer line.
func (c *Conn) chunkLine(s *stream, data []byte, t callTimes) []byte {
	i := bytes.IndexByte(data, '\n')
	chunk := data
	if i >= 0 {
		chunk = data[:i]
	}
	n := copy(s.chunkHdr[s.chunkLen:], chunk)
	s.chunkLen += n
	if i < 0 {
		return nil
	}
	line := s.chunkHdr[:s.chunkLen]
	s.chunkLen = 0
	data = data[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if s.state == stTrailer {
		if len(line) == 0 {
			c.endMessage(s, t)
		}
		return data
	}
	if s.blind && len(line) == 0 {
		// After a resync at a call's start: a chunk's CRLF.
		return data
	}
	// size [; extensions]
	var size int64
	digits := 0
	for _, ch := range line {
		v, ok := unhex(ch | 0x20)
		if !ok {
			break
		}
		size = size<<4 | int64(v)
		digits++
		if digits > 15 {
			break
		}
	}
	if digits == 0 {
		if len(line) == 0 {
			// the CRLF after a chunk's data
			return data
		}
		c.stats.Malformed.Add(1)
		s.truncated = true
		c.endMessage(s, t)
		s.state = stLost
		return nil
	}
	if size == 0 {
		s.state = stTrailer
		return data
	}
	s.body += size
	s.remaining = size + 2 // data and its CRLF
	s.state = stChunkData
	return data
}

// endMessage completes the message being read on s.
func (c *Conn) endMessage(s *stream, t callTimes) {
	s.state = stIdle
	if !s.response {
		if p := s.cur; p != nil {
			p.bodyDone = true
			p.reqBody = s.body
			if s.blind {
				p.reqBody = -1
			}
		}
		s.cur = nil
		return
	}
	c.finishResponse(s, t)
}

// finishResponse pairs a final response with the oldest waiting request.
func (c *Conn) finishResponse(s *stream, t callTimes) {
	s.state = stIdle
	if c.n == 0 {
		if c.req.state == stHead && c.req.cur != nil {
			// The server answered a request whose head it never finished
			// (header too large, bad request): pair them.
			c.req.cur.truncated = true
			c.req.cur.headDone = true
			c.req.cur = nil
			c.req.state = stLost
		}
	}
	if c.n == 0 {
		c.stats.Unpaired.Add(1)
		return
	}
	p := &c.ring[c.head]
	if !p.headDone {
		// The request is still being read: the server answered early.
		p.truncated = true
		c.req.cur = nil
		c.req.state = stLost
	}
	c.head = (c.head + 1) % maxPending
	c.n--
	ex := &c.ex
	ex.Method = p.method.reported()
	ex.MethodRaw = p.raw[:p.rawLen]
	ex.Upgrade = c.upgraded
	ex.Status = s.status
	ex.Minor = p.minor
	ex.Path = p.path[:p.pathLen]
	ex.Host = p.host[:p.hostLen]
	ex.UserAgent = p.ua[:p.uaLen]
	ex.Query = p.query[:p.queryLen]
	ex.ReqBody = p.reqBody
	if !p.bodyDone && c.req.cur == p {
		ex.ReqBody = c.req.body
		if c.req.blind {
			ex.ReqBody = -1
		}
		c.req.cur = nil
	}
	ex.RespBody = s.body
	if s.blind {
		ex.RespBody = -1
	}
	if ex.ReqBody < 0 || ex.RespBody < 0 {
		c.stats.BodyUnknown.Add(1)
	}
	ex.Start = p.start
	ex.End = t.exit
	ex.HasParent = p.hasParent
	ex.TraceID = p.traceID
	ex.ParentSpanID = p.spanID
	ex.TraceFlags = p.flags
	ex.Truncated = p.truncated || s.truncated
	if c.sink != nil {
		c.sink(ex)
	}
}

// startsMessage reports whether b begins a request (or, for responses, a
// status line): a registered or known method and a space, or any other
// token-shaped method whose line ends with " HTTP/1.x" within b.
func startsMessage(b []byte, response bool) bool {
	if response {
		const v = "HTTP/"
		for i := 0; i < len(b) && i < len(v); i++ {
			if b[i] != v[i] {
				return false
			}
		}
		return true
	}
	sp := bytes.IndexByte(b, ' ')
	if sp < 0 {
		// A call can end inside the method: Go's server reads one byte
		// ahead while a handler runs, and that byte starts the next request.
		if len(b) >= 8 {
			return false
		}
		for m := 1; m < len(methodNames); m++ {
			if hasPrefix(methodNames[m], b) {
				return true
			}
		}
		return false
	}
	if sp == 0 || sp > maxMethod || !isToken(b[:sp]) {
		return false
	}
	if parseMethod(b[:sp]) != MethodOther {
		return true
	}
	line := b
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		line = bytes.TrimSuffix(b[:i], []byte("\r"))
	} else {
		return false
	}
	return len(line) >= sp+11 && string(line[len(line)-9:len(line)-1]) == " HTTP/1."
}

func hasPrefix(s string, p []byte) bool {
	if len(p) > len(s) {
		return false
	}
	for i, c := range p {
		if s[i] != c {
			return false
		}
	}
	return true
}

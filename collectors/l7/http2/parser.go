// Package http2 is HTTP/2 for the L7 layer: h2c (prior knowledge or by
// upgrade from HTTP/1.1) and decrypted h2, gRPC included. Protocol (New) is
// the l7.Protocol: one parser per connection, fed the captured reads and
// writes of both directions in order, pairing streams by id and emitting
// one l7.Exchange per stream with the HTTP or RPC conventions' attributes.
//
// Underneath, Parser follows one connection's frames and HPACK state from
// the bytes each direction carried, in the chunks they were captured in. It
// never allocates per exchange once a connection is warm, keeps no header
// value beyond the fields Exchange names, and never attributes a stream to
// a method or path it could not decode with certainty (see docs/http2.md).
package http2

import (
	"github.com/otelbee/otelbee/collectors/l7"
	"golang.org/x/net/http2/hpack"
)

// Dir says which endpoint sent the bytes given to Feed: the layer's
// direction, named as HTTP/2 sees it.
type Dir = l7.Dir

const (
	// FromClient is the direction carrying requests (the client preface,
	// odd-numbered streams' HEADERS).
	FromClient = l7.ToServer
	// FromServer is the direction carrying responses.
	FromServer = l7.ToClient
)

// Times are the monotonic nanosecond timestamps of the captured call: Start
// at its entry, End at its return.
type Times struct{ Start, End int64 }

// Limits bound what one connection may hold. Zero values take the defaults.
type Limits struct {
	// MaxStreams caps the streams open at once on the connection; a stream
	// opened beyond it is counted in Stats.DroppedStreams and not tracked.
	MaxStreams int
	// MaxHeaderTable caps each direction's HPACK dynamic table, whatever the
	// peers' SETTINGS_HEADER_TABLE_SIZE allow.
	MaxHeaderTable uint32
	// MaxHeaderString caps a header name or value the decoder will read; a
	// longer one makes the stream undecodable.
	MaxHeaderString int
	// MaxField caps the bytes kept of each field an Exchange carries (at
	// most 256).
	MaxField int
}

const (
	defaultMaxStreams      = 256
	defaultMaxHeaderTable  = 64 << 10
	defaultMaxHeaderString = 16 << 10
	defaultMaxField        = 256
	// initialHeaderTable is SETTINGS_HEADER_TABLE_SIZE's initial value
	// (RFC 9113 6.5.2).
	initialHeaderTable = 4096
	// initialMaxFrame is SETTINGS_MAX_FRAME_SIZE's initial value.
	initialMaxFrame = 16384
)

func (l Limits) withDefaults() Limits {
	if l.MaxStreams <= 0 {
		l.MaxStreams = defaultMaxStreams
	}
	if l.MaxHeaderTable == 0 {
		l.MaxHeaderTable = defaultMaxHeaderTable
	}
	if l.MaxHeaderString <= 0 {
		l.MaxHeaderString = defaultMaxHeaderString
	}
	if l.MaxField <= 0 || l.MaxField > defaultMaxField {
		l.MaxField = defaultMaxField
	}
	return l
}

// Exchange is one finished stream. Its byte slices are valid UTF-8 and are
// valid only during the Emit call that receives them: copy what you keep.
type Exchange struct {
	StreamID uint32
	// Method, Path (without its query string), Authority and Scheme are the
	// request's pseudo-headers.
	Method, Path, Authority, Scheme []byte
	// ContentType is the response's content-type, else the request's.
	ContentType []byte
	// Status is the final :status; 0 when the stream ended without one
	// (reset before its response).
	Status int
	// GRPC is set when the request's content-type is application/grpc*;
	// then Path is the gRPC method, /package.Service/Method.
	GRPC bool
	// GRPCStatus is grpc-status from the trailers (or a trailers-only
	// response); -1 when absent.
	GRPCStatus int
	// RequestBytes and ResponseBytes are the DATA payload bytes (padding
	// excluded) each side sent on the stream.
	RequestBytes, ResponseBytes int64
	// Start is the start of the call that carried the request's HEADERS;
	// End the end of the call that completed the stream.
	Start, End int64
	// Reset is set when the stream ended with RST_STREAM (ResetCode).
	Reset     bool
	ResetCode uint32
	// GRPCTimeout is the request's grpc-timeout in nanoseconds (0: none).
	GRPCTimeout int64
	// The request's W3C traceparent, when it carried a valid one.
	HasParent    bool
	TraceID      [16]byte
	ParentSpanID [8]byte
	TraceFlags   byte
}

// GRPCMethod returns the fully qualified gRPC method of a gRPC exchange, or
// nil.
func (e *Exchange) GRPCMethod() []byte {
	if !e.GRPC || len(e.Path) < 2 || e.Path[0] != '/' {
		return nil
	}
	return e.Path
}

// Stats counts what a parser saw. Every stream opened ends in exactly one of
// Exchanges, Undecodable, Lost or Unfinished (or is still open).
type Stats struct {
	Streams        uint64 // streams opened by a request HEADERS and tracked
	Exchanges      uint64 // streams emitted
	Undecodable    uint64 // streams whose header blocks could not be decoded with certainty
	Lost           uint64 // streams abandoned because bytes of the connection were lost
	Unseen         uint64 // streams opened in client bytes that were lost (from the gap in stream ids)
	Unfinished     uint64 // streams refused by GOAWAY, or open at Close
	DroppedStreams uint64 // streams not tracked: MaxStreams were open
	Desyncs        uint64 // times a direction lost its frame boundaries
	Resyncs        uint64 // times a direction found them again
	Joined         uint64 // directions whose beginning was not seen
	SkippedBytes   uint64 // bytes not parsed: lost, or while desynchronised
	DecoderResets  uint64 // HPACK decoders replaced after an error or a loss
}

// ParserConfig is what a parser needs besides its bytes.
type ParserConfig struct {
	Limits Limits
	// Emit receives each finished stream. It must not call back into the
	// parser.
	Emit func(*Exchange)
	// Joined says the connection began before it was observed (the
	// layer's Conn.Midstream): neither direction's first bytes are taken
	// for a connection start, and both decoders start without the
	// encoders' tables.
	Joined bool
}

// Parser follows one connection. It is not safe for concurrent use: the
// layer feeds a connection's records in order from one goroutine.
type Parser struct {
	lim  Limits
	emit func(*Exchange)
	dirs [2]reader
	// streams pairs each request with its response by stream id, bounded
	// by MaxStreams; its values are recycled, buffers included.
	streams *l7.ByID[uint32, stream]
	// maxClientID is the highest client stream id seen: a HEADERS on a
	// lower id is never a new request.
	maxClientID uint32
	// countGap: the client direction lost bytes, so the client stream ids
	// skipped before the next new stream were requests never seen.
	countGap bool
	now      Times
	ex       Exchange
	stats    Stats
	joined   bool // ParserConfig.Joined
}

// NewParser returns a parser for one connection.
func NewParser(cfg ParserConfig) *Parser {
	p := &Parser{
		lim:     cfg.Limits.withDefaults(),
		emit:    cfg.Emit,
		streams: l7.NewByID[uint32, stream](cfg.Limits.withDefaults().MaxStreams),
		joined:  cfg.Joined,
	}
	for d := range p.dirs {
		r := &p.dirs[d]
		r.p = p
		r.dir = Dir(d)
		r.maxFrame = initialMaxFrame
		r.allowedTable = initialHeaderTable
		r.pendingTable = -1
	}
	return p
}

// Stats returns the parser's counters.
func (p *Parser) Stats() Stats { return p.stats }

// Feed hands the parser one captured call of direction dir: data are the
// bytes captured, total the call's full length (total > len(data) when the
// capture kept only a prefix).
func (p *Parser) Feed(dir Dir, data []byte, total uint64, t Times) {
	p.FeedSegs(dir, data, nil, total, t)
}

// FeedSegs is Feed for a call of which the capture kept, past the prefix
// data, the segments segs (each at its offset in the call): the bytes
// between them count as missing, as the bytes after the prefix do in Feed.
func (p *Parser) FeedSegs(dir Dir, data []byte, segs l7.Segs, total uint64, t Times) {
	if dir > FromServer {
		return
	}
	if total < uint64(len(data)) {
		total = uint64(len(data))
	}
	callEnd := total
	p.now = t
	r := &p.dirs[dir]
	if !r.started && p.joined {
		r.join()
	}
	if !r.started {
		if dir == FromServer && r.hn+len(data) < frameHeaderLen && total == uint64(len(data)) &&
			!(p.dirs[FromClient].started && !p.dirs[FromClient].joined) {
			// Too few bytes to tell a server preface: keep them until a
			// frame header's worth arrived.
			r.hn += copy(r.hdr[r.hn:], data)
			return
		}
		r.started = true
		probed := r.hn > 0
		if probed {
			n := copy(r.hdr[r.hn:], data)
			data, total, r.hn = data[n:], total-uint64(n), frameHeaderLen
		}
		switch {
		case dir == FromClient && isPrefacePrefix(data):
			r.ph = phPreface
			r.dec = r.newDecoder(true)
		case dir == FromServer && p.dirs[FromClient].started && !p.dirs[FromClient].joined,
			dir == FromServer && probed && isServerPreface(r.hdr[:]),
			dir == FromServer && !probed && isServerPreface(data) && r.plausible(data):
			// The client's preface was seen, or the server's connection
			// preface (a SETTINGS frame) starts this call.
			r.ph = phHeader
			r.dec = r.newDecoder(true)
			if probed {
				r.headerDone()
			}
		default:
			// Joining mid-connection (or a server whose first bytes could
			// be anywhere): find a frame boundary as after a loss.
			r.join()
			if probed {
				r.hn = 0
				p.stats.SkippedBytes += total + uint64(len(data))
				return // the next call boundary is the first safe one
			}
		}
	}
	if r.ph == phDesync {
		if !r.plausible(data) {
			p.stats.SkippedBytes += total
			return
		}
		r.resync()
	}
	r.consume(data)
	// pos: where the bytes consumed end in the call
	pos := callEnd - total + uint64(len(data))
	for {
		off, b, rest, ok := segs.Next()
		if !ok {
			break
		}
		segs = rest
		end := off + uint64(len(b))
		if end <= pos || end > callEnd {
			continue // not after what was consumed, or past the call: not the kernel's
		}
		if off < pos {
			b = b[pos-off:]
		} else if off > pos {
			r.skip(off - pos)
		}
		r.consume(b)
		pos = end
	}
	if missing := callEnd - pos; missing > 0 {
		r.skip(missing)
	}
}

// join starts a direction whose beginning was not seen: no frame boundary
// is known, and the decoder's table starts empty.
func (r *reader) join() {
	r.started, r.joined, r.ph = true, true, phDesync
	r.p.stats.Joined++
	r.dec = r.newDecoder(false)
}

// Lost tells the parser that records of this connection were lost (e.g. a
// full ring): both directions are desynchronised until a safe boundary.
func (p *Parser) Lost() {
	p.LostDir(FromClient)
	p.LostDir(FromServer)
}

// LostDir tells the parser that records of direction dir were lost: that
// direction is desynchronised until a safe boundary (its HPACK table is
// emptied) and every open stream is abandoned; the other direction keeps
// its frame boundaries and its table.
func (p *Parser) LostDir(dir Dir) {
	if dir > FromServer {
		return
	}
	r := &p.dirs[dir]
	switch {
	case r.started && r.ph != phDesync:
		r.desync()
	case !r.started && r.hn > 0:
		// Bytes kept to recognise a server preface no longer continue
		// into the next call.
		r.hn = 0
		r.join()
	}
}

// Close ends the connection: streams still open are counted as unfinished.
func (p *Parser) Close() {
	p.stats.Unfinished += uint64(p.dropAll())
}

// abandonAll drops every open stream after a loss: any of them may have
// lost a frame.
func (p *Parser) abandonAll() {
	p.stats.Lost += uint64(p.dropAll())
}

// dropAll forgets every open stream and returns how many there were.
func (p *Parser) dropAll() int {
	n := p.streams.Len()
	if n > 0 {
		p.streams.Each(func(_ uint32, st *stream) { p.detach(st) })
		p.streams.Clear()
	}
	return n
}

// newDecoder returns a decoder for this direction. fromStart says the
// encoder's table is known to be empty; otherwise it may be as large as
// anything the encoder was allowed, and a decoder table larger than the
// encoder's is safe (entries are indexed newest first, so the entries both
// hold have the same indices; older ones fail as invalid indices).
func (r *reader) newDecoder(fromStart bool) *hpack.Decoder {
	capSize := r.p.lim.MaxHeaderTable
	size, allowed := min(r.allowedTable, capSize), min(r.allowedTable, capSize)
	if !fromStart {
		size = capSize
	}
	if r.joined {
		// The peer's SETTINGS were not seen: allow what the agent allows.
		allowed = capSize
	}
	d := hpack.NewDecoder(size, r.onField)
	d.SetMaxStringLength(r.p.lim.MaxHeaderString)
	d.SetAllowedMaxDynamicTableSize(allowed)
	return d
}

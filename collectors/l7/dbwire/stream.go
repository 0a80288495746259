// Package dbwire cuts one direction of a length-prefixed database protocol
// (PostgreSQL's messages, MySQL's packets) into messages, from records
// captured as a head and a tail of each call. A message's header and the
// first bytes of its body that the protocol asks for are handed over whole,
// even when they span records; the rest of a long body is skipped by its
// length, across the bytes the capture left out. When a header itself falls
// in what was left out, the direction is out of step until a record starts
// on a message boundary again, and the protocol may look for its
// terminator in the record's tail.
package dbwire

// Framing is the protocol half of a Stream.
type Framing interface {
	// Header returns the length of the message header (it may change
	// with the connection's phase).
	HeaderLen() int
	// BodyLen returns the length of the body that follows hdr, and how
	// many of its first bytes the protocol wants; ok is false when hdr
	// cannot be a header (the stream is out of step).
	BodyLen(hdr []byte) (n int, keep int, ok bool)
	// Message is one message: its header and the first keep bytes of its
	// body (fewer when the capture left the rest out: cut is set), start
	// the entry of the call that carried its first byte, end the return of
	// the call that carried its last kept byte.
	Message(hdr, body []byte, cut bool, start, end uint64)
}

// MaxKeep bounds the bytes of a body a Framing may keep.
const MaxKeep = 4096

// maxHeader bounds header lengths.
const maxHeader = 8

// Stream is one direction's framing state. The zero value is at a message
// boundary.
type Stream struct {
	buf       [maxHeader + MaxKeep]byte
	nbuf      int   // bytes in buf: header, then kept body
	hlen      int   // header length of the message in buf (0: none begun)
	keep      int   // body bytes to keep
	skip      int64 // body bytes still to pass over after the kept ones
	start     uint64
	outOfSync bool
}

// InStep reports whether the stream knows where the next message begins.
func (s *Stream) InStep() bool { return !s.outOfSync }

// AtBoundary reports whether the last record ended where a message ends.
func (s *Stream) AtBoundary() bool { return !s.outOfSync && s.hlen == 0 && s.skip == 0 }

// Reset forgets any partial message and waits for a record that begins on
// a message boundary.
func (s *Stream) Reset() {
	s.nbuf, s.hlen, s.keep, s.skip = 0, 0, 0, 0
	s.outOfSync = true
}

// Feed takes one record: head is its first bytes, tail its last bytes,
// total the bytes the call moved. It returns false when the stream fell out
// of step inside this record (the caller may scan tail for a terminator).
func (s *Stream) Feed(f Framing, head, tail []byte, total uint64, start, end uint64) bool {
	if s.outOfSync {
		// a new call: assume it begins a message, as writers of these
		// protocols send whole messages per call
		s.outOfSync = false
		s.nbuf, s.hlen, s.keep, s.skip = 0, 0, 0, 0
	}
	gap := int64(total) - int64(len(head)) - int64(len(tail))
	if gap < 0 {
		tail, gap = nil, 0
	}
	if !s.feed(f, head, start, end) {
		return false
	}
	if gap > 0 {
		if s.hlen > 0 {
			if s.nbuf < s.hlen {
				// a header in the bytes left out
				s.Reset()
				return false
			}
			// the kept body goes on into the left-out bytes: what we have
			rest := int64(s.hlen+s.keep-s.nbuf) + s.skip
			s.deliver(f, true, end)
			s.skip = rest
		}
		if s.skip < gap {
			s.Reset()
			return false
		}
		s.skip -= gap
	}
	if len(tail) > 0 && !s.feed(f, tail, start, end) {
		return false
	}
	return true
}

func (s *Stream) feed(f Framing, p []byte, start, end uint64) bool {
	for len(p) > 0 {
		if s.skip > 0 {
			n := min(s.skip, int64(len(p)))
			s.skip -= n
			p = p[n:]
			continue
		}
		if s.hlen == 0 {
			s.hlen = f.HeaderLen()
			s.nbuf = 0
			s.start = start
		}
		if s.nbuf < s.hlen {
			n := copy(s.buf[s.nbuf:s.hlen], p)
			s.nbuf += n
			p = p[n:]
			if s.nbuf < s.hlen {
				return true
			}
			bl, keep, ok := f.BodyLen(s.buf[:s.hlen])
			if !ok || bl < 0 {
				s.Reset()
				return false
			}
			keep = min(keep, bl, MaxKeep)
			s.keep = max(keep, 0)
			s.skip = int64(bl - s.keep)
		}
		if s.nbuf < s.hlen+s.keep {
			n := copy(s.buf[s.nbuf:s.hlen+s.keep], p)
			s.nbuf += n
			p = p[n:]
			if s.nbuf < s.hlen+s.keep {
				return true
			}
		}
		s.deliver(f, false, end)
	}
	return true
}

// deliver hands the message in buf over and starts the next (its skipped
// body bytes, if any, are still to come).
func (s *Stream) deliver(f Framing, cut bool, end uint64) {
	hl := s.hlen
	n := s.nbuf
	s.hlen, s.nbuf, s.keep = 0, 0, 0
	f.Message(s.buf[:hl], s.buf[hl:n], cut, s.start, end)
}

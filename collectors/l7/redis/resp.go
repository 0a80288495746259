package redis

import "bytes"

// The RESP scanner walks one direction of a connection, a captured chunk at
// a time, and stops at the end of every top-level value (a command, a reply
// or a push). It keeps no value beyond the few leaves a parser needs to name
// the operation (the command and its first arguments, an error's prefix, a
// push's kind), each cut at leafMax bytes, so a key or a value never leaves
// it whole. Bulk payloads are skipped by their declared length, which is what
// lets a head-and-tail capture lose the middle of a large value without
// losing its place.

const (
	// maxDepth bounds aggregate nesting (replies of XREAD, COMMAND DOCS and
	// CLUSTER SLOTS stay well below it).
	maxDepth = 16
	// leafMax is what is kept of a leaf: enough for any command name and
	// error prefix.
	leafMax = 32
	// maxLeaves is how many leaves of a top-level aggregate are kept: the
	// command and two arguments (SELECT's index, CLIENT REPLY's mode), or a
	// push's kind, channel and count.
	maxLeaves = 3
	// maxLine bounds a line without its end (Redis' own inline limit is
	// 64 KiB); past it the direction is malformed.
	maxLine = 64 << 10
	// maxLen bounds a declared bulk length or aggregate count.
	maxLen = 1 << 32
)

// leaf is the start of one simple value: a bulk string's payload or a line's
// content after its type byte.
type leaf struct {
	b    [leafMax]byte
	n    uint8
	kind byte // the RESP type byte
	cut  bool // longer than leafMax
}

func (l *leaf) bytes() []byte { return l.b[:l.n] }

func (l *leaf) add(p []byte) {
	if m := copy(l.b[l.n:], p); m < len(p) {
		l.cut = true
		l.n += uint8(m)
	} else {
		l.n += uint8(m)
	}
}

// message is what the scanner keeps of one top-level value.
type message struct {
	// Kind is the top-level type byte ('*', '>', '-', '+', ...), or 'i' for
	// an inline command (a request line that is not an array).
	Kind byte
	// Count is the top-level aggregate's element count (-1: null).
	Count int64
	// Leaves are the first leaves at depth one of an aggregate (or the
	// value itself, in Leaves[0], when it is not an aggregate; an inline
	// command's words).
	Leaves  [maxLeaves]leaf
	NLeaves int
	// Size is the bytes the value took on the wire, gaps included.
	Size int64
}

type level struct {
	left int64 // elements still to come
	attr bool  // a RESP3 attribute: it precedes a value and is not one
}

type scanner struct {
	stack [maxDepth]level
	depth int
	// skip is what is left of a bulk payload and its CRLF; payload is
	// what is left of the payload alone (the part worth keeping).
	skip, payload int64
	cur           *leaf // the leaf a bulk payload is kept in, or nil
	line          [leafMax + 2]byte
	lineN         int
	lineLen       int
	inMsg         bool
	inline        bool // the request direction: a non-array line is an inline command
	msg           message
}

func (s *scanner) reset() {
	inline := s.inline
	*s = scanner{inline: inline}
}

// feed consumes b up to the end of the next complete top-level value. It
// returns how many bytes it used, whether a value ended there (then s.msg
// holds it until the next feed), and whether b broke the protocol.
func (s *scanner) feed(b []byte) (n int, done, bad bool) {
	for n < len(b) {
		if !s.inMsg {
			s.inMsg = true
			s.msg = message{}
		}
		if s.skip > 0 {
			k := int64(len(b) - n)
			if k > s.skip {
				k = s.skip
			}
			if s.payload > 0 && s.cur != nil {
				p := k
				if p > s.payload {
					p = s.payload
				}
				s.cur.add(b[n : n+int(p)])
			}
			s.payload -= min(k, s.payload)
			s.skip -= k
			s.msg.Size += k
			n += int(k)
			if s.skip == 0 {
				s.cur = nil
				if s.valueDone() {
					return n, true, false
				}
			}
			continue
		}
		i := bytes.IndexByte(b[n:], '\n')
		if i < 0 {
			s.addLine(b[n:])
			s.msg.Size += int64(len(b) - n)
			if s.lineLen > maxLine {
				return len(b), false, true
			}
			return len(b), false, false
		}
		s.addLine(b[n : n+i+1])
		s.msg.Size += int64(i + 1)
		n += i + 1
		end, ok := s.lineDone()
		if !ok {
			return n, false, true
		}
		if end {
			return n, true, false
		}
	}
	return n, false, false
}

// gap consumes n bytes the capture did not keep. Only a bulk payload can be
// skipped without seeing it; anything else loses the direction's place.
func (s *scanner) gap(n int64) (done, bad bool) {
	if n <= 0 {
		return false, false
	}
	if s.skip < n {
		return false, true
	}
	if s.cur != nil && s.payload > 0 {
		s.cur.cut = true
	}
	s.skip -= n
	s.payload -= min(n, s.payload)
	s.msg.Size += n
	if s.skip == 0 {
		s.cur = nil
		return s.valueDone(), false
	}
	return false, false
}

func (s *scanner) addLine(p []byte) {
	if s.lineN < len(s.line) {
		s.lineN += copy(s.line[s.lineN:], p)
	}
	s.lineLen += len(p)
}

// lineDone handles one complete line (in s.line, cut at its buffer). It
// reports whether a top-level value ended and whether the line was valid.
func (s *scanner) lineDone() (end, ok bool) {
	ln, full := s.line[:s.lineN], s.lineLen
	s.lineN, s.lineLen = 0, 0
	// The line without its CRLF; cut marks content past the buffer.
	cut := full > len(ln)
	if !cut {
		if len(ln) < 2 || ln[len(ln)-2] != '\r' {
			return false, false
		}
		ln = ln[:len(ln)-2]
	}
	if len(ln) == 0 {
		if s.depth == 0 && s.inline {
			// An empty inline line: Redis ignores it.
			s.inMsg = false
			return false, true
		}
		return false, false
	}
	t := ln[0]
	if s.depth == 0 && s.inline && t != '*' {
		s.msg.Kind = 'i'
		s.inlineWords(ln, cut)
		return true, true
	}
	body := ln[1:]
	if s.depth == 0 {
		s.msg.Kind = t
	}
	switch t {
	case '+', '-', ':', '_', ',', '#', '(':
		if l := s.leafAt(); l != nil {
			l.kind = t
			l.add(body)
			if cut {
				l.cut = true
			}
		}
		return s.valueDone(), true
	case '$', '!', '=':
		if cut {
			return false, false
		}
		v, ok := parseLen(body)
		if !ok {
			return false, false
		}
		l := s.leafAt()
		if l != nil {
			l.kind = t
		}
		if v < 0 { // a RESP2 null bulk string
			return s.valueDone(), true
		}
		s.skip, s.payload, s.cur = v+2, v, l
		return false, true
	case '*', '%', '~', '>', '|':
		if cut {
			return false, false
		}
		v, ok := parseLen(body)
		if !ok {
			return false, false
		}
		if t == '%' || t == '|' {
			v *= 2
		}
		if s.depth == 0 {
			s.msg.Count = v
		} else if l := s.leafAt(); l != nil {
			l.kind = t // an aggregate where a leaf was expected: kept as its type only
		}
		if v <= 0 {
			if t == '|' {
				return false, true
			}
			return s.valueDone(), true
		}
		if s.depth == maxDepth {
			return false, false
		}
		s.stack[s.depth] = level{left: v, attr: t == '|'}
		s.depth++
		return false, true
	}
	return false, false
}

// leafAt returns where the value starting now is kept: the value itself at
// the top, the first leaves of a top-level aggregate, else nowhere.
func (s *scanner) leafAt() *leaf {
	switch s.depth {
	case 0:
		s.msg.NLeaves = 1
		return &s.msg.Leaves[0]
	case 1:
		if s.stack[0].attr {
			return nil
		}
		i := int(s.msg.Count - s.stack[0].left)
		if i >= 0 && i < maxLeaves {
			s.msg.NLeaves = i + 1
			return &s.msg.Leaves[i]
		}
	}
	return nil
}

// valueDone closes the value that just ended and every aggregate it
// completes; it reports whether that was the top-level value.
func (s *scanner) valueDone() bool {
	for s.depth > 0 {
		top := &s.stack[s.depth-1]
		top.left--
		if top.left > 0 {
			return false
		}
		s.depth--
		if top.attr {
			// An attribute ends; the value it annotates is still to come.
			if s.depth == 0 {
				s.msg.Count, s.msg.NLeaves = 0, 0
				s.msg.Leaves = [maxLeaves]leaf{}
			}
			return false
		}
	}
	s.inMsg = false
	return true
}

func (s *scanner) inlineWords(ln []byte, cut bool) {
	for s.msg.NLeaves < maxLeaves {
		for len(ln) > 0 && (ln[0] == ' ' || ln[0] == '\t') {
			ln = ln[1:]
		}
		if len(ln) == 0 {
			break
		}
		j := bytes.IndexAny(ln, " \t")
		w := ln
		if j >= 0 {
			w = ln[:j]
		}
		l := &s.msg.Leaves[s.msg.NLeaves]
		l.kind = '+'
		l.add(w)
		if j < 0 && cut {
			l.cut = true
		}
		s.msg.NLeaves++
		ln = ln[len(w):]
	}
	s.inMsg = false
}

func parseLen(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
		if v > maxLen {
			return 0, false
		}
	}
	if neg {
		if v != 1 {
			return 0, false
		}
		return -1, true
	}
	return v, true
}

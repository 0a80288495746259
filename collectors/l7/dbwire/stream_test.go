package dbwire

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// typed is a PostgreSQL-like framing: a type byte, a 4-byte length that
// counts itself, the first 8 body bytes kept.
type typed struct{ got []string }

func (f *typed) HeaderLen() int { return 5 }
func (f *typed) BodyLen(h []byte) (int, int, bool) {
	n := int(binary.BigEndian.Uint32(h[1:])) - 4
	return n, 8, n >= 0 && h[0] >= 'A' && h[0] <= 'Z'
}
func (f *typed) Message(h, body []byte, cut bool, start, end uint64) {
	f.got = append(f.got, fmt.Sprintf("%c%q%v@%d", h[0], body, cut, start))
}

func msg(t byte, body string) []byte {
	b := []byte{t, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

func TestStream(t *testing.T) {
	stream := string(msg('Q', "SELECT 1")) + string(msg('S', "")) + string(msg('D', strings.Repeat("x", 100))) + string(msg('Z', "I"))
	whole := &typed{}
	var s Stream
	s.Feed(whole, []byte(stream), nil, uint64(len(stream)), 1, 2)
	want := `Q"SELECT 1"false@1 S""false@1 D"xxxxxxxx"false@1 Z"I"false@1`
	if g := strings.Join(whole.got, " "); g != want {
		t.Fatalf("whole: %s", g)
	}
	// every split into two calls: the same messages, each started in the
	// call that carried its first byte
	for i := 1; i < len(stream); i++ {
		f := &typed{}
		var s Stream
		s.Feed(f, []byte(stream[:i]), nil, uint64(i), 1, 2)
		s.Feed(f, []byte(stream[i:]), nil, uint64(len(stream)-i), 3, 4)
		g := strings.Join(f.got, " ")
		if strings.ReplaceAll(g, "@3", "@1") != want || !s.AtBoundary() {
			t.Fatalf("split at %d: %s", i, g)
		}
	}
	// a head and a tail of one call: the long row is skipped across the
	// left-out bytes and the last message still comes
	f := &typed{}
	var h Stream
	b := []byte(stream)
	head, tail := b[:30], b[len(b)-6:]
	if !h.Feed(f, head, tail, uint64(len(b)), 1, 2) || !h.AtBoundary() {
		t.Fatalf("head and tail: out of step")
	}
	// the row's kept bytes stop in the left-out ones: handed over cut
	if g := strings.Join(f.got, " "); g != `Q"SELECT 1"false@1 S""false@1 D"xxxxxxx"true@1 Z"I"false@1` {
		t.Fatalf("head and tail: %s", g)
	}
	// a header in the left-out bytes: out of step, and the next call is
	// taken to begin a message
	f = &typed{}
	var o Stream
	if o.Feed(f, b[:20], b[len(b)-6:], uint64(len(b))+200, 1, 2) {
		t.Fatalf("a header in the gap went unnoticed: %v", f.got)
	}
	o.Feed(f, msg('Z', "T"), nil, 6, 3, 4)
	if g := f.got[len(f.got)-1]; g != `Z"T"false@3` {
		t.Fatalf("after resync: %v", f.got)
	}
}

// FuzzStream: however a stream of messages is cut into calls, the same
// messages come out; with heads and tails cut off, nothing panics and
// nothing longer than the framing keeps is delivered.
func FuzzStream(f *testing.F) {
	f.Add([]byte("QSELECT\x00Z"), []byte{3, 1, 7}, uint8(0))
	f.Fuzz(func(t *testing.T, spec, cuts []byte, head uint8) {
		var stream []byte
		for i := 0; i+1 < len(spec); i += 2 {
			stream = append(stream, msg('A'+spec[i]%26, strings.Repeat("b", int(spec[i+1]%40)))...)
		}
		whole := &typed{}
		var s Stream
		s.Feed(whole, stream, nil, uint64(len(stream)), 0, 0)
		parts := &typed{}
		var p Stream
		rest := stream
		for _, c := range cuts {
			n := min(int(c)%17+1, len(rest))
			p.Feed(parts, rest[:n], nil, uint64(n), 0, 0)
			rest = rest[n:]
		}
		p.Feed(parts, rest, nil, uint64(len(rest)), 0, 0)
		if strings.Join(whole.got, " ") != strings.Join(parts.got, " ") {
			t.Fatalf("whole %v, in parts %v", whole.got, parts.got)
		}
		if h := int(head); h > 0 && len(stream) > h {
			var c Stream
			cut := &typed{}
			c.Feed(cut, stream[:h], stream[len(stream)-min(8, len(stream)-h):], uint64(len(stream)), 0, 0)
			if len(cut.got) > len(whole.got)+1 {
				t.Fatalf("more messages from a cut call (%d) than the stream has (%d)", len(cut.got), len(whole.got))
			}
		}
	})
}

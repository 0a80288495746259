package l7

import (
	"encoding/binary"
	"testing"
)

func seg(off uint32, b ...byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, off)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(b)))
	return append(out, b...)
}

func TestSegsNext(t *testing.T) {
	s := Segs(append(seg(4096, 1, 2, 3), seg(5000)...))
	off, b, rest, ok := s.Next()
	if !ok || off != 4096 || string(b) != "\x01\x02\x03" {
		t.Fatalf("first: %d %v %v", off, b, ok)
	}
	off, b, rest, ok = rest.Next()
	if !ok || off != 5000 || len(b) != 0 || len(rest) != 0 {
		t.Fatalf("second: %d %v %v %v", off, b, rest, ok)
	}
	if _, _, _, ok := rest.Next(); ok {
		t.Fatal("past the end")
	}
	// a length past the record
	if _, _, _, ok := Segs(seg(1, 1, 2, 3)[:8]).Next(); ok {
		t.Fatal("truncated segment accepted")
	}
}

// FuzzSegs: any bytes decode to segments within them, or stop.
func FuzzSegs(f *testing.F) {
	f.Add(append(seg(4096, 1, 2, 3), seg(5000)...))
	f.Add([]byte{1, 2, 3, 4, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := Segs(data)
		used := 0
		for {
			_, b, rest, ok := s.Next()
			if !ok {
				break
			}
			used += SegHdr + len(b)
			if len(rest) != len(data)-used || cap(b) != len(b) {
				t.Fatalf("segment of %d bytes, %d left of %d", len(b), len(rest), len(data))
			}
			s = rest
		}
	})
}

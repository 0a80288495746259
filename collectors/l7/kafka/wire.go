package kafka

import "encoding/binary"

// Every Kafka message is a frame: a 4-byte length, then the header and the
// body. A frame is assembled from the records that carried it as a list of
// the parts the capture kept (each record's head and tail) at their offsets
// in the frame; the gaps between them are known by length only. Fields are
// then read through a cursor that reports whether they were kept, and
// skips length-prefixed parts (record data) without needing them.

const (
	// maxFrame bounds a frame's declared length (Kafka's default
	// socket.request.max.bytes is 100 MiB).
	maxFrame = 1 << 28
	// maxKept bounds what is kept of one frame: every record's head of a
	// 1 MiB fetch response read in 64 KiB calls fits.
	maxKept = 128 << 10
	maxSegs = 64
)

type seg struct {
	off   int64 // offset in the frame
	start int   // index in the frame buffer
	n     int
}

// frame assembles one direction's current frame.
type frame struct {
	size      [4]byte
	sizeN     int
	length    int64 // the frame's declared length (after the size)
	got       int64 // bytes of the frame seen or skipped so far
	buf       []byte
	segs      [maxSegs]seg
	nseg      int
	start     uint64 // Start of the record the frame began in
	inFrame   bool
	truncated bool // parts were not kept (maxKept, maxSegs)
}

func (f *frame) reset() {
	buf := f.buf[:0]
	*f = frame{buf: buf}
}

// keep records the frame bytes b at the frame's current offset.
func (f *frame) keep(b []byte) {
	if len(b) == 0 {
		return
	}
	if len(f.buf)+len(b) > maxKept {
		f.truncated = true
		return
	}
	if f.nseg > 0 {
		if s := &f.segs[f.nseg-1]; s.off+int64(s.n) == f.got && s.start+s.n == len(f.buf) {
			f.buf = append(f.buf, b...)
			s.n += len(b)
			return
		}
	}
	if f.nseg == maxSegs {
		f.truncated = true
		return
	}
	f.segs[f.nseg] = seg{off: f.got, start: len(f.buf), n: len(b)}
	f.nseg++
	f.buf = append(f.buf, b...)
}

// cursor reads a frame's fields. A read of bytes that were not kept, or past
// the frame, sets missing (or bad) and returns zero values; callers check
// once at the points where a result is used.
type cursor struct {
	f       *frame
	off     int64
	missing bool // a field was in a part the capture did not keep
	bad     bool // the frame does not parse
}

func (c *cursor) ok() bool { return !c.missing && !c.bad }

// take returns the n bytes at the cursor, or nil.
func (c *cursor) take(n int) []byte {
	if n < 0 || c.off+int64(n) > c.f.length {
		c.bad = true
		return nil
	}
	if c.missing || c.bad {
		c.off += int64(n)
		return nil
	}
	for i := 0; i < c.f.nseg; i++ {
		s := &c.f.segs[i]
		if c.off >= s.off && c.off+int64(n) <= s.off+int64(s.n) {
			b := c.f.buf[s.start+int(c.off-s.off):][:n]
			c.off += int64(n)
			return b
		}
	}
	c.missing = true
	c.off += int64(n)
	return nil
}

func (c *cursor) skip(n int64) {
	if n < 0 || c.off+n > c.f.length {
		c.bad = true
		return
	}
	c.off += n
}

func (c *cursor) i8() int8 {
	if b := c.take(1); b != nil {
		return int8(b[0])
	}
	return 0
}

func (c *cursor) i16() int16 {
	if b := c.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (c *cursor) i32() int32 {
	if b := c.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (c *cursor) uvarint() uint64 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		b := c.take(1)
		if b == nil {
			return 0
		}
		v |= uint64(b[0]&0x7f) << shift
		if b[0] < 0x80 {
			return v
		}
	}
	c.bad = true
	return 0
}

// length reads a string, bytes or array length: int16/int32 when not
// flexible (wide: int32), uvarint+1 when flexible; -1 is null.
func (c *cursor) length(flex, wide bool) int64 {
	if flex {
		return int64(c.uvarint()) - 1
	}
	if wide {
		return int64(c.i32())
	}
	return int64(c.i16())
}

// str returns a string field's bytes (nil when null or not kept).
func (c *cursor) str(flex bool) []byte {
	n := c.length(flex, false)
	if n < 0 {
		return nil
	}
	return c.take(int(n))
}

func (c *cursor) skipStr(flex bool) {
	if n := c.length(flex, false); n > 0 {
		c.skip(n)
	}
}

// array returns an array's element count (0 for null), bounded by what the
// frame could hold.
func (c *cursor) array(flex bool) int {
	n := c.length(flex, true)
	if n < 0 {
		return 0
	}
	if n > c.f.length-c.off {
		c.bad = true
		return 0
	}
	return int(n)
}

// tags skips a flexible version's tagged fields.
func (c *cursor) tags(flex bool) {
	if !flex {
		return
	}
	n := c.uvarint()
	for i := uint64(0); i < n && c.ok(); i++ {
		c.uvarint()
		c.skip(int64(c.uvarint()))
	}
}

// batches counts the records of the record batches in the next n bytes
// (magic 2; control batches hold no messages; a batch cut at the end of a
// fetch is not delivered and not counted). It reports whether every batch
// header was kept.
func (c *cursor) batches(n int64) (records int64, complete bool) {
	end := c.off + n
	complete = true
	for c.off+61 <= end && !c.bad {
		c.missing = false
		c.skip(8) // base offset
		blen := int64(c.i32())
		if c.missing {
			complete = false
			break
		}
		next := c.off + blen
		if blen < 49 {
			c.bad = true
			break
		}
		if next > end {
			break // a partial batch at the end of a fetch
		}
		c.skip(4) // partition leader epoch
		magic := c.i8()
		c.skip(4) // crc
		attrs := c.i16()
		c.skip(4 + 8 + 8 + 8 + 2 + 4) // last offset delta, timestamps, producer id and epoch, base sequence
		count := c.i32()
		if c.missing {
			complete = false
		} else if magic == 2 && attrs&0x20 == 0 && count > 0 {
			records += int64(count)
		}
		c.off = next
	}
	c.missing = false
	if !c.bad {
		c.off = end
	}
	return records, complete
}

package capture

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// fakeRing is a ring buffer's memory as the kernel lays it out: positions
// that only grow, the data pages twice in a row (a record may wrap), each
// record an 8-byte header (length with the busy and discard bits) and its
// bytes padded to 8.
type fakeRing struct {
	r          ring
	cons, prod uintptr
	size       uintptr
}

func newFakeRing(size uintptr) *fakeRing {
	f := &fakeRing{size: size}
	f.r = ring{data: make([]byte, 2*size), mask: size - 1, size: size, cons: &f.cons, prod: &f.prod}
	return f
}

// put writes one record at the producer position (flags: the header's
// busy/discard bits) and returns its position.
func (f *fakeRing) put(b []byte, flags uint32) uintptr {
	at := f.prod
	var hdr [ringHdrSize]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(b))|flags)
	f.write(at, hdr[:])
	f.write(at+ringHdrSize, b)
	f.prod = at + ringHdrSize + (uintptr(len(b))+7)&^7
	return at
}

func (f *fakeRing) write(at uintptr, b []byte) {
	for i, c := range b {
		p := (at + uintptr(i)) & f.r.mask
		f.r.data[p], f.r.data[p+f.size] = c, c
	}
}

func (f *fakeRing) setFlags(at uintptr, flags uint32) {
	var hdr [4]byte
	copy(hdr[:], f.r.data[at&f.r.mask:])
	n := binary.LittleEndian.Uint32(hdr[:]) &^ (ringBusyBit | ringDiscardBit)
	binary.LittleEndian.PutUint32(hdr[:], n|flags)
	f.write(at, hdr[:])
}

func record(i int) []byte {
	return bytes.Repeat([]byte{byte(i)}, 1+i*37%300)
}

// TestRingConsume feeds records of every padding through a small ring many
// times round (so they wrap) and checks each is handed over once, whole and
// in order, discarded ones skipped, and the consumer position published.
func TestRingConsume(t *testing.T) {
	f := newFakeRing(4096)
	var got [][]byte
	fn := func(b []byte) { got = append(got, append([]byte(nil), b...)) }
	next := 0
	for round := 0; round < 200; round++ {
		var want [][]byte
		for f.size-(f.prod-f.cons) > 400 {
			b := record(next)
			if next%7 == 3 {
				f.put(b, ringDiscardBit)
			} else {
				f.put(b, 0)
				want = append(want, b)
			}
			next++
		}
		got = got[:0]
		n, err := f.r.consume(fn)
		if err != nil {
			t.Fatal(err)
		}
		if n != len(want) || len(got) != len(want) {
			t.Fatalf("round %d: %d records handed over (%d calls), want %d", round, n, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("round %d record %d: got %d bytes %x..., want %d bytes %x...", round, i, len(got[i]), got[i][:1], len(want[i]), want[i][:1])
			}
		}
		if f.cons != f.prod {
			t.Fatalf("round %d: consumer at %d, producer at %d", round, f.cons, f.prod)
		}
	}
	if f.prod < 100*f.size {
		t.Fatalf("the records went round the ring only %d times", f.prod/f.size)
	}
}

// TestRingConsumeBusy: a record still being written stops the batch there
// (what follows it waits, in order), with what was read before it
// published; once committed, it and the rest come.
func TestRingConsumeBusy(t *testing.T) {
	f := newFakeRing(4096)
	f.put(record(1), 0)
	busy := f.put(record(2), ringBusyBit)
	f.put(record(3), 0)
	var got []int
	fn := func(b []byte) { got = append(got, int(b[0])) }
	n, err := f.r.consume(fn)
	if err != nil || n != 1 || fmt.Sprint(got) != "[1]" {
		t.Fatalf("with record 2 busy: %d records %v, %v; want [1]", n, got, err)
	}
	if f.cons != busy {
		t.Fatalf("consumer at %d, want %d (the busy record's)", f.cons, busy)
	}
	f.setFlags(busy, 0)
	if n, err = f.r.consume(fn); err != nil || n != 2 || fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("committed: %d records, %v, %v; want [1 2 3]", n, got, err)
	}
}

// TestRingConsumeCorrupt: a length past what the producer wrote is an
// error, not a read out of the ring.
func TestRingConsumeCorrupt(t *testing.T) {
	f := newFakeRing(4096)
	at := f.put(record(1), 0)
	f.write(at, []byte{0xff, 0x0f, 0, 0})
	if n, err := f.r.consume(func([]byte) {}); err == nil {
		t.Fatalf("a 4095-byte record in 16 written: %d records, no error", n)
	}
}

// TestRingConsumeBounded: a producer that keeps up with the reader does not
// keep one call for ever: a call reads at most a ring's worth.
func TestRingConsumeBounded(t *testing.T) {
	f := newFakeRing(4096)
	calls := 0
	fn := func(b []byte) {
		calls++
		f.put(b, 0) // another record for each one read
	}
	f.put(record(5), 0)
	n, err := f.r.consume(fn)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || uintptr(n)*uintptr(ringHdrSize+len(record(5))) > f.size+ringHdrSize+256 {
		t.Fatalf("%d records in one call on a %d-byte ring", n, f.size)
	}
}

func BenchmarkRingConsume(b *testing.B) {
	f := newFakeRing(1 << 20)
	rec := make([]byte, 272)
	var r Record
	b.ReportAllocs()
	for b.Loop() {
		for f.size-(f.prod-f.cons) > 1024 {
			f.put(rec, 0)
		}
		f.r.consume(func(b []byte) { r.Data = b })
	}
}

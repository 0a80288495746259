package http2

import (
	"encoding/binary"
	"maps"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/otelbee/otelbee/collectors/l7"
)

// kernelWalk is the kernel's HTTP/2 capture policy (bpf/l7/http2.h
// capture_h2) in Go, to give the parser records shaped as the kernel makes
// them: the call's prefix, then, past it, every frame header and every
// payload but DATA's as segments, within the record's bound.
type kernelWalk struct {
	prefix int // the prefix kept (the kernel's MAX_CAPTURE)
	dirs   [2]walkDir
}

type walkDir struct {
	known      bool
	next, copy uint64
	hdr        []byte // a header cut by the last call's end
}

// segEnd is where the kernel's segments end (H2_SEG_END).
const segEnd = 8191

func (k *kernelWalk) record(dir Dir, call []byte) (data []byte, segs l7.Segs) {
	d := &k.dirs[dir]
	captured := min(len(call), k.prefix)
	data = call[:captured]
	var out []byte
	lastEnd := -1 // call offset where the last segment ends
	lastDesc := -1
	seg := func(a, b uint64) {
		b = min(b, uint64(len(call)))
		a = max(a, uint64(captured))
		if b <= a {
			return
		}
		n := int(b - a)
		extend := lastEnd == int(a)
		need := n
		if !extend {
			need += l7.SegHdr
		}
		if captured+len(out)+need > segEnd {
			return
		}
		if extend {
			l := binary.LittleEndian.Uint16(out[lastDesc+4:])
			binary.LittleEndian.PutUint16(out[lastDesc+4:], l+uint16(n))
		} else {
			lastDesc = len(out)
			out = binary.LittleEndian.AppendUint32(out, uint32(a))
			out = binary.LittleEndian.AppendUint16(out, uint16(n))
		}
		out = append(out, call[a:b]...)
		lastEnd = int(b)
	}
	total := uint64(len(call))
	var pos, lastc uint64
	if !d.known {
		switch {
		case captured >= len(preface) && string(call[:len(preface)]) == preface:
			pos = uint64(len(preface))
		case plausibleStart(data):
		default:
			return data, out
		}
		d.known = true
		d.hdr = nil
	} else if len(d.hdr) > 0 {
		need := frameHeaderLen - len(d.hdr)
		if len(call) < need {
			d.hdr = append(d.hdr, call...)
			return data, out
		}
		h := append(d.hdr, call[:need]...)
		d.hdr = nil
		length := uint64(h[0])<<16 | uint64(h[1])<<8 | uint64(h[2])
		pos = uint64(need) + length
		lastc = pos
		if h[3] == frameData {
			lastc = uint64(need)
			if h[4]&flagPadded != 0 {
				lastc++
			}
		}
		seg(0, lastc)
	} else {
		pos, lastc = d.next, d.copy
		seg(0, lastc)
	}
	for i := 0; pos < total; i++ {
		if i == 96 { // H2_MAX_FRAMES
			d.known = false
			return data, out
		}
		if pos+frameHeaderLen > total {
			d.hdr = append([]byte(nil), call[pos:]...)
			seg(pos, total)
			d.next, d.copy = 0, 0
			return data, out
		}
		h := call[pos:]
		fend := pos + frameHeaderLen + (uint64(h[0])<<16 | uint64(h[1])<<8 | uint64(h[2]))
		cend := fend
		if h[3] == frameData {
			cend = pos + frameHeaderLen
			if h[4]&flagPadded != 0 {
				cend++
			}
		}
		seg(pos, cend)
		pos, lastc = fend, cend
	}
	d.next = pos - total
	d.copy = 0
	if lastc > total {
		d.copy = lastc - total
	}
	return data, out
}

// plausibleStart is the kernel's h2_plausible.
func plausibleStart(b []byte) bool {
	if len(b) < frameHeaderLen {
		return false
	}
	length, typ, _, sid, reserved := splitHeader(b)
	if length > 16384 || typ > frameContinuation || reserved {
		return false
	}
	switch typ {
	case frameSettings, framePing, frameGoAway:
		return sid == 0 && (typ != frameSettings || length%6 == 0) && (typ != framePing || length == 8) && (typ != frameGoAway || length >= 8)
	case frameWindowUpdate:
		return length == 4
	case frameContinuation:
		return false
	}
	return sid != 0 && (typ != frameRSTStream || length == 4) && (typ != framePriority || length == 5)
}

// merge joins consecutive chunks of one direction into calls of up to max
// bytes: the long reads and writes of a busy multiplexed connection.
func merge(chunks []chunk, max int) []chunk {
	var out []chunk
	for _, c := range chunks {
		for b := c.data; len(b) > 0; {
			if n := len(out); n > 0 && out[n-1].dir == c.dir && len(out[n-1].data) < max {
				k := min(max-len(out[n-1].data), len(b))
				out[n-1].data = append(out[n-1].data, b[:k]...)
				b = b[k:]
				continue
			}
			k := min(max, len(b))
			out = append(out, chunk{c.dir, append([]byte(nil), b[:k]...)})
			b = b[k:]
		}
	}
	return out
}

// runKernel feeds chunks as the kernel would record them.
func runKernel(chunks []chunk, prefix int) result {
	var res result
	k := &kernelWalk{prefix: prefix}
	p := NewParser(ParserConfig{Emit: func(e *Exchange) { res.ex = append(res.ex, exString(e)) }})
	for i, c := range chunks {
		data, segs := k.record(c.dir, c.data)
		p.FeedSegs(c.dir, data, segs, uint64(len(c.data)), Times{Start: int64(i * 10), End: int64(i*10 + 5)})
	}
	p.Close()
	res.stats = p.Stats()
	return res
}

// TestKernelSegments: grpc-go traffic (four workers multiplexed on each
// connection) recorded through a relay, its calls joined into reads and
// writes of up to 32 KiB, recorded as the kernel does (prefix and
// segments: everything but DATA payloads): the parser finds every
// exchange the whole bytes give, with no loss, whatever the prefix.
func TestKernelSegments(t *testing.T) {
	r := newRelay(t, startGRPC(t), true)
	counts := &grpcCounts{m: map[string]int{}}
	conn, err := grpc.NewClient(r.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	runGRPCWorkload(t, testpb.NewTestServiceClient(conn), counts, 4)
	conn.Close()
	r.wait()
	// what the calls as the relay read them give
	_, direct := r.replay(0)
	calls := direct.Exchanges
	if calls < 100 {
		t.Fatalf("%d exchanges recorded", calls)
	}
	for _, max := range []int{4096, 32 << 10} {
		for _, prefix := range []int{64, 1024, 4096} {
			whole, kern := map[string]int{}, map[string]int{}
			var ks Stats
			for _, rec := range r.record {
				calls := merge(rec, max)
				for _, e := range run(calls, 0, Limits{}).ex {
					whole[e]++
				}
				res := runKernel(calls, prefix)
				for _, e := range res.ex {
					kern[e]++
				}
				addStats(&ks, res.stats)
			}
			if ks.Exchanges != calls || !maps.Equal(whole, kern) || ks.Desyncs != 0 || ks.Lost != 0 || ks.Undecodable != 0 {
				t.Errorf("calls of %d, prefix %d: %d exchanges from segments (%d kinds), %d kinds from the whole calls, %d made; stats %+v",
					max, prefix, ks.Exchanges, len(kern), len(whole), calls, ks)
			}
		}
	}
}

// TestSegmentGaps: bytes missing between segments are accounted as the
// bytes after a prefix are: inside a DATA payload nothing is lost, a
// missing frame header desynchronises the direction.
func TestSegmentGaps(t *testing.T) {
	cl := newWire()
	cl.buf.WriteString(preface)
	cl.fr.WriteSettings()
	req(cl, 1, false, "/a")
	cl.fr.WriteData(1, false, make([]byte, 500))
	req(cl, 3, true, "/b")
	b := cl.take()
	var got []string
	p := NewParser(ParserConfig{Emit: func(e *Exchange) { got = append(got, exString(e)) }})
	// the DATA payload [dataStart, dataEnd) left out: segments after it
	dataEnd := indexFrame(b, frameHeaders, 3)
	dataStart := dataEnd - 500
	seg := binary.LittleEndian.AppendUint32(nil, uint32(dataEnd))
	seg = binary.LittleEndian.AppendUint16(seg, uint16(len(b)-dataEnd))
	seg = append(seg, b[dataEnd:]...)
	p.FeedSegs(FromClient, b[:dataStart], seg, uint64(len(b)), Times{})
	if s := p.Stats(); s.Desyncs != 0 || s.Streams != 2 {
		t.Fatalf("a gap inside DATA: %+v", s)
	}
	// The same call with the second HEADERS' frame header left out too.
	p = NewParser(ParserConfig{Emit: func(e *Exchange) {}})
	seg = binary.LittleEndian.AppendUint32(nil, uint32(dataEnd+frameHeaderLen))
	seg = binary.LittleEndian.AppendUint16(seg, uint16(len(b)-dataEnd-frameHeaderLen))
	seg = append(seg, b[dataEnd+frameHeaderLen:]...)
	p.FeedSegs(FromClient, b[:dataStart], seg, uint64(len(b)), Times{})
	if s := p.Stats(); s.Desyncs != 1 || s.Streams != 1 {
		t.Fatalf("a frame header missing: %+v", s)
	}
	// Malformed segments (before the prefix's end, past the call) are
	// ignored, never read out of bounds.
	bad := binary.LittleEndian.AppendUint32(nil, 1)
	bad = binary.LittleEndian.AppendUint16(bad, 2)
	bad = append(bad, 0, 0)
	bad = binary.LittleEndian.AppendUint32(bad, uint32(len(b)))
	bad = binary.LittleEndian.AppendUint16(bad, 3)
	bad = append(bad, 1, 2, 3, 4)
	p = NewParser(ParserConfig{Emit: func(e *Exchange) {}})
	p.FeedSegs(FromClient, b, bad, uint64(len(b)), Times{})
	if s := p.Stats(); s.Desyncs != 0 || s.Streams != 2 {
		t.Fatalf("malformed segments: %+v", s)
	}
}

// indexFrame returns the offset of the first frame of type typ on stream
// sid in b, which starts with the client preface.
func indexFrame(b []byte, typ uint8, sid uint32) int {
	for off := len(preface); off+frameHeaderLen <= len(b); {
		length, t, _, s, _ := splitHeader(b[off:])
		if t == typ && s == sid {
			return off
		}
		off += frameHeaderLen + int(length)
	}
	return -1
}

// FuzzSegments feeds arbitrary calls recorded as the kernel records them
// (prefix and segments), with the prefix and the calls' lengths from the
// input: the parser's invariants hold whatever the bytes.
func FuzzSegments(f *testing.F) {
	for _, s := range seedConversations() {
		f.Add(encode(s), uint8(16))
	}
	f.Fuzz(func(t *testing.T, data []byte, prefix uint8) {
		k := &kernelWalk{prefix: int(prefix) + 1}
		checkParser(t, Limits{MaxStreams: 4, MaxField: 16, MaxHeaderTable: 512, MaxHeaderString: 256}, func(p *Parser) {
			for len(data) > 0 {
				c := data[0]
				data = data[1:]
				if c == 0xff {
					p.Lost()
					continue
				}
				n := min(int(c>>1)+1, len(data))
				d, segs := k.record(Dir(c&1), data[:n])
				p.FeedSegs(Dir(c&1), d, segs, uint64(n), Times{Start: 1, End: 2})
				data = data[n:]
			}
		})
	})
}

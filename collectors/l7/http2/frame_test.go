package http2

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// wire writes one direction of a connection with the x/net framer and an
// HPACK encoder, as a real peer would.
type wire struct {
	buf bytes.Buffer
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func newWire() *wire {
	w := &wire{}
	w.fr = http2.NewFramer(&w.buf, nil)
	w.fr.AllowIllegalWrites = true
	w.enc = hpack.NewEncoder(&w.hb)
	return w
}

// block encodes fields (name, value pairs).
func (w *wire) block(kv ...string) []byte {
	w.hb.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		w.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), w.hb.Bytes()...)
}

// headers writes a HEADERS frame, split into CONTINUATIONs of at most
// split bytes when split > 0.
func (w *wire) headers(sid uint32, end bool, split int, pad uint8, kv ...string) {
	b := w.block(kv...)
	first := b
	if split > 0 && len(b) > split {
		first = b[:split]
	}
	w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: first,
		EndStream: end, EndHeaders: len(first) == len(b), PadLength: pad})
	for rest := b[len(first):]; len(rest) > 0; {
		n := min(split, len(rest))
		w.fr.WriteContinuation(sid, n == len(rest), rest[:n])
		rest = rest[n:]
	}
}

func (w *wire) take() []byte {
	b := append([]byte(nil), w.buf.Bytes()...)
	w.buf.Reset()
	return b
}

type chunk struct {
	dir  Dir
	data []byte
}

type result struct {
	ex    []string
	stats Stats
}

func exString(e *Exchange) string {
	return fmt.Sprintf("%d %s %s %s %s ct=%s st=%d grpc=%v gs=%d req=%d resp=%d rst=%v/%d",
		e.StreamID, e.Method, e.Scheme, e.Authority, e.Path, e.ContentType, e.Status,
		e.GRPC, e.GRPCStatus, e.RequestBytes, e.ResponseBytes, e.Reset, e.ResetCode)
}

// run feeds chunks, each cut into pieces of at most piece bytes (0: whole).
func run(chunks []chunk, piece int, lim Limits) result {
	var res result
	p := NewParser(ParserConfig{Limits: lim, Emit: func(e *Exchange) { res.ex = append(res.ex, exString(e)) }})
	for i, c := range chunks {
		t := Times{Start: int64(i * 10), End: int64(i*10 + 5)}
		if piece <= 0 {
			p.Feed(c.dir, c.data, uint64(len(c.data)), t)
			continue
		}
		for b := c.data; len(b) > 0; {
			n := min(piece, len(b))
			p.Feed(c.dir, b[:n], uint64(n), t)
			b = b[n:]
		}
	}
	p.Close()
	res.stats = p.Stats()
	return res
}

// conversation is a connection from its beginning: preface, SETTINGS,
// then the exchanges the step function writes.
func conversation(step func(cl, sv *wire, out *[]chunk)) []chunk {
	cl, sv := newWire(), newWire()
	var out []chunk
	cl.buf.WriteString(preface)
	cl.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 4096})
	out = append(out, chunk{FromClient, cl.take()})
	sv.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
	sv.fr.WriteSettingsAck()
	out = append(out, chunk{FromServer, sv.take()})
	cl.fr.WriteSettingsAck()
	out = append(out, chunk{FromClient, cl.take()})
	step(cl, sv, &out)
	return out
}

func req(cl *wire, sid uint32, end bool, path string, extra ...string) {
	kv := append([]string{":method", "POST", ":scheme", "http", ":authority", "svc:80", ":path", path}, extra...)
	cl.headers(sid, end, 0, 0, kv...)
}

func TestFrames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		step  func(cl, sv *wire, out *[]chunk)
		want  []string
		check func(t *testing.T, s Stats)
	}{
		{
			name: "unary grpc with trailers and padded data",
			step: func(cl, sv *wire, out *[]chunk) {
				req(cl, 1, false, "/pkg.Svc/Get?secret=1", "content-type", "application/grpc", "authorization", "Bearer x")
				cl.fr.WriteDataPadded(1, true, make([]byte, 7), make([]byte, 3))
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, false, 0, 0, ":status", "200", "content-type", "application/grpc")
				sv.fr.WriteData(1, false, make([]byte, 12))
				sv.headers(1, true, 0, 0, "grpc-status", "5", "grpc-message", "not found")
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{"1 POST http svc:80 /pkg.Svc/Get ct=application/grpc st=200 grpc=true gs=5 req=7 resp=12 rst=false/0"},
		},
		{
			name: "trailers-only, continuation, padded headers, priority",
			step: func(cl, sv *wire, out *[]chunk) {
				cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true, PadLength: 4,
					Priority:      http2.PriorityParam{StreamDep: 0, Weight: 7},
					BlockFragment: cl.block(":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", "/x", "content-type", "application/grpc+proto")})
				cl.headers(3, true, 3, 2, ":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", "/long/path/for/continuation")
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, true, 0, 0, ":status", "200", "content-type", "application/grpc", "grpc-status", "13")
				sv.headers(3, true, 2, 0, ":status", "404")
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{
				"1 GET https a.example /x ct=application/grpc st=200 grpc=true gs=13 req=0 resp=0 rst=false/0",
				"3 GET https a.example /long/path/for/continuation ct= st=404 grpc=false gs=-1 req=0 resp=0 rst=false/0",
			},
		},
		{
			name: "informational then final; reset; goaway refuses",
			step: func(cl, sv *wire, out *[]chunk) {
				req(cl, 1, false, "/upload", "expect", "100-continue")
				req(cl, 3, true, "/cancelled")
				req(cl, 5, true, "/refused")
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, false, 0, 0, ":status", "100")
				*out = append(*out, chunk{FromServer, sv.take()})
				cl.fr.WriteData(1, true, make([]byte, 100))
				cl.fr.WriteRSTStream(3, http2.ErrCodeCancel)
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, true, 0, 0, ":status", "201")
				sv.fr.WriteGoAway(3, http2.ErrCodeNo, nil)
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{
				"3 POST http svc:80 /cancelled ct= st=0 grpc=false gs=-1 req=0 resp=0 rst=true/8",
				"1 POST http svc:80 /upload ct= st=201 grpc=false gs=-1 req=100 resp=0 rst=false/0",
			},
			check: func(t *testing.T, s Stats) {
				if s.Unfinished != 1 || s.Streams != 3 {
					t.Errorf("stats %+v: want 3 streams, 1 unfinished (refused by GOAWAY)", s)
				}
			},
		},
		{
			name: "invalid utf-8 and over-long values are made safe",
			step: func(cl, sv *wire, out *[]chunk) {
				req(cl, 1, true, "/caf\xc3/"+string(bytes.Repeat([]byte("é"), 200)))
				*out = append(*out, chunk{FromClient, cl.take()})
				sv.headers(1, true, 0, 0, ":status", "200")
				*out = append(*out, chunk{FromServer, sv.take()})
			},
			want: []string{"1 POST http svc:80 /caf\uFFFD/" + string(bytes.Repeat([]byte("é"), 124)) + " ct= st=200 grpc=false gs=-1 req=0 resp=0 rst=false/0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chunks := conversation(tc.step)
			whole := run(chunks, 0, Limits{})
			if fmt.Sprint(whole.ex) != fmt.Sprint(tc.want) {
				t.Fatalf("exchanges\n got %q\nwant %q", whole.ex, tc.want)
			}
			if whole.stats.Desyncs != 0 || whole.stats.Undecodable != 0 || whole.stats.Joined != 0 {
				t.Errorf("unexpected stats %+v", whole.stats)
			}
			for _, piece := range []int{1, 2, 5, 9, 10} {
				if got := run(chunks, piece, Limits{}); fmt.Sprint(got) != fmt.Sprint(whole) {
					t.Errorf("pieces of %d: %+v, whole: %+v", piece, got, whole)
				}
			}
			if tc.check != nil {
				tc.check(t, whole.stats)
			}
		})
	}
}

// A capture that kept only a prefix of a call: missing bytes inside a DATA
// payload cost nothing; missing bytes past it desynchronise the direction
// until a call that starts on a frame boundary.
func TestMissingBytes(t *testing.T) {
	cl, sv := newWire(), newWire()
	cl.buf.WriteString(preface)
	cl.fr.WriteSettings()
	var got []string
	p := NewParser(ParserConfig{Emit: func(e *Exchange) { got = append(got, exString(e)) }})
	feed := func(d Dir, b []byte, total int) { p.Feed(d, b, uint64(total), Times{}) }
	req(cl, 1, false, "/a")
	cl.fr.WriteData(1, true, make([]byte, 1000))
	b := cl.take()
	feed(FromClient, b[:len(b)-900], len(b)) // truncated inside DATA: fine
	sv.fr.WriteSettings()
	sv.headers(1, true, 0, 0, ":status", "200")
	feed(FromServer, sv.take(), 0)
	if p.Stats().Desyncs != 0 || len(got) != 1 || got[0] != "1 POST http svc:80 /a ct= st=200 grpc=false gs=-1 req=1000 resp=0 rst=false/0" {
		t.Fatalf("after truncated DATA: %q %+v", got, p.Stats())
	}
	// Truncated past the DATA frame: the HEADERS after it is lost.
	cl.fr.WriteData(3, false, make([]byte, 10)) // stream 3 unknown: ignored
	req(cl, 5, true, "/lost")
	b = cl.take()
	feed(FromClient, b[:12], len(b))
	if s := p.Stats(); s.Desyncs != 1 {
		t.Fatalf("want a desync: %+v", s)
	}
	// The next call starts on a frame boundary: found again. The encoder's
	// table holds entries the decoder lost, so a request using them is
	// undecodable, not misnamed.
	req(cl, 7, true, "/a")
	feed(FromClient, cl.take(), 0)
	sv.headers(7, true, 0, 0, ":status", "200")
	feed(FromServer, sv.take(), 0)
	// Streams 3 and 5 were opened in the bytes lost (a client numbers its
	// streams in order): counted lost by their ids, not silently gone.
	s := p.Stats()
	if s.Resyncs != 1 || s.Undecodable != 1 || s.Unseen != 2 || len(got) != 1 {
		t.Fatalf("after resync: %q %+v", got, s)
	}
	// In sync, skipped ids are the client's business (idle streams).
	req(cl, 11, true, "/b")
	feed(FromClient, cl.take(), 0)
	if s := p.Stats(); s.Unseen != 2 {
		t.Fatalf("ids skipped in sync counted: %+v", s)
	}
}

func TestStreamCap(t *testing.T) {
	chunks := conversation(func(cl, sv *wire, out *[]chunk) {
		for i := uint32(0); i < 5; i++ {
			req(cl, 1+2*i, true, "/s")
		}
		*out = append(*out, chunk{FromClient, cl.take()})
		for i := uint32(0); i < 5; i++ {
			sv.headers(1+2*i, true, 0, 0, ":status", "200")
		}
		*out = append(*out, chunk{FromServer, sv.take()})
	})
	r := run(chunks, 0, Limits{MaxStreams: 3})
	if len(r.ex) != 3 || r.stats.DroppedStreams != 2 || r.stats.Streams != 3 {
		t.Fatalf("%q %+v", r.ex, r.stats)
	}
}

// SETTINGS_HEADER_TABLE_SIZE binds the peer's encoder once it acknowledges:
// an encoder that grows its table beyond what was allowed makes its stream
// undecodable; within the allowance it decodes.
func TestHeaderTableSize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		allowed uint32 // what the client's SETTINGS allow the server
		use     uint32 // the table size the server's encoder announces
		undec   uint64
	}{
		{"grow within settings", 8192, 8192, 0},
		{"shrink", 4096, 256, 0},
		{"beyond settings", 4096, 8192, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, sv := newWire(), newWire()
			var chunks []chunk
			cl.buf.WriteString(preface)
			cl.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: tc.allowed})
			req(cl, 1, true, "/t")
			chunks = append(chunks, chunk{FromClient, cl.take()})
			sv.fr.WriteSettings()
			sv.fr.WriteSettingsAck()
			sv.enc.SetMaxDynamicTableSizeLimit(tc.use)
			sv.enc.SetMaxDynamicTableSize(tc.use)
			sv.headers(1, true, 0, 0, ":status", "200", "x-big", string(bytes.Repeat([]byte("v"), 5000)))
			chunks = append(chunks, chunk{FromServer, sv.take()})
			r := run(chunks, 0, Limits{})
			if r.stats.Undecodable != tc.undec || uint64(len(r.ex)) != 1-tc.undec {
				t.Fatalf("%q %+v", r.ex, r.stats)
			}
		})
	}
}

// Joining a connection mid-way: blocks that reference dynamic entries made
// before the join are undecodable (never misnamed); once the encoder's
// table holds only entries made after the join (here it flushed it with a
// size update to 0), decoding is exact again.
func TestJoinedDecodesWhatItCan(t *testing.T) {
	cl, sv := newWire(), newWire()
	var before, after []chunk
	for sid := uint32(1); sid <= 5; sid += 2 {
		req(cl, sid, true, "/before")
		before = append(before, chunk{FromClient, cl.take()})
		sv.headers(sid, true, 0, 0, ":status", "200", "content-type", "text/plain")
		before = append(before, chunk{FromServer, sv.take()})
	}
	// After the join: one request using the old entries, then both
	// encoders flush their tables and the rest use new ones only.
	req(cl, 7, true, "/before")
	after = append(after, chunk{FromClient, cl.take()})
	sv.headers(7, true, 0, 0, ":status", "200", "content-type", "text/plain")
	after = append(after, chunk{FromServer, sv.take()})
	for _, w := range []*wire{cl, sv} {
		w.enc.SetMaxDynamicTableSize(0)
		w.enc.SetMaxDynamicTableSize(4096)
	}
	for sid := uint32(9); sid <= 13; sid += 2 {
		req(cl, sid, true, "/after")
		after = append(after, chunk{FromClient, cl.take()})
		sv.headers(sid, true, 0, 0, ":status", "404", "content-type", "text/plain")
		after = append(after, chunk{FromServer, sv.take()})
	}
	whole := run(append(conversation(func(*wire, *wire, *[]chunk) {}), append(before, after...)...), 0, Limits{})
	if len(whole.ex) != 7 {
		t.Fatalf("from the start: %q", whole.ex)
	}
	r := run(after, 0, Limits{})
	want := []string{
		"9 POST http svc:80 /after ct=text/plain st=404 grpc=false gs=-1 req=0 resp=0 rst=false/0",
		"11 POST http svc:80 /after ct=text/plain st=404 grpc=false gs=-1 req=0 resp=0 rst=false/0",
		"13 POST http svc:80 /after ct=text/plain st=404 grpc=false gs=-1 req=0 resp=0 rst=false/0",
	}
	if fmt.Sprint(r.ex) != fmt.Sprint(want) || r.stats.Undecodable != 1 || r.stats.Joined != 2 {
		t.Fatalf("joined: %q %+v", r.ex, r.stats)
	}
}

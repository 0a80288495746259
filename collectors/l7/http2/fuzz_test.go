package http2

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/otelbee/otelbee/collectors/l7"

	"golang.org/x/net/http2"
)

// script turns fuzz input into captured calls: each call is a control byte
// (direction, length, whether bytes after the captured ones were lost, or
// a Lost() record) followed by its bytes.
func script(p *Parser, data []byte) {
	for len(data) > 0 {
		c := data[0]
		data = data[1:]
		if c == 0xff {
			p.Lost()
			continue
		}
		n := min(int(c>>2)+1, len(data))
		total := uint64(n)
		if c&2 != 0 {
			total += uint64(c >> 4)
		}
		p.Feed(Dir(c&1), data[:n], total, Times{Start: 1, End: 2})
		data = data[n:]
	}
}

// encode is script's inverse for seeds: calls of at most 64 bytes.
func encode(chunks []chunk) []byte {
	var out []byte
	for _, c := range chunks {
		for b := c.data; len(b) > 0; {
			n := min(64, len(b))
			out = append(out, byte(n-1)<<2|byte(c.dir))
			out = append(out, b[:n]...)
			b = b[n:]
		}
	}
	return out
}

func checkParser(t *testing.T, lim Limits, feed func(p *Parser)) {
	lim = lim.withDefaults()
	emitted := uint64(0)
	var p *Parser
	p = NewParser(ParserConfig{Limits: lim, Emit: func(e *Exchange) {
		emitted++
		for _, f := range [][]byte{e.Method, e.Path, e.Authority, e.Scheme, e.ContentType} {
			if !utf8.Valid(f) {
				t.Fatalf("invalid UTF-8 emitted: %q", f)
			}
			if len(f) > 3*lim.MaxField {
				t.Fatalf("field of %d bytes kept", len(f))
			}
		}
		if len(e.Method) == 0 || e.Status < 0 || e.RequestBytes < 0 || e.ResponseBytes < 0 {
			t.Fatalf("malformed exchange %+v", e)
		}
		if bytes.IndexByte(e.Path, '?') >= 0 {
			t.Fatalf("query string kept: %q", e.Path)
		}
	}})
	feed(p)
	if p.streams.Len() > lim.MaxStreams {
		t.Fatalf("%d streams open: over the cap %d", p.streams.Len(), lim.MaxStreams)
	}
	open := uint64(p.streams.Len())
	p.Close()
	s := p.Stats()
	if s.Exchanges != emitted || s.Exchanges > s.Streams ||
		s.Exchanges+s.Undecodable+s.Lost+s.Unfinished != s.Streams {
		t.Fatalf("accounting broken (open %d, emitted %d): %+v", open, emitted, s)
	}
}

func seedConversations() [][]chunk {
	var seeds [][]chunk
	seeds = append(seeds, conversation(func(cl, sv *wire, out *[]chunk) {
		req(cl, 1, false, "/pkg.Svc/Get?x=1", "content-type", "application/grpc")
		cl.fr.WriteDataPadded(1, true, make([]byte, 7), make([]byte, 3))
		cl.headers(3, true, 4, 2, ":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/long/path")
		*out = append(*out, chunk{FromClient, cl.take()})
		sv.headers(1, false, 0, 0, ":status", "200", "content-type", "application/grpc")
		sv.fr.WriteData(1, false, make([]byte, 12))
		sv.headers(1, true, 0, 0, "grpc-status", "5")
		sv.fr.WriteRSTStream(3, 8)
		sv.fr.WriteGoAway(3, 0, []byte("bye"))
		*out = append(*out, chunk{FromServer, sv.take()})
	}))
	g := newGRPCTraffic()
	seeds = append(seeds, append(conversation(func(cl, sv *wire, out *[]chunk) {}), g.batch(3)...))
	return seeds
}

// FuzzFeed drives the frame reader with arbitrary calls, losses and cuts.
func FuzzFeed(f *testing.F) {
	for _, s := range seedConversations() {
		f.Add(encode(s))
	}
	f.Add([]byte{0xff, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParser(t, Limits{MaxStreams: 4, MaxField: 16, MaxHeaderTable: 512, MaxHeaderString: 256}, func(p *Parser) { script(p, data) })
	})
}

// FuzzHPACK keeps the framing valid and lets the fuzzer write the header
// blocks: a request block on stream 1, a response block, split into
// CONTINUATIONs where the input says.
func FuzzHPACK(f *testing.F) {
	w := newWire()
	f.Add(w.block(":method", "GET", ":path", "/a?b", ":scheme", "http", ":authority", "x"), w.block(":status", "200", "grpc-status", "3"), uint8(3))
	f.Add(w.block(":method", "GET", ":path", "/a"), w.block(":status", "200"), uint8(0))
	f.Add([]byte{0xbe, 0x3f, 0xe1, 0x1f, 0x82, 0x84}, []byte{0x88, 0xc0}, uint8(1))
	f.Fuzz(func(t *testing.T, reqBlock, respBlock []byte, split uint8) {
		checkParser(t, Limits{MaxStreams: 4, MaxField: 16, MaxHeaderTable: 512, MaxHeaderString: 256}, func(p *Parser) {
			cl, sv := newWire(), newWire()
			cl.buf.WriteString(preface)
			cl.fr.WriteSettings()
			for sid := uint32(1); sid <= 5; sid += 2 {
				writeBlock(cl, sid, reqBlock, int(split), true)
			}
			p.Feed(FromClient, cl.buf.Bytes(), uint64(cl.buf.Len()), Times{})
			sv.fr.WriteSettings()
			for sid := uint32(1); sid <= 5; sid += 2 {
				writeBlock(sv, sid, respBlock, int(split), true)
			}
			p.Feed(FromServer, sv.buf.Bytes(), uint64(sv.buf.Len()), Times{})
		})
	})
}

func writeBlock(w *wire, sid uint32, b []byte, split int, end bool) {
	first := b
	if split > 0 && len(b) > split {
		first = b[:split]
	}
	w.fr.WriteRawFrame(frameHeaders, http2.Flags(flagsFor(len(first) == len(b), end)), sid, first)
	for rest := b[len(first):]; len(rest) > 0; {
		n := min(split, len(rest))
		var fl uint8
		if n == len(rest) {
			fl = flagEndHeaders
		}
		w.fr.WriteRawFrame(frameContinuation, http2.Flags(fl), sid, rest[:n])
		rest = rest[n:]
	}
}

func flagsFor(endHeaders, endStream bool) uint8 {
	var f uint8
	if endHeaders {
		f |= flagEndHeaders
	}
	if endStream {
		f |= flagEndStream
	}
	return f
}

// checkSink holds what the layer relies on for every exchange: bounded,
// valid attributes and a span name.
type checkSink struct {
	t        *testing.T
	n, drops int
}

func (s *checkSink) Exchange(c *l7.Conn, x *l7.Exchange) {
	s.n++
	if x.SpanName == "" || x.NAttr > l7.MaxAttrs || x.NSpanAttr > l7.MaxAttrs || (x.Metric != metricHTTP && x.Metric != metricRPC) {
		s.t.Fatalf("malformed exchange %s", exchangeLine(x))
	}
	for _, kv := range append(x.Attrs[:x.NAttr:x.NAttr], x.SpanAttrs[:x.NSpanAttr]...) {
		v := kv.Value.Emit()
		pathLike := kv.Key == keyRoute || kv.Key == keyURLTemplate || kv.Key == keyRPCMethod || kv.Key == keyRPCOriginal
		if !utf8.ValidString(v) || len(v) > 3*64 || (pathLike && strings.ContainsRune(v, '?')) {
			s.t.Fatalf("attribute %s=%q", kv.Key, v)
		}
	}
	if (x.Error != "") != x.StatusError {
		s.t.Fatalf("error.type %q but status error %v", x.Error, x.StatusError)
	}
}

func (s *checkSink) Drop(c *l7.Conn, reason string, n int) {
	switch reason {
	case "undecodable", "lost", "incomplete", "overflow":
	default:
		s.t.Fatalf("drop reason %q", reason)
	}
	s.drops += n
}

// FuzzProtocol drives the layer's interface (either role, losses by
// direction, midstream joins): every stream the parser took is either an
// exchange or a counted drop, and every exchange is well formed.
func FuzzProtocol(f *testing.F) {
	for _, s := range seedConversations() {
		f.Add(byte(0), encode(s))
		f.Add(byte(3), encode(s))
	}
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		role := l7.RoleServer
		if mode&1 != 0 {
			role = l7.RoleClient
		}
		proto := New(Options{Limits: Limits{MaxStreams: 4, MaxField: 64, MaxHeaderTable: 512, MaxHeaderString: 256},
			Routes: &tableRouter{known: map[string]bool{"/a": true}}, MaxMethods: 2, MaxHosts: 2})
		c := &l7.Conn{ID: 1, PID: 1, Role: role, Source: l7.SourceSyscall, Midstream: mode&2 != 0}
		sink := &checkSink{t: t}
		p := proto.NewParser(c)
		for len(data) > 0 {
			ctl := data[0]
			data = data[1:]
			if ctl >= 0xfe {
				p.Lost(l7.Dir(ctl&1), sink)
				continue
			}
			n := min(int(ctl>>2)+1, len(data))
			total := uint64(n)
			if ctl&2 != 0 {
				total += uint64(ctl >> 4)
			}
			p.Feed(&l7.Record{Dir: l7.Dir(ctl & 1), Data: data[:n], Total: total, Start: 1, End: 2}, sink)
			data = data[n:]
		}
		p.Close(3, sink)
		st := p.(*conn).Stats()
		if uint64(sink.n) != st.Exchanges || uint64(sink.n+sink.drops) != st.Streams+st.DroppedStreams+st.Unseen {
			t.Fatalf("%d exchanges and %d drops for %+v", sink.n, sink.drops, st)
		}
	})
}

package httpc

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

// sparseCall is one call as the kernel captures it: the first cap bytes,
// then the segments (offset, length) of bpf/http.c.
type sparseCall struct {
	read bool
	data string
	cap  int
	segs [][2]int
}

// iovSegs computes the segments bpf/http.c capture_segs_iov takes from a
// writev of these iovecs with a prefix of cap bytes.
func iovSegs(iovs []string, cap int) (string, int, [][2]int) {
	const segBytes, tailBytes = 16, 32
	all := strings.Join(iovs, "")
	if cap > len(all) {
		cap = len(all)
	}
	var segs [][2]int
	pos := 0
	lastPos, lastLen := 0, 0
	for i, v := range iovs {
		if i >= 16 {
			break
		}
		if pos >= cap && len(v) > 0 {
			segs = append(segs, [2]int{pos, min(len(v), segBytes)})
		}
		lastPos, lastLen = pos, len(v)
		pos += len(v)
	}
	end := lastPos + lastLen
	t := max(end-tailBytes, cap)
	if lastPos >= cap && t < lastPos+segBytes {
		t = lastPos + segBytes
	}
	if t < end {
		segs = append(segs, [2]int{t, end - t})
	}
	return all, cap, segs
}

func feedSparse(c *Conn, cl sparseCall, ts uint64) {
	head := cl.data[:min(cl.cap, len(cl.data))]
	var segs []byte
	for _, s := range cl.segs {
		var h [segHdr]byte
		binary.LittleEndian.PutUint32(h[:], uint32(s[0]))
		binary.LittleEndian.PutUint16(h[4:], uint16(s[1]))
		segs = append(segs, h[:]...)
		segs = append(segs, cl.data[s[0]:s[0]+s[1]]...)
	}
	c.FeedSegments(cl.read, []byte(head), segs, uint64(len(cl.data)), callTimes{enter: ts - 5, exit: ts})
}

func runSparse(server bool, calls []sparseCall, closeAtEnd bool) ([]string, *Stats) {
	var g got
	st := &Stats{}
	c := NewConn(server, st, g.sink)
	for i, cl := range calls {
		feedSparse(c, cl, uint64(i+1)*10)
	}
	if closeAtEnd {
		c.Close()
	}
	return g.exs, st
}

// Node's http server writes three res.write() calls of one tick as one
// writev of 12 iovecs (chunk-size line, CRLF, data, CRLF each): with the
// first bytes of each iovec captured, the framing is exact.
func TestParserCorkedWritev(t *testing.T) {
	hdr := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n7d0"
	iovs := []string{hdr, "\r\n", strings.Repeat("a", 2000), "\r\n", "7d0", "\r\n", strings.Repeat("b", 2000), "\r\n", "7d0", "\r\n", strings.Repeat("c", 2000), "\r\n"}
	all, cap, segs := iovSegs(iovs, 1024)
	later1, _, s1 := iovSegs([]string{"64", "\r\n", strings.Repeat("d", 100), "\r\n"}, 1024)
	later2, _, s2 := iovSegs([]string{"64", "\r\n", strings.Repeat("e", 100), "\r\n", "0\r\n\r\n"}, 1024)
	exs, st := runSparse(true, []sparseCall{
		{read: true, data: "GET /x/1 HTTP/1.1\r\nHost: h\r\n\r\n", cap: 1024},
		{read: false, data: all, cap: cap, segs: segs},
		{read: false, data: later1, cap: 1024, segs: s1},
		{read: false, data: later2, cap: 1024, segs: s2},
	}, false)
	want := "GET /x/1 200 1.1 req=0 resp=6200 t=10-40"
	if len(exs) != 1 || exs[0] != want {
		t.Fatalf("exchanges %q, want %q", exs, want)
	}
	if st.FramingLost.Load() != 0 || st.BodyUnknown.Load() != 0 || st.Malformed.Load() != 0 {
		t.Fatalf("framing lost %d, body unknown %d, malformed %d", st.FramingLost.Load(), st.BodyUnknown.Load(), st.Malformed.Load())
	}
}

func TestParserBlindChunks(t *testing.T) {
	chunk := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }
	head := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	body := chunk(strings.Repeat("a", 2000)) + chunk(strings.Repeat("b", 2000)) + chunk(strings.Repeat("c", 2000))
	read := head + body
	tail := func(s string) [][2]int { return [][2]int{{len(s) - 32, 32}} }
	tests := []struct {
		name        string
		calls       []sparseCall
		close       bool
		want        []string
		framingLost uint64
		bodyUnknown uint64
	}{
		{
			// A client's read takes several chunks at once: the last chunk
			// is found in a later call, the size is not known.
			name: "client read, end in a later call",
			calls: []sparseCall{
				{read: false, data: "GET /s HTTP/1.1\r\n\r\n", cap: 1024},
				{read: true, data: read, cap: 1024, segs: tail(read)},
				{read: true, data: chunk(strings.Repeat("d", 100)), cap: 1024},
				{read: true, data: chunk(strings.Repeat("e", 100)) + "0\r\n\r\n", cap: 1024},
			},
			want:        []string{"GET /s 200 1.1 req=0 resp=-1 t=5-40"},
			bodyUnknown: 1,
		},
		{
			name: "client read, the last chunk in the captured tail",
			calls: []sparseCall{
				{read: false, data: "GET /s HTTP/1.1\r\n\r\n", cap: 1024},
				{read: true, data: read + "0\r\n\r\n", cap: 1024, segs: tail(read + "0\r\n\r\n")},
			},
			want:        []string{"GET /s 200 1.1 req=0 resp=-1 t=5-20"},
			bodyUnknown: 1,
		},
		{
			name: "end never seen: closed",
			calls: []sparseCall{
				{read: false, data: "GET /s HTTP/1.1\r\n\r\n", cap: 1024},
				{read: true, data: read, cap: 1024, segs: tail(read)},
			},
			close:       true,
			framingLost: 1,
		},
		{
			name: "end never seen: the next response starts",
			calls: []sparseCall{
				{read: false, data: "GET /s HTTP/1.1\r\n\r\n", cap: 1024},
				{read: true, data: read, cap: 1024, segs: tail(read)},
				{read: false, data: "GET /t HTTP/1.1\r\n\r\n", cap: 1024},
				{read: true, data: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", cap: 1024},
			},
			want:        []string{"GET /t 200 1.1 req=0 resp=2 t=25-40"},
			framingLost: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exs, st := runSparse(false, tt.calls, tt.close)
			if strings.Join(exs, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("exchanges:\n got %q\nwant %q", exs, tt.want)
			}
			if st.FramingLost.Load() != tt.framingLost || st.BodyUnknown.Load() != tt.bodyUnknown {
				t.Errorf("framing lost %d, body unknown %d; want %d, %d", st.FramingLost.Load(), st.BodyUnknown.Load(), tt.framingLost, tt.bodyUnknown)
			}
		})
	}
}

func TestParserMethods(t *testing.T) {
	var raws []string
	st := &Stats{}
	c := NewConn(true, st, func(ex *Exchange) {
		raws = append(raws, fmt.Sprintf("%s(%s) %d", ex.Method, ex.MethodRaw, ex.Status))
	})
	for i, m := range []string{"PROPFIND", "MKCOL", "QUERY", "PURGE", "get", "GET"} {
		ts := uint64(i*2+1) * 10
		c.Feed(true, []byte(m+" /d HTTP/1.1\r\nHost: h\r\n\r\n"), uint64(len(m)+25), callTimes{ts - 5, ts})
		r := "HTTP/1.1 207 Multi\r\nContent-Length: 0\r\n\r\n"
		c.Feed(false, []byte(r), uint64(len(r)), callTimes{ts + 5, ts + 10})
	}
	want := "_OTHER(PROPFIND) 207,_OTHER(MKCOL) 207,_OTHER(QUERY) 207,_OTHER(PURGE) 207,_OTHER(get) 207,GET(GET) 207"
	if got := strings.Join(raws, ","); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if st.Malformed.Load() != 0 {
		t.Fatalf("malformed %d", st.Malformed.Load())
	}

	if err := SetKnownMethods([]string{"GET", "PROPFIND"}); err != nil {
		t.Fatal(err)
	}
	defer SetKnownMethods(nil)
	raws = nil
	c.Reset(true, st, c.sink)
	for i, m := range []string{"PROPFIND", "PUT", "HEAD"} {
		ts := uint64(i*2+1) * 10
		c.Feed(true, []byte(m+" /d HTTP/1.1\r\n\r\n"), uint64(len(m)+16), callTimes{ts - 5, ts})
		r := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
		if m == "HEAD" {
			r = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
		}
		c.Feed(false, []byte(r), uint64(len(r)), callTimes{ts + 5, ts + 10})
	}
	// HEAD still frames as HEAD (no body) though reported as _OTHER
	want = "PROPFIND(PROPFIND) 200,_OTHER(PUT) 200,_OTHER(HEAD) 200"
	if got := strings.Join(raws, ","); got != want {
		t.Fatalf("known methods override: got %s, want %s", got, want)
	}
	for _, bad := range [][]string{{"GE T"}, {""}, {strings.Repeat("X", 21)}} {
		if err := SetKnownMethods(bad); err == nil {
			t.Errorf("SetKnownMethods(%q) accepted", bad)
		}
	}
}

func TestParserUpgrade(t *testing.T) {
	for _, tt := range []struct {
		upgrade, want string
	}{{"websocket", "websocket"}, {"h2c", "h2c"}, {"foo/2", "other"}} {
		var exs []string
		st := &Stats{}
		c := NewConn(true, st, func(ex *Exchange) { exs = append(exs, fmt.Sprintf("%s %d %s", ex.Path, ex.Status, ex.Upgrade)) })
		req := "GET /up HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: " + tt.upgrade + "\r\n\r\n"
		c.Feed(true, []byte(req), uint64(len(req)), callTimes{1, 2})
		r := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n\x00\x00\x12\x04\x00"
		c.Feed(false, []byte(r), uint64(len(r)), callTimes{3, 4})
		// what follows is another protocol: nothing more is parsed
		c.Feed(true, []byte("GET /not-http1 HTTP/1.1\r\n\r\n"), 27, callTimes{5, 6})
		c.Feed(false, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 38, callTimes{7, 8})
		c.Close()
		if len(exs) != 1 || exs[0] != "/up 101 "+tt.want {
			t.Errorf("%s: exchanges %q", tt.upgrade, exs)
		}
		var up uint64
		for i := range st.Upgraded {
			up += st.Upgraded[i].Load()
		}
		if up != 1 || st.Incomplete.Load() != 0 || st.Malformed.Load() != 0 {
			t.Errorf("%s: upgraded %d incomplete %d malformed %d", tt.upgrade, up, st.Incomplete.Load(), st.Malformed.Load())
		}
	}
}

// The hand-kept record sizes of decode.go are the generated types'.
func TestRecordLayout(t *testing.T) {
	if n := binary.Size(httpConnEvent{}); n != connEventSize {
		t.Fatalf("conn_event is %d bytes, decode.go says %d", n, connEventSize)
	}
	if off := int(unsafe.Offsetof(httpDataEvent{}.Data)); off != dataHdrSize {
		t.Fatalf("data_event data at %d, decode.go says %d", off, dataHdrSize)
	}
}

// FuzzParserSegments feeds calls with arbitrary segment areas: whatever the
// kernel sends, the parser neither crashes nor reports a bad exchange.
func FuzzParserSegments(f *testing.F) {
	all, cap, segs := iovSegs([]string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0", "\r\n", strings.Repeat("a", 2000), "\r\n", "0\r\n\r\n"}, 64)
	var enc []byte
	for _, s := range segs {
		var h [segHdr]byte
		binary.LittleEndian.PutUint32(h[:], uint32(s[0]))
		binary.LittleEndian.PutUint16(h[4:], uint16(s[1]))
		enc = append(append(enc, h[:]...), all[s[0]:s[0]+s[1]]...)
	}
	f.Add([]byte(all[:cap]), enc, uint32(len(all)))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), []byte{10, 0, 0, 0, 5, 0, '0', '\r', '\n', '\r', '\n'}, uint32(200))
	f.Fuzz(func(t *testing.T, head, segs []byte, total uint32) {
		st := &Stats{}
		c := NewConn(false, st, func(ex *Exchange) {
			if ex.Status < 100 || ex.Status > 999 || ex.ReqBody < -1 || ex.RespBody < -1 || ex.End < ex.Start {
				t.Fatalf("bad exchange %+v", ex)
			}
		})
		for i := 0; i < 3; i++ {
			c.Feed(false, []byte("GET /f HTTP/1.1\r\n\r\n"), 19, callTimes{uint64(10 * i), uint64(10*i + 1)})
			c.FeedSegments(true, head, segs, uint64(total), callTimes{uint64(10*i + 2), uint64(10*i + 3)})
		}
		c.Close()
	})
}

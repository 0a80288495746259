package http2

// Real programs talk HTTP/2 through the layer's TCP relay, which hands each
// direction's bytes to a parser in the chunks it read them, standing in for
// the kernel capture. Ground truth is what the programs themselves counted.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/otelbee/otelbee/collectors/l7"
	l7relay "github.com/otelbee/otelbee/collectors/l7/internal/relay"
)

// relay is the layer's test relay (collectors/l7/internal/relay) with this
// package's frame and stream parser behind it, one per connection, fed
// every read whole, before it is forwarded. What each connection was fed is
// recorded, with when, for replays cut another way; feeding may begin
// mid-connection (feed off, then on: a connection joined in the middle) or
// after an HTTP/1.1 101 (upgrade).
type relay struct {
	t     *testing.T
	relay *l7relay.Relay
	feed  atomic.Bool
	// upgrade: connections start as HTTP/1.1 and are handed to the parser
	// after a 101, as the HTTP/1 parser will do.
	upgrade bool

	mu     sync.Mutex
	counts map[string]int // "method path status grpc-status" → exchanges
	exs    []string
	stats  Stats
	record [][]chunk   // per connection, what was fed
	times  [][]int64   // per connection, when each chunk was read (ns, the relay's clock)
	ups    []*Upgraded // per connection, its upgrade request (upgrade relays)
}

func newRelay(t *testing.T, target string, feeding bool) *relay {
	r := &relay{t: t, counts: map[string]int{}}
	r.feed.Store(feeding)
	// Whole reads of up to 32 KiB: the parser's own cutting is what the
	// replays test.
	r.relay = l7relay.Listen(t, r, &nopSink{}, l7relay.Capture{Head: 1 << 30}) // the parsers report through Emit and Stats
	r.relay.BufSize = 32 << 10
	r.relay.Serve(t, func() (net.Conn, error) { return net.Dial("tcp", target) })
	return r
}

func (r *relay) addr() string { return r.relay.Addr }

// wait waits until every connection through the relay ended (and its
// parser with it).
func (r *relay) wait() {
	if !r.relay.Idle(10 * time.Second) {
		r.t.Error("relayed connections still open after 10s")
	}
}

// The relay's l7.Protocol: a relayConn per connection.
func (r *relay) Name() string                    { return "http2-relay" }
func (r *relay) Metrics(l7.Role) []l7.MetricSpec { return nil }

func (r *relay) NewParser(*l7.Conn) l7.Parser {
	c := &relayConn{r: r}
	c.p = NewParser(ParserConfig{Emit: func(e *Exchange) {
		k := fmt.Sprintf("%s %s %d %d", e.Method, e.Path, e.Status, e.GRPCStatus)
		if e.Reset && e.GRPCStatus < 0 {
			k = fmt.Sprintf("%s %s RST", e.Method, e.Path)
		}
		r.mu.Lock()
		r.counts[k]++
		r.exs = append(r.exs, fmt.Sprintf("%d %s", e.StreamID, k))
		r.mu.Unlock()
	}})
	return c
}

// relayConn is one relayed connection; the shared relay calls it for one
// connection at a time.
type relayConn struct {
	r                 *relay
	p                 *Parser
	rec               []chunk
	times             []int64
	up                *Upgraded
	upgraded          bool
	reqHead, respHead []byte
}

func (c *relayConn) Feed(rec *l7.Record, _ l7.Sink) {
	r, b, t := c.r, rec.Data, int64(rec.End)
	switch {
	case r.upgrade && !c.upgraded:
		if c.upgraded = r.handOff(c.p, rec.Dir, b, &c.reqHead, &c.respHead, t, &c.up); c.upgraded {
			if i := bytes.Index(c.respHead, []byte("\r\n\r\n")); i+4 < len(c.respHead) {
				c.rec = append(c.rec, chunk{FromServer, append([]byte(nil), c.respHead[i+4:]...)})
				c.times = append(c.times, t)
			}
		}
	case r.feed.Load():
		c.p.Feed(rec.Dir, b, uint64(len(b)), Times{Start: t, End: t})
		c.rec = append(c.rec, chunk{rec.Dir, append([]byte(nil), b...)})
		c.times = append(c.times, t)
	}
}

func (c *relayConn) Lost(l7.Dir, l7.Sink) {}

func (c *relayConn) Close(uint64, l7.Sink) {
	c.p.Close()
	r := c.r
	r.mu.Lock()
	addStats(&r.stats, c.p.Stats())
	r.record = append(r.record, c.rec)
	r.times = append(r.times, c.times)
	r.ups = append(r.ups, c.up)
	r.mu.Unlock()
}

// handOff plays the HTTP/1 parser's part on an upgraded connection: it
// keeps the request head, and when the response head is a 101 it hands
// the request to the parser and feeds the HTTP/2 bytes after the head.
func (r *relay) handOff(p *Parser, dir Dir, b []byte, reqHead, respHead *[]byte, now int64, up **Upgraded) bool {
	if dir == FromClient {
		*reqHead = append(*reqHead, b...)
		return false
	}
	*respHead = append(*respHead, b...)
	i := bytes.Index(*respHead, []byte("\r\n\r\n"))
	if i < 0 {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader((*respHead)[:i+4])), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		r.t.Errorf("no 101: %v %v", resp, err)
		return false
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(*reqHead)))
	if err != nil {
		r.t.Errorf("reading the upgrade request: %v", err)
		return false
	}
	u := Upgraded{Method: []byte(req.Method), Path: []byte(req.RequestURI), Authority: []byte(req.Host),
		Scheme: []byte("http"), HTTP2Settings: []byte(req.Header.Get("HTTP2-Settings"))}
	*up = &u
	p.Upgrade(u, Times{Start: now, End: now})
	if rest := (*respHead)[i+4:]; len(rest) > 0 {
		p.Feed(FromServer, rest, uint64(len(rest)), Times{Start: now, End: now})
	}
	return true
}

func addStats(dst *Stats, s Stats) {
	dst.Streams += s.Streams
	dst.Exchanges += s.Exchanges
	dst.Undecodable += s.Undecodable
	dst.Lost += s.Lost
	dst.Unseen += s.Unseen
	dst.Unfinished += s.Unfinished
	dst.DroppedStreams += s.DroppedStreams
	dst.Desyncs += s.Desyncs
	dst.Resyncs += s.Resyncs
	dst.Joined += s.Joined
	dst.SkippedBytes += s.SkippedBytes
	dst.DecoderResets += s.DecoderResets
}

// replay feeds the recorded connections again, cut into pieces.
func (r *relay) replay(piece int) (map[string]int, Stats) {
	counts := map[string]int{}
	var st Stats
	for _, rec := range r.record {
		res := run(rec, piece, Limits{})
		for _, e := range res.ex {
			counts[e]++
		}
		addStats(&st, res.stats)
	}
	return counts, st
}

// testServer implements the gRPC interop service: the request says which
// status to end with; code DeadlineExceeded means "wait for the deadline".
type testServer struct {
	testpb.UnimplementedTestServiceServer
}

func outcome(s *testpb.EchoStatus, ctx context.Context) error {
	switch c := codes.Code(s.GetCode()); c {
	case codes.OK:
		return nil
	case codes.DeadlineExceeded:
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	default:
		return status.Error(c, s.GetMessage())
	}
}

func (testServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := outcome(req.GetResponseStatus(), ctx); err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

func (testServer) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return outcome(req.GetResponseStatus(), s.Context())
}

func (testServer) StreamingInputCall(s grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	n := 0
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)})
		}
		if err != nil {
			return err
		}
		n += len(m.GetPayload().GetBody())
	}
}

func (testServer) FullDuplexCall(s grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if m.GetResponseStatus().GetCode() != 0 {
			return outcome(m.GetResponseStatus(), s.Context())
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, 64)}}); err != nil {
			return err
		}
	}
}

func startGRPC(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, testServer{})
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

const svc = "/grpc.testing.TestService/"

// grpcCalls makes the calls of the test on one connection and returns the
// client's own count: "POST path 200 code" (DeadlineExceeded as the wire
// may end it: grpc-status 4 or a reset, counted under "DEADLINE").
type grpcCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (g *grpcCounts) add(method string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := status.Code(err)
	k := fmt.Sprintf("POST %s%s 200 %d", svc, method, c)
	if c == codes.DeadlineExceeded {
		k = fmt.Sprintf("POST %s%s DEADLINE", svc, method)
	}
	g.m[k]++
}

func echo(c codes.Code) *testpb.EchoStatus {
	return &testpb.EchoStatus{Code: int32(c), Message: c.String()}
}

func runGRPCWorkload(t *testing.T, cl testpb.TestServiceClient, counts *grpcCounts, workers int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unary := []codes.Code{codes.OK, codes.OK, codes.OK, codes.NotFound, codes.Internal}
			for i := 0; i < 20; i++ {
				c := unary[i%len(unary)]
				_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: int32(10 * i), ResponseStatus: echo(c)})
				counts.add("UnaryCall", err)
			}
			for i := 0; i < 2; i++ {
				dctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
				_, err := cl.UnaryCall(dctx, &testpb.SimpleRequest{ResponseStatus: echo(codes.DeadlineExceeded)})
				cancel()
				counts.add("UnaryCall", err)
			}
			for i := 0; i < 6; i++ {
				c := []codes.Code{codes.OK, codes.NotFound}[i%2]
				s, err := cl.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
					ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 2000}, {Size: 5}},
					ResponseStatus:     echo(c)})
				if err == nil {
					for err == nil {
						_, err = s.Recv()
					}
					if errors.Is(err, io.EOF) {
						err = nil
					}
				}
				counts.add("StreamingOutputCall", err)
			}
			for i := 0; i < 5; i++ {
				s, err := cl.StreamingInputCall(ctx)
				for j := 0; err == nil && j < 4; j++ {
					err = s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 100*j)}})
				}
				if err == nil {
					_, err = s.CloseAndRecv()
				}
				counts.add("StreamingInputCall", err)
			}
			for i := 0; i < 6; i++ {
				s, err := cl.FullDuplexCall(ctx)
				for j := 0; err == nil && j < 3; j++ {
					m := &testpb.StreamingOutputCallRequest{}
					if i%3 == 2 && j == 2 {
						m.ResponseStatus = echo(codes.Internal)
					}
					if err = s.Send(m); err == nil {
						_, err = s.Recv()
					}
				}
				if err == nil {
					s.CloseSend()
					_, err = s.Recv()
					if errors.Is(err, io.EOF) {
						err = nil
					}
				}
				counts.add("FullDuplexCall", err)
			}
		}()
	}
	wg.Wait()
}

// wireCounts folds a DeadlineExceeded call's two possible wire endings
// (the server's grpc-status 4, or the client's RST_STREAM first) together.
func wireCounts(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		for _, suffix := range []string{" 200 4", " RST"} {
			if p, ok := strings.CutSuffix(k, suffix); ok {
				k = p + " DEADLINE"
			}
		}
		out[k] += v
	}
	return out
}

func TestGRPCThroughRelay(t *testing.T) {
	r := newRelay(t, startGRPC(t), true)
	counts := &grpcCounts{m: map[string]int{}}
	for c := 0; c < 2; c++ {
		conn, err := grpc.NewClient(r.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		runGRPCWorkload(t, testpb.NewTestServiceClient(conn), counts, 4)
		conn.Close()
	}
	r.wait()
	got := wireCounts(r.counts)
	if !maps.Equal(got, counts.m) {
		t.Errorf("parser counts differ from the client's\n got %v\nwant %v", got, counts.m)
	}
	total := 0
	for _, v := range counts.m {
		total += v
	}
	s := r.stats
	if s.Exchanges != uint64(total) || s.Streams != uint64(total) || s.Undecodable != 0 || s.Desyncs != 0 || s.Lost != 0 {
		t.Errorf("stats %+v, want %d exchanges and no loss", s, total)
	}
	t.Logf("%d calls, stats %+v, %d connections", total, s, len(r.record))

	// The same bytes cut at every byte boundary give the same result.
	whole, ws := r.replay(0)
	bytewise, bs := r.replay(1)
	if !maps.Equal(whole, bytewise) || ws != bs || ws.Exchanges != uint64(total) {
		t.Errorf("byte-at-a-time replay differs: %+v vs %+v", bs, ws)
	}
}

// The parser joins a gRPC connection after N calls: every stream it can
// not decode is counted, and none is given a wrong method or status.
func TestGRPCJoinedMidConnection(t *testing.T) {
	r := newRelay(t, startGRPC(t), false)
	conn, err := grpc.NewClient(r.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cl := testpb.NewTestServiceClient(conn)
	ctx := context.Background()
	var calls []string // by call order; stream id 2k+1 is call k
	call := func(k int) {
		c := []codes.Code{codes.OK, codes.NotFound, codes.Internal}[k%3]
		var err error
		m := "UnaryCall"
		if k%4 == 3 {
			m = "EmptyCall"
			_, err = cl.EmptyCall(ctx, &testpb.Empty{})
		} else {
			_, err = cl.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: echo(c)})
		}
		calls = append(calls, fmt.Sprintf("POST %s%s 200 %d", svc, m, status.Code(err)))
	}
	const before, after = 20, 30
	for k := 0; k < before; k++ {
		call(k)
	}
	r.feed.Store(true)
	for k := before; k < before+after; k++ {
		call(k)
	}
	conn.Close()
	r.wait()
	s := r.stats
	for _, e := range r.exs {
		var sid int
		var rest string
		fmt.Sscanf(e, "%d", &sid)
		rest = e[len(strconv.Itoa(sid))+1:]
		if k := (sid - 1) / 2; k < before || k >= len(calls) || calls[k] != rest {
			t.Errorf("exchange %q is not call %d", e, (sid-1)/2)
		}
	}
	if s.Streams != after || s.Exchanges+s.Undecodable != after || s.Undecodable == 0 {
		t.Errorf("stats %+v: want %d streams, each emitted correctly or counted undecodable", s, after)
	}
	t.Logf("joined after %d calls: %d exchanges decoded, %d undecodable, stats %+v", before, s.Exchanges, s.Undecodable, s)
}

// h2cServer serves routes with fixed statuses and counts what it served.
type h2cServer struct {
	mu     sync.Mutex
	served map[string]int // "method path status"
}

func (h *h2cServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := map[string]int{"/ok": 200, "/missing": 404, "/fail": 500, "/post": 201, "/h2load": 200}[r.URL.Path]
	if st == 0 {
		st = 400
	}
	n, _ := io.Copy(io.Discard, r.Body)
	w.Header().Set("content-type", "text/plain")
	w.WriteHeader(st)
	fmt.Fprintf(w, "read %d\n", n)
	h.mu.Lock()
	h.served[fmt.Sprintf("%s %s %d -1", r.Method, r.URL.Path, st)]++
	h.mu.Unlock()
}

func startH2C(t *testing.T) (string, *h2cServer) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &h2cServer{served: map[string]int{}}
	srv := &http.Server{Handler: h2c.NewHandler(h, &http2.Server{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), h
}

func TestH2CCurlAndH2load(t *testing.T) {
	for _, tool := range []string{"curl", "h2load"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install curl nghttp2-client): %v", tool, err)
		}
	}
	target, srv := startH2C(t)
	r := newRelay(t, target, true)
	base := "http://" + r.addr()

	// curl, one connection per transfer (curl 7.88 fails to reuse a
	// prior-knowledge connection: "Error in the HTTP2 framing layer"),
	// with query strings that must not reach the path.
	var urls []string
	for i := 0; i < 5; i++ {
		urls = append(urls, base+"/ok?token=s3cret", base+"/missing", base+"/fail")
	}
	curled := map[string]int{}
	for _, u := range urls {
		out, err := exec.Command("curl", "--http2-prior-knowledge", "-sS", "-o", "/dev/null", "-w", "%{http_code}", u).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", u, err)
		}
		curled[string(out)]++
	}
	if curled["200"] != 5 || curled["404"] != 5 || curled["500"] != 5 {
		t.Fatalf("curl saw %v", curled)
	}
	out, err := exec.Command("curl", "--http2-prior-knowledge", "-s", "-o", "/dev/null", "-w", "%{http_code}\n",
		"--data-binary", "@/etc/services", base+"/post").Output()
	if err != nil || string(out) != "201\n" {
		t.Fatalf("curl post: %v %q", err, out)
	}

	// h2load: 2000 requests over 4 connections, 10 streams at a time.
	out, err = exec.Command("h2load", "-n", "2000", "-c", "4", "-m", "10", base+"/h2load").CombinedOutput()
	if err != nil {
		t.Fatalf("h2load: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`).FindStringSubmatch(string(out))
	if m == nil || m[1] != "2000" {
		t.Fatalf("h2load did not report 2000 2xx:\n%s", out)
	}
	r.wait()

	srv.mu.Lock()
	want := maps.Clone(srv.served)
	srv.mu.Unlock()
	if want["GET /h2load 200 -1"] != 2000 || want["GET /ok 200 -1"] != 5 {
		t.Fatalf("server counted %v", want)
	}
	if !maps.Equal(r.counts, want) {
		t.Errorf("parser counts differ from the server's\n got %v\nwant %v", r.counts, want)
	}
	for k := range r.counts {
		if regexp.MustCompile(`s3cret|\?`).MatchString(k) {
			t.Errorf("query string kept: %q", k)
		}
	}
	if s := r.stats; s.Desyncs != 0 || s.Undecodable != 0 || s.Lost != 0 || s.Unfinished != 0 {
		t.Errorf("stats %+v", s)
	}
	whole, ws := r.replay(0)
	bytewise, bs := r.replay(1)
	if !maps.Equal(whole, bytewise) || ws != bs {
		t.Errorf("byte-at-a-time replay differs: %+v vs %+v", bs, ws)
	}
	t.Logf("server %v; stats %+v; keys %v", want, r.stats, slices.Sorted(maps.Keys(r.counts)))
}

// curl --http2 upgrades an HTTP/1.1 request (stream 1 of the new HTTP/2
// connection): every response is recorded with its real status.
func TestH2CUpgradeCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl is needed: %v", err)
	}
	target, srv := startH2C(t)
	r := newRelay(t, target, true)
	r.upgrade = true
	base := "http://" + r.addr()
	curled := map[string]int{}
	for i := 0; i < 4; i++ {
		for _, path := range []string{"/ok?k=v", "/missing", "/fail"} {
			out, err := exec.Command("curl", "--http2", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", base+path).Output()
			if err != nil {
				t.Fatalf("curl: %v", err)
			}
			curled[string(out)]++
		}
	}
	r.wait()
	if curled["200 2"] != 4 || curled["404 2"] != 4 || curled["500 2"] != 4 {
		t.Fatalf("curl saw %v (want HTTP/2 after the upgrade)", curled)
	}
	srv.mu.Lock()
	want := maps.Clone(srv.served)
	srv.mu.Unlock()
	if !maps.Equal(r.counts, want) {
		t.Errorf("parser counts differ from the server's\n got %v\nwant %v", r.counts, want)
	}
	if s := r.stats; s.Streams != 12 || s.Exchanges != 12 || s.Joined != 0 || s.Desyncs != 0 {
		t.Errorf("stats %+v", s)
	}
}

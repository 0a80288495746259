package capture

// The kernel's classifier (bpf/l7/classify.h, l7_classify) run on real
// programs' bytes through BPF_PROG_TEST_RUN (its classify_test socket
// filter, never attached): a connection open before the agent is decided as
// HTTP/2 at a call that starts with a chain of client frames, and no other
// protocol's bytes, cut at any offset, pass for HTTP/2.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// classifier is the kernel's l7_classify with every protocol on.
type classifier struct{ prog *ebpf.Program }

func loadClassifier(t *testing.T) *classifier {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	spec, err := loadL7()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables[l7VarProtoMask].Set(uint32(1<<protoMax - 1)); err != nil {
		t.Fatal(err)
	}
	var objs struct {
		P *ebpf.Program `ebpf:"classify_test"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatalf("loading classify_test: %v", err)
	}
	t.Cleanup(func() { objs.P.Close() })
	return &classifier{prog: objs.P}
}

// classify returns l7_classify's answer for a call that moved total bytes
// of which data is the captured prefix, in the request direction.
func (c *classifier) classify(t *testing.T, data []byte, total int, midstream bool) uint32 {
	t.Helper()
	// The socket filter's packet starts after an Ethernet header.
	in := make([]byte, 14+10+len(data))
	binary.LittleEndian.PutUint64(in[14:], uint64(total))
	in[22] = 1
	if midstream {
		in[23] = 1
	}
	copy(in[24:], data)
	ret, err := c.prog.Run(&ebpf.RunOptions{Data: in})
	if err != nil {
		t.Fatalf("running classify_test: %v", err)
	}
	if ret == 0xff {
		t.Fatalf("classify_test refused a record of %d bytes", len(data))
	}
	return ret
}

// recConn records every write of a client's connection: the calls the
// kernel sees in the request direction.
type recConn struct {
	net.Conn
	mu     *sync.Mutex
	writes *[][]byte
}

func (c recConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	*c.writes = append(*c.writes, bytes.Clone(b))
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// recorder hands out recording connections and keeps their writes.
type recorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (r *recorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return recConn{Conn: c, mu: &r.mu, writes: &r.writes}, nil
}

func (r *recorder) calls() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.writes...)
}

type classifyGRPC struct {
	testpb.UnimplementedTestServiceServer
}

func (classifyGRPC) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if c := codes.Code(req.GetResponseStatus().GetCode()); c != codes.OK {
		return nil, status.Error(c, "as asked")
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

func (classifyGRPC) FullDuplexCall(st grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		if _, err := st.Recv(); err != nil {
			return nil
		}
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, 100)}}); err != nil {
			return err
		}
	}
}

// grpcCalls are a grpc-go client's writes: unary calls of every size up to
// two frames, with statuses, and a bidirectional stream.
func grpcCalls(t *testing.T) [][]byte {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, classifyGRPC{})
	go s.Serve(ln)
	defer s.Stop()
	rec := &recorder{}
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
		return rec.dial(ctx, "tcp", a)
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := testpb.NewTestServiceClient(conn)
	ctx := context.Background()
	for i, size := range []int{0, 10, 1000, 3000, 17000, 40000} {
		code := []codes.Code{codes.OK, codes.NotFound, codes.Internal}[i%3]
		cl.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10, ResponseStatus: &testpb.EchoStatus{Code: int32(code)},
			Payload: &testpb.Payload{Body: make([]byte, size)}})
	}
	st, err := cl.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 50)}})
		st.Recv()
	}
	st.CloseSend()
	st.Recv()
	return rec.calls()
}

// http1Calls are net/http's writes: requests with binary and chunked
// bodies; over TLS (tls true) the ciphertext, handshake included.
func http1Calls(t *testing.T, tls bool) [][]byte {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	srv := httptest.NewUnstartedServer(h)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	defer srv.Close()
	rec := &recorder{}
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = rec.dial
	cl := &http.Client{Transport: tr}
	body := make([]byte, 20000)
	rand.Read(body)
	for _, req := range []func() (*http.Request, error){
		func() (*http.Request, error) { return http.NewRequest("GET", srv.URL+"/items/1?x=y", nil) },
		func() (*http.Request, error) {
			return http.NewRequest("POST", srv.URL+"/upload", bytes.NewReader(body))
		},
		func() (*http.Request, error) {
			// no length: chunked
			return http.NewRequest("PUT", srv.URL+"/chunked", struct{ *bytes.Reader }{bytes.NewReader(body[:5000])})
		},
	} {
		r, err := req()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cl.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	return rec.calls()
}

// postgresCalls are pgx's frontend messages as a client writes them: the
// startup, simple queries, and the extended protocol with binary values.
func postgresCalls(t *testing.T) [][]byte {
	var calls [][]byte
	var buf bytes.Buffer
	fe := pgproto3.NewFrontend(bytes.NewReader(nil), &buf)
	flush := func() {
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, bytes.Clone(buf.Bytes()))
		buf.Reset()
	}
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "postgres", "database": "shop"}})
	flush()
	fe.Send(&pgproto3.PasswordMessage{Password: "md5abcdef"})
	flush()
	fe.Send(&pgproto3.Query{String: "SELECT id, name FROM items WHERE id = 7"})
	flush()
	blob := make([]byte, 4000)
	rand.Read(blob)
	for i := 0; i < 4; i++ {
		fe.Send(&pgproto3.Parse{Name: "s" + strconv.Itoa(i), Query: "INSERT INTO blobs (id, data) VALUES ($1, $2)", ParameterOIDs: []uint32{20, 17}})
		id := make([]byte, 8)
		binary.BigEndian.PutUint64(id, uint64(i*257))
		fe.Send(&pgproto3.Bind{PreparedStatement: "s" + strconv.Itoa(i), ParameterFormatCodes: []int16{1, 1}, Parameters: [][]byte{id, blob[:1000*i+7]}, ResultFormatCodes: []int16{1}})
		fe.Send(&pgproto3.Describe{ObjectType: 'P'})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Sync{})
		flush()
	}
	fe.Send(&pgproto3.Terminate{})
	flush()
	return calls
}

// redisCalls are go-redis's writes to a real redis-server.
func redisCalls(t *testing.T) [][]byte {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("skipping: redis-server not installed (Debian redis-server; make deps)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	srv := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	rec := &recorder{}
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Dialer: rec.dial})
	defer rdb.Close()
	ctx := context.Background()
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(ctx).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer")
		}
	}
	val := make([]byte, 5000)
	rand.Read(val)
	for i := 0; i < 5; i++ {
		k := "key:" + strconv.Itoa(i)
		if err := rdb.Set(ctx, k, val[:1000*i+3], 0).Err(); err != nil {
			t.Fatal(err)
		}
		rdb.Get(ctx, k)
	}
	p := rdb.Pipeline()
	for i := 0; i < 20; i++ {
		p.HSet(ctx, "h", strconv.Itoa(i), val[i:i+40])
	}
	p.Exec(ctx)
	return rec.calls()
}

// kafkaCalls are franz-go's writes to kfake: metadata, produce with binary
// values, fetch.
func kafkaCalls(t *testing.T) [][]byte {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rec := &recorder{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.Dialer(rec.dial),
		kgo.ConsumeTopics("orders"), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	val := make([]byte, 4000)
	rand.Read(val)
	for i := 0; i < 10; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Key: []byte(strconv.Itoa(i)), Value: val[:300*i+1]}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for n := 0; n < 10 && ctx.Err() == nil; {
		n += cl.PollFetches(ctx).NumRecords()
	}
	return rec.calls()
}

// TestClassifyHTTP2Midstream: a grpc-go client's every call after its
// preface classifies as HTTP/2 on a connection open before the agent, and
// on no other connection; the preface on any.
func TestClassifyHTTP2Midstream(t *testing.T) {
	c := loadClassifier(t)
	calls := grpcCalls(t)
	if len(calls) < 10 {
		t.Fatalf("only %d writes recorded", len(calls))
	}
	// Where frames start: the writes that start on a boundary are the
	// calls a connection met mid-way is decided on (the others continue
	// a long DATA frame).
	boundary := map[int]bool{}
	var pos, next int // in the stream after the preface
	for i, call := range calls {
		b := call
		if i == 0 {
			b = bytes.TrimPrefix(b, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
		}
		boundary[i] = pos == next
		for end := pos + len(b); next+9 <= end; {
			h := b[next-pos:]
			next += 9 + (int(h[0])<<16 | int(h[1])<<8 | int(h[2]))
		}
		pos += len(b)
	}
	decided, starts := 0, 0
	for i, call := range calls {
		data := call[:min(len(call), 1024)]
		preface := bytes.HasPrefix(call, []byte("PRI * HTTP/2.0"))
		got := c.classify(t, data, len(call), true)
		if got == uint32(ProtoHTTP2) {
			decided++
		}
		if boundary[i] && !preface {
			starts++
			first := 9 + (int(call[0])<<16 | int(call[1])<<8 | int(call[2]))
			switch {
			case first < len(call) && first+9 > 1024:
				// the second header past the prefix: not decided on
			case first == len(call) && call[3] == 0:
				// one DATA frame: not decided on
			case got != uint32(ProtoHTTP2):
				t.Errorf("write %d (%d bytes, % x...): midstream: %#x, want HTTP/2", i, len(call), data[:min(len(data), 18)], got)
			}
		}
		want := uint32(0) // CLASS_NONE
		if preface {
			want = uint32(ProtoHTTP2)
		}
		if got := c.classify(t, data, len(call), false); got != want {
			t.Errorf("write %d (%d bytes): from the start: %#x, want %#x", i, len(call), got, want)
		}
	}
	t.Logf("%d writes, %d starting on a frame boundary: %d decided as HTTP/2 mid-way", len(calls), starts, decided)
	// Frame chains by hand: what must and must not pass.
	hdr := func(length int, typ, flags byte, sid uint32) []byte {
		b := []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, flags, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[5:], sid)
		return append(b, make([]byte, length)...)
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	wu := hdr(4, 8, 0, 0)
	wu[12] = 1 // an increment of 1
	for _, tc := range []struct {
		name  string
		b     []byte
		total int
		want  bool
	}{
		{"window update then headers", cat(wu, hdr(20, 1, 4, 7)), 0, true},
		{"ping ack", hdr(8, 6, 1, 0), 0, true},
		{"a data frame alone", hdr(9, 0, 0, 0x53), 0, false},
		{"an empty data frame without END_STREAM", cat(hdr(0, 0, 0, 3), hdr(4, 8, 0, 0)), 0, false},
		{"a window update of 0", cat(hdr(4, 8, 0, 0), hdr(10, 1, 4, 7)), 0, false},
		{"a reset with an unknown code", cat(func() []byte { b := hdr(4, 3, 0, 5); b[12] = 0x20; return b }(), hdr(10, 1, 4, 7)), 0, false},
		{"settings ack then rst", cat(hdr(0, 4, 1, 0), hdr(4, 3, 0, 9)), 0, true},
		{"headers and continuation", cat(hdr(10, 1, 0, 5), hdr(10, 9, 4, 5)), 0, true},
		{"headers then a data frame", cat(hdr(1006, 1, 4, 3), hdr(8, 0, 1, 3)), 0, true},
		// not shown enough: the next call may tell
		{"a long data frame past the call", hdr(16000, 0, 0, 3)[:1024], 5000, false},
		{"headers then a data frame past the prefix", cat(hdr(1015, 1, 4, 3), hdr(8, 0, 1, 3)), 0, false},
		{"data on an even stream", cat(hdr(10, 0, 0, 2), wu), 0, false},
		{"continuation first", cat(hdr(10, 9, 4, 5), wu), 0, false},
		{"headers on an even stream", hdr(10, 1, 4, 2), 0, false},
		{"push promise from a client", hdr(10, 5, 4, 3), 0, false},
		{"unknown type", hdr(10, 10, 0, 3), 0, false},
		{"data with a headers flag", hdr(10, 0, 4, 3), 0, false},
		{"settings ack with a payload", hdr(6, 4, 1, 0), 0, false},
		{"settings on a stream", hdr(6, 4, 0, 1), 0, false},
		{"rst of 5 bytes", hdr(5, 3, 0, 1), 0, false},
		{"reserved bit", hdr(4, 8, 0, 0x80000000), 0, false},
		{"over the frame size", hdr(16385, 0, 0, 1)[:100], 20000, false},
		{"headers without END_HEADERS, then not its continuation", cat(hdr(10, 1, 0, 5), wu), 0, false},
		{"continuation of another stream", cat(hdr(10, 1, 0, 5), hdr(10, 9, 4, 7)), 0, false},
		{"a stray continuation after a complete block", cat(hdr(10, 1, 4, 5), hdr(10, 9, 4, 5)), 0, false},
		{"the second header malformed", cat(wu, wu[:5], []byte{0x80, 0, 0, 0}), 0, false},
		{"a frame ending before the call without a next header", cat(wu, []byte("xyz")), 0, false},
	} {
		total := tc.total
		if total == 0 {
			total = len(tc.b)
		}
		data := tc.b[:min(len(tc.b), 1024)]
		if got := c.classify(t, data, total, true) == uint32(ProtoHTTP2); got != tc.want {
			t.Errorf("%s: HTTP/2 %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestClassifyMidstreamNotHTTP2: real clients' bytes of HTTP/1, TLS,
// PostgreSQL, Redis and Kafka, as calls starting at every offset of every
// write and of the concatenated stream (a read may start anywhere), on a
// connection open before the agent: none is HTTP/2.
func TestClassifyMidstreamNotHTTP2(t *testing.T) {
	c := loadClassifier(t)
	for _, src := range []struct {
		name  string
		calls func(*testing.T) [][]byte
	}{
		{"http1", func(t *testing.T) [][]byte { return http1Calls(t, false) }},
		{"tls", func(t *testing.T) [][]byte { return http1Calls(t, true) }},
		{"postgres", postgresCalls},
		{"redis", redisCalls},
		{"kafka", kafkaCalls},
	} {
		t.Run(src.name, func(t *testing.T) {
			calls := src.calls(t)
			stream := bytes.Join(calls, nil)
			if len(calls) < 3 || len(stream) < 2000 {
				t.Fatalf("recorded %d writes, %d bytes", len(calls), len(stream))
			}
			runs, bad := 0, 0
			check := func(what string, b []byte, total int) {
				runs++
				if got := c.classify(t, b[:min(len(b), 1024)], total, true); got == uint32(ProtoHTTP2) {
					if bad++; bad <= 5 {
						t.Errorf("%s (%d bytes, % x...) classified HTTP/2", what, total, b[:min(len(b), 18)])
					}
				}
			}
			for i, call := range calls {
				for k := 0; k < len(call); k++ {
					check(fmt.Sprintf("write %d from %d", i, k), call[k:], len(call)-k)
				}
			}
			// Reads of the stream at any offset, of random lengths.
			rng := mrand.New(mrand.NewPCG(1, 2))
			for k := 0; k < len(stream); k++ {
				n := min(len(stream)-k, 1+rng.IntN(8192))
				check(fmt.Sprintf("a read from %d", k), stream[k:k+n], n)
			}
			t.Logf("%d writes, %d bytes: %d calls classified, %d as HTTP/2", len(calls), len(stream), runs, bad)
		})
	}
}

// Command http2load is the HTTP/2 protocol's ground truth: a gRPC server
// (the interop TestService) and client, and an h2c server, each counting
// what it served or got. Every mode prints a JSON report on exit (servers
// on SIGTERM or SIGINT), so an end-to-end test compares the agent's numbers
// with exact ones.
//
//	http2load -grpc-listen 127.0.0.1:0 -addr-file /tmp/a     # gRPC server (h2c)
//	http2load -grpc-addr 127.0.0.1:5000 -workers 3           # gRPC client: the workload below
//	http2load -grpc-addr ... -hold /tmp/go -calls 20         # one connection: 20 calls, /tmp/go.ready, wait for /tmp/go, 20 more
//	http2load -h2c-listen 127.0.0.1:0 -addr-file /tmp/b      # h2c server: /ok 200, /missing 404, /fail 500
//	http2load -tls ...                                       # gRPC over TLS (h2 by ALPN): a self-signed
//	                                                         # certificate made at start; the client does not verify it
//
// Reports count "method code" for gRPC (method fully qualified without the
// leading slash, code as rpc.response.status_code names it) and
// "METHOD STATUS /path" for h2c.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// Report is what every mode prints.
type Report struct {
	PID    int            `json:"pid"`
	Counts map[string]int `json:"counts"`
	// Before counts the calls made before -hold's file appeared.
	Before map[string]int `json:"before,omitempty"`
	Errors int            `json:"errors"`
}

type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(k string) {
	c.mu.Lock()
	c.m[k]++
	c.mu.Unlock()
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func main() {
	grpcListen := flag.String("grpc-listen", "", "serve gRPC (h2c) on this address")
	h2cListen := flag.String("h2c-listen", "", "serve HTTP/2 (h2c, prior knowledge and upgrade) on this address")
	addrFile := flag.String("addr-file", "", "server: write the bound address here")
	grpcAddr := flag.String("grpc-addr", "", "client: the gRPC server")
	workers := flag.Int("workers", 2, "client: concurrent workers, on one connection")
	size := flag.Int("size", 0, "client: message size (requests and responses up to it; 0: small unary calls, 2000-byte streamed messages)")
	hold := flag.String("hold", "", "client: make -calls unary calls, wait until this file exists, make -calls more")
	calls := flag.Int("calls", 20, "client with -hold: calls before and after")
	flag.BoolVar(&useTLS, "tls", false, "gRPC over TLS (server: a self-signed certificate; client: not verified)")
	flag.Parse()
	switch {
	case *grpcListen != "":
		serveGRPC(*grpcListen, *addrFile)
	case *h2cListen != "":
		serveH2C(*h2cListen, *addrFile)
	case *grpcAddr != "" && *hold != "":
		holdClient(*grpcAddr, *hold, *calls)
	case *grpcAddr != "":
		workload(*grpcAddr, *workers, *size)
	default:
		log.Fatal("need -grpc-listen, -h2c-listen or -grpc-addr")
	}
}

// useTLS: gRPC over TLS, both ends.
var useTLS bool

// selfSigned makes a certificate for localhost and 127.0.0.1, valid a day.
func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func listen(addr, addrFile string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	if addrFile != "" {
		if err := os.WriteFile(addrFile+".tmp", []byte(ln.Addr().String()), 0o644); err != nil {
			log.Fatal(err)
		}
		os.Rename(addrFile+".tmp", addrFile)
	}
	return ln
}

func waitSignal() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
}

func report(r Report) {
	r.PID = os.Getpid()
	json.NewEncoder(os.Stdout).Encode(r)
}

// grpcServer implements the interop service; the request says which status
// to end with, DeadlineExceeded meaning "wait for the deadline". It counts
// what the handlers returned, as the server's own instrumentation would.
type grpcServer struct {
	testpb.UnimplementedTestServiceServer
	cnt *counter
}

const svc = "grpc.testing.TestService/"

func (s *grpcServer) done(method string, err error) error {
	s.cnt.add(method + " " + codeName(status.Code(err)))
	return err
}

func outcome(st *testpb.EchoStatus, ctx context.Context) error {
	switch c := codes.Code(st.GetCode()); c {
	case codes.OK:
		return nil
	case codes.DeadlineExceeded:
		<-ctx.Done()
		// The client cancels at its deadline and the server's own timer
		// fires at about the same moment (the server's deadline runs from
		// the request's arrival, so the client's cancel can arrive a little
		// before it): a call cancelled within 5 ms of its deadline missed
		// it — the agent's rule too (docs/http2.md).
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl.Add(-5*time.Millisecond)) {
			return status.Error(codes.DeadlineExceeded, "deadline exceeded")
		}
		return status.FromContextError(ctx.Err()).Err()
	default:
		return status.Error(c, st.GetMessage())
	}
}

func (s *grpcServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := outcome(req.GetResponseStatus(), ctx); err != nil {
		return nil, s.done(svc+"UnaryCall", err)
	}
	s.done(svc+"UnaryCall", nil)
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

func (s *grpcServer) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, st grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return s.done(svc+"StreamingOutputCall", err)
		}
	}
	return s.done(svc+"StreamingOutputCall", outcome(req.GetResponseStatus(), st.Context()))
}

func (s *grpcServer) StreamingInputCall(st grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	n := 0
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return s.done(svc+"StreamingInputCall", st.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)}))
		}
		if err != nil {
			return s.done(svc+"StreamingInputCall", err)
		}
		n += len(m.GetPayload().GetBody())
	}
}

func (s *grpcServer) FullDuplexCall(st grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return s.done(svc+"FullDuplexCall", nil)
		}
		if err != nil {
			return s.done(svc+"FullDuplexCall", err)
		}
		if m.GetResponseStatus().GetCode() != 0 {
			return s.done(svc+"FullDuplexCall", outcome(m.GetResponseStatus(), st.Context()))
		}
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, 64)}}); err != nil {
			return s.done(svc+"FullDuplexCall", err)
		}
	}
}

func serveGRPC(addr, addrFile string) {
	cnt := &counter{m: map[string]int{}}
	opts := []grpc.ServerOption{grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		cnt.add("_OTHER UNIMPLEMENTED")
		return status.Error(codes.Unimplemented, "unknown method")
	})}
	if useTLS {
		opts = append(opts, grpc.Creds(credentials.NewServerTLSFromCert(ptr(selfSigned()))))
	}
	s := grpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(s, &grpcServer{cnt: cnt})
	go s.Serve(listen(addr, addrFile))
	waitSignal()
	s.Stop()
	report(Report{Counts: cnt.snapshot()})
}

// codeNames are the status codes as rpc.response.status_code carries them.
var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "UNKNOWN"
}

func echo(c codes.Code) *testpb.EchoStatus {
	return &testpb.EchoStatus{Code: int32(c), Message: c.String()}
}

func ptr[T any](v T) *T { return &v }

func dial(addr string) *grpc.ClientConn {
	creds := insecure.NewCredentials()
	if useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		log.Fatal(err)
	}
	return conn
}

// workload makes every kind of call on one connection: unary (OK,
// NotFound, Internal, DeadlineExceeded), server-, client- and bidirectional
// streaming, and a method the server lacks.
func workload(addr string, workers, size int) {
	unarySize, streamSize := func(i int) int { return 10 * i }, 2000
	if size > 0 {
		unarySize, streamSize = func(i int) int { return size * i / 20 }, size
	}
	conn := dial(addr)
	cl := testpb.NewTestServiceClient(conn)
	cnt := &counter{m: map[string]int{}}
	add := func(method string, err error) { cnt.add(svc + method + " " + codeName(status.Code(err))) }
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unary := []codes.Code{codes.OK, codes.OK, codes.OK, codes.NotFound, codes.Internal}
			for i := 0; i < 20; i++ {
				_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: int32(unarySize(i)), ResponseStatus: echo(unary[i%len(unary)]),
					Payload: &testpb.Payload{Body: make([]byte, unarySize(20-i))}})
				add("UnaryCall", err)
			}
			for i := 0; i < 2; i++ {
				dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				_, err := cl.UnaryCall(dctx, &testpb.SimpleRequest{ResponseStatus: echo(codes.DeadlineExceeded)})
				cancel()
				add("UnaryCall", err)
			}
			for i := 0; i < 6; i++ {
				s, err := cl.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
					ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: int32(streamSize)}, {Size: 5}},
					ResponseStatus:     echo([]codes.Code{codes.OK, codes.NotFound}[i%2])})
				for err == nil {
					_, err = s.Recv()
				}
				if errors.Is(err, io.EOF) {
					err = nil
				}
				add("StreamingOutputCall", err)
			}
			for i := 0; i < 5; i++ {
				s, err := cl.StreamingInputCall(ctx)
				for j := 0; err == nil && j < 4; j++ {
					err = s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 100*j)}})
				}
				if err == nil {
					_, err = s.CloseAndRecv()
				}
				add("StreamingInputCall", err)
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
				add("FullDuplexCall", err)
			}
			for i := 0; i < 2; i++ {
				_, err := testpb.NewUnimplementedServiceClient(conn).UnimplementedCall(ctx, &testpb.Empty{})
				if status.Code(err) == codes.Unimplemented {
					cnt.add("_OTHER UNIMPLEMENTED")
				} else {
					cnt.add(fmt.Sprintf("unexpected %v", err))
				}
			}
		}()
	}
	wg.Wait()
	conn.Close()
	report(Report{Counts: cnt.snapshot()})
}

// holdClient makes calls on one connection before and after a file
// appears: the agent is started in between, on a connection already open.
func holdClient(addr, hold string, calls int) {
	conn := dial(addr)
	cl := testpb.NewTestServiceClient(conn)
	cnt := &counter{m: map[string]int{}}
	run := func() {
		for i := 0; i < calls; i++ {
			c := []codes.Code{codes.OK, codes.NotFound, codes.Internal}[i%3]
			_, err := cl.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseStatus: echo(c)})
			cnt.add(svc + "UnaryCall " + codeName(status.Code(err)))
		}
	}
	run()
	before := cnt.snapshot()
	if err := os.WriteFile(hold+".ready", nil, 0o644); err != nil {
		log.Fatal(err)
	}
	for {
		if _, err := os.Stat(hold); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cnt = &counter{m: map[string]int{}}
	run()
	// A new connection after the agent started: decoded from its start.
	conn2 := dial(addr)
	cl = testpb.NewTestServiceClient(conn2)
	fresh := &counter{m: map[string]int{}}
	for i := 0; i < calls; i++ {
		_, err := cl.UnaryCall(context.Background(), &testpb.SimpleRequest{ResponseStatus: echo(codes.OK)})
		fresh.add(svc + "UnaryCall " + codeName(status.Code(err)) + " new")
	}
	conn.Close()
	conn2.Close()
	counts := cnt.snapshot()
	for k, v := range fresh.snapshot() {
		counts[k] = v
	}
	report(Report{Counts: counts, Before: before})
}

// serveH2C serves fixed statuses over h2c (prior knowledge and Upgrade)
// and counts "METHOD STATUS /path".
func serveH2C(addr, addrFile string) {
	cnt := &counter{m: map[string]int{}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := map[string]int{"/ok": 200, "/missing": 404, "/fail": 500, "/h2load": 200}[r.URL.Path]
		if st == 0 {
			st = 400
		}
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "text/plain")
		w.WriteHeader(st)
		fmt.Fprintf(w, "read %d\n", n)
		cnt.add(fmt.Sprintf("%s %d %s %d", r.Method, st, r.URL.Path, r.ProtoMajor))
	})
	srv := &http.Server{Handler: h2c.NewHandler(h, &http2.Server{})}
	go srv.Serve(listen(addr, addrFile))
	waitSignal()
	srv.Close()
	report(Report{Counts: cnt.snapshot()})
}

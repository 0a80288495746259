package http2

import (
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
)

// grpcTraffic writes n unary gRPC exchanges on a warm connection, as
// grpc-go's encoders index them: after the first, every header is a
// dynamic-table reference.
type grpcTraffic struct {
	cl, sv *wire
	next   uint32
}

func newGRPCTraffic() *grpcTraffic {
	g := &grpcTraffic{cl: newWire(), sv: newWire(), next: 1}
	return g
}

func (g *grpcTraffic) batch(n int) []chunk {
	out := make([]chunk, 0, 2*n)
	for i := 0; i < n; i++ {
		sid := g.next
		g.next += 2
		g.cl.headers(sid, false, 0, 0, ":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall",
			":authority", "backend:50051", "content-type", "application/grpc", "user-agent", "grpc-go/1.85.0", "te", "trailers")
		g.cl.fr.WriteData(sid, true, make([]byte, 25))
		out = append(out, chunk{FromClient, g.cl.take()})
		g.sv.headers(sid, false, 0, 0, ":status", "200", "content-type", "application/grpc")
		g.sv.fr.WriteData(sid, false, make([]byte, 40))
		g.sv.headers(sid, true, 0, 0, "grpc-status", "0", "grpc-message", "")
		out = append(out, chunk{FromServer, g.sv.take()})
	}
	return out
}

// BenchmarkWarmGRPCExchange measures one unary gRPC exchange (request
// HEADERS+DATA in one call, response HEADERS+DATA+trailers in another) on a
// warm connection: frame reading, HPACK decoding, pairing and emitting.
func BenchmarkWarmGRPCExchange(b *testing.B) {
	g := newGRPCTraffic()
	var emitted int
	p := NewParser(ParserConfig{Emit: func(e *Exchange) { emitted++ }})
	warm := conversation(func(cl, sv *wire, out *[]chunk) {})
	for _, c := range warm {
		p.Feed(c.dir, c.data, uint64(len(c.data)), Times{})
	}
	for _, c := range g.batch(16) {
		p.Feed(c.dir, c.data, uint64(len(c.data)), Times{})
	}
	const batch = 4096
	chunks := g.batch(batch)
	bytes := 0
	for _, c := range chunks {
		bytes += len(c.data)
	}
	b.SetBytes(int64(bytes / batch))
	b.ReportAllocs()
	b.ResetTimer()
	j := 0
	for i := 0; i < b.N; i++ {
		if j == len(chunks) {
			b.StopTimer()
			chunks, j = g.batch(batch), 0
			b.StartTimer()
		}
		c, s := chunks[j], chunks[j+1]
		p.Feed(c.dir, c.data, uint64(len(c.data)), Times{Start: int64(i)})
		p.Feed(s.dir, s.data, uint64(len(s.data)), Times{End: int64(i)})
		j += 2
	}
	b.StopTimer()
	if st := p.Stats(); emitted != b.N+16 || st.Undecodable != 0 {
		b.Fatalf("emitted %d of %d, stats %+v", emitted, b.N+16, st)
	}
}

// TestWarmExchangeAllocs holds the benchmark's promise: no allocation per
// exchange once the connection is warm.
func TestWarmExchangeAllocs(t *testing.T) {
	g := newGRPCTraffic()
	n := 0
	p := NewParser(ParserConfig{Emit: func(e *Exchange) { n++ }})
	for _, c := range append(conversation(func(cl, sv *wire, out *[]chunk) {}), g.batch(16)...) {
		p.Feed(c.dir, c.data, uint64(len(c.data)), Times{})
	}
	chunks := g.batch(200)
	j := 0
	allocs := testing.AllocsPerRun(100, func() {
		c, s := chunks[j], chunks[j+1]
		p.Feed(c.dir, c.data, uint64(len(c.data)), Times{})
		p.Feed(s.dir, s.data, uint64(len(s.data)), Times{})
		j += 2
	})
	if allocs != 0 || n < 100 {
		t.Fatalf("%v allocations per warm exchange (%d emitted)", allocs, n)
	}
}

// BenchmarkJoinedUndecodableExchange measures the cost of a connection
// joined mid-way whose every request references entries made before the
// join: each stream is counted undecodable and the decoder table emptied.
func BenchmarkJoinedUndecodableExchange(b *testing.B) {
	g := newGRPCTraffic()
	g.batch(16) // the encoders index everything before the join
	p := NewParser(ParserConfig{Emit: func(e *Exchange) { b.Fatal("an undecodable stream was emitted") }})
	const batch = 4096
	chunks := g.batch(batch)
	b.ReportAllocs()
	b.ResetTimer()
	j := 0
	for i := 0; i < b.N; i++ {
		if j == len(chunks) {
			b.StopTimer()
			chunks, j = g.batch(batch), 0
			b.StartTimer()
		}
		c, s := chunks[j], chunks[j+1]
		p.Feed(c.dir, c.data, uint64(len(c.data)), Times{})
		p.Feed(s.dir, s.data, uint64(len(s.data)), Times{})
		j += 2
	}
	b.StopTimer()
	if st := p.Stats(); st.Undecodable != uint64(b.N) || st.Exchanges != 0 {
		b.Fatalf("stats %+v after %d", st, b.N)
	}
}

// nopSink is the cheapest layer: it only counts.
type nopSink struct{ n, drops int }

func (s *nopSink) Exchange(c *l7.Conn, x *l7.Exchange)   { s.n++ }
func (s *nopSink) Drop(c *l7.Conn, reason string, n int) { s.drops += n }

// httpTraffic is h2load's: GET on one path, 200 with a small body.
func httpBatch(cl, sv *wire, next *uint32, n int) []chunk {
	out := make([]chunk, 0, 2*n)
	for i := 0; i < n; i++ {
		sid := *next
		*next += 2
		cl.headers(sid, true, 0, 0, ":method", "GET", ":scheme", "http", ":path", "/users/42", ":authority", "backend:8080",
			"user-agent", "h2load nghttp2/1.52.0")
		out = append(out, chunk{FromClient, cl.take()})
		sv.headers(sid, false, 0, 0, ":status", "200", "content-type", "text/plain", "content-length", "9")
		sv.fr.WriteData(sid, true, make([]byte, 9))
		out = append(out, chunk{FromServer, sv.take()})
	}
	return out
}

// protoCase makes a connection's traffic: each call of traffic starts a
// new connection (its encoders' tables empty).
type protoCase struct {
	name    string
	role    l7.Role
	traffic func() func(n int) []chunk
}

func protoCases() []protoCase {
	return []protoCase{
		{"grpc-server", l7.RoleServer, func() func(int) []chunk { return newGRPCTraffic().batch }},
		{"http-client", l7.RoleClient, func() func(int) []chunk {
			cl, sv, next := newWire(), newWire(), uint32(1)
			return func(n int) []chunk { return httpBatch(cl, sv, &next, n) }
		}},
	}
}

// warmProtocol returns a protocol connection past its first exchanges, and
// its traffic.
func warmProtocol(tc protoCase, sink l7.Sink) (l7.Parser, func(int) []chunk) {
	batch := tc.traffic()
	proto := New(Options{Routes: &tableRouter{known: map[string]bool{"/users/{id}": true}}})
	p := proto.NewParser(&l7.Conn{ID: 1, PID: 1, Role: tc.role, Source: l7.SourceSyscall})
	for _, c := range append(conversation(func(cl, sv *wire, out *[]chunk) {}), batch(16)...) {
		p.Feed(&l7.Record{Dir: c.dir, Data: c.data, Total: uint64(len(c.data))}, sink)
	}
	return p, batch
}

// BenchmarkProtocolWarm measures one exchange through the layer's
// interface on a warm connection: frames, HPACK, pairing by stream id, and
// the conventions' attributes (route, rpc.method, server.address cached per
// connection).
func BenchmarkProtocolWarm(b *testing.B) {
	for _, tc := range protoCases() {
		b.Run(tc.name, func(b *testing.B) {
			sink := &nopSink{}
			p, traffic := warmProtocol(tc, sink)
			const batch = 4096
			chunks := traffic(batch)
			b.ReportAllocs()
			b.ResetTimer()
			j := 0
			var rec l7.Record
			for i := 0; i < b.N; i++ {
				if j == len(chunks) {
					b.StopTimer()
					chunks, j = traffic(batch), 0
					b.StartTimer()
				}
				for k := 0; k < 2; k++ {
					c := chunks[j+k]
					rec = l7.Record{Dir: c.dir, Data: c.data, Total: uint64(len(c.data)), Start: uint64(i), End: uint64(i)}
					p.Feed(&rec, sink)
				}
				j += 2
			}
			b.StopTimer()
			if sink.n != b.N+16 || sink.drops != 0 {
				b.Fatalf("%d exchanges of %d, %d drops", sink.n, b.N+16, sink.drops)
			}
		})
	}
}

// TestProtocolWarmAllocs: no allocation per exchange through the layer's
// interface once a connection is warm.
func TestProtocolWarmAllocs(t *testing.T) {
	for _, tc := range protoCases() {
		sink := &nopSink{}
		p, traffic := warmProtocol(tc, sink)
		chunks := traffic(200)
		j := 0
		var rec l7.Record
		allocs := testing.AllocsPerRun(100, func() {
			for k := 0; k < 2; k++ {
				c := chunks[j+k]
				rec = l7.Record{Dir: c.dir, Data: c.data, Total: uint64(len(c.data))}
				p.Feed(&rec, sink)
			}
			j += 2
		})
		if allocs != 0 || sink.n < 100 {
			t.Errorf("%s: %v allocations per warm exchange (%d emitted)", tc.name, allocs, sink.n)
		}
	}
}

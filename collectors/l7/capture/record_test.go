package capture

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
)

// dataRecord encodes a data_event through the generated type, so the
// decoder is checked against the kernel's layout, not against itself.
func dataRecord(t testing.TB, ev l7DataEvent, data []byte) []byte {
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, &ev); err != nil {
		t.Fatal(err)
	}
	return append(b.Bytes()[:DataHdrSize], data...)
}

func TestDecodeData(t *testing.T) {
	seg := []byte{5, 0, 0, 0, 4, 0, 't', 'a', 'i', 'l'}
	b := dataRecord(t, l7DataEvent{
		Type: TypeData, Dir: uint8(l7HttpDirDIR_READ), Role: RoleServer, Tgid: 7, Fd: 3,
		Captured: 5, StartNs: 11, EnterNs: 12, ExitNs: 13, Total: 9, ReqRecords: 4, RespRecords: 3, SegBytes: uint32(len(seg)),
		Proto: uint8(ProtoRedis), Source: uint8(l7.SourceOpenSSL),
	}, append([]byte("hello"), seg...))
	var r Record
	if err := Decode(b, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Read || r.Dir() != l7.ToServer || r.TGID != 7 || r.FD != 3 || string(r.Data) != "hello" || r.Total != 9 ||
		r.EnterNs != 12 || r.ExitNs != 13 || r.StartNs != 11 || r.ReqRecords != 4 || r.RespRecords != 3 || r.Proto != ProtoRedis || r.Source != l7.SourceOpenSSL {
		t.Fatalf("%+v", r)
	}
	if tail := Tail(r.Segs, r.Total); string(tail) != "tail" {
		t.Fatalf("tail %q", tail)
	}
	if tail := Tail(r.Segs, r.Total+1); tail != nil {
		t.Fatalf("a segment that does not end the call is no tail: %q", tail)
	}
	binary.LittleEndian.PutUint32(b[offData.captured:], 6+uint32(len(seg)))
	if err := Decode(b, &r); err == nil {
		t.Fatal("want an error for captured past the record")
	}
	if err := Decode([]byte{9}, &r); err == nil {
		t.Fatal("want an error for an unknown type")
	}
}

func TestDecodeConn(t *testing.T) {
	ev := l7ConnEvent{Type: TypeOpen, Role: RoleClient, Family: 2, Tgid: 9, Fd: 4, ReqRecords: 1, RespRecords: 2, StartNs: 5, TsNs: 6,
		PeerPort: 6379, LocalPort: 40000, Owner: 8, Proto: uint8(ProtoMySQL), Source: uint8(l7.SourceSyscall), Midstream: 1}
	ev.Peer[15] = 1
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, &ev); err != nil {
		t.Fatal(err)
	}
	if b.Len() != ConnEventSize {
		t.Fatalf("conn_event is %d bytes, the decoder reads %d", b.Len(), ConnEventSize)
	}
	var r Record
	if err := Decode(b.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Server() || r.TGID != 9 || r.FD != 4 || r.PeerPort != 6379 || r.LocalPort != 40000 || r.Owner != 8 || r.ReqRecords != 1 || r.RespRecords != 2 ||
		r.Proto != ProtoMySQL || !r.Midstream || r.Peer[15] != 1 || r.ExitNs != 6 {
		t.Fatalf("%+v", r)
	}
	if err := Decode(b.Bytes()[:ConnEventSize-1], &r); err == nil {
		t.Fatal("want an error for a short record")
	}
}

func TestProtoNames(t *testing.T) {
	for _, name := range []string{"http", "http2", "postgresql", "mysql", "redis", "memcached", "kafka"} {
		p, ok := ProtoByName(name)
		if !ok || p.String() != name {
			t.Errorf("ProtoByName(%q) = %v, %v", name, p, ok)
		}
	}
	if _, ok := ProtoByName("undecided"); ok {
		t.Error("undecided is no protocol")
	}
}

func TestParseNetTCP(t *testing.T) {
	v4 := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1
`
	tb := &netTable{established: map[uint64]tcpSocket{}, listening: map[uint16]bool{}}
	parseNetTCP([]byte(v4), false, tb)
	sk, ok := tb.established[1002]
	if !ok || !tb.listening[8080] || sk.localPort != 8080 || sk.peerPort != 0xD431 {
		t.Fatalf("table %+v", tb)
	}
	if want := [16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1}; sk.peer != want || sk.local != want {
		t.Fatalf("addresses %v %v", sk.local, sk.peer)
	}
}

func BenchmarkDecode(b *testing.B) {
	call := []byte("GET /users/12345?x=1 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")
	rec := dataRecord(b, l7DataEvent{Type: TypeData, Captured: uint32(len(call)), Total: uint64(len(call))}, call)
	var r Record
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := Decode(rec, &r); err != nil {
			b.Fatal(err)
		}
	}
}

package dns

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/dns/dnsmessage"
)

func response(id uint16, name string, t dnsmessage.Type, rcode dnsmessage.RCode, answers int) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RCode: rcode})
	b.EnableCompression()
	b.StartQuestions()
	n := dnsmessage.MustNewName(name)
	b.Question(dnsmessage.Question{Name: n, Type: t, Class: dnsmessage.ClassINET})
	b.StartAnswers()
	for i := range answers {
		b.AResource(dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: 1},
			dnsmessage.AResource{A: [4]byte{198, 18, 0, byte(i)}})
	}
	out, err := b.Finish()
	if err != nil {
		panic(err)
	}
	return out
}

func TestParseMessage(t *testing.T) {
	loop := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}
	binaryName := []byte{0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'a', 0x01, ' ', 0, 0, 16, 0, 1}
	tests := []struct {
		name     string
		in       []byte
		ok       bool
		id       uint16
		response bool
		qname    string
		qtype    dnsmessage.Type
		rcode    dnsmessage.RCode
		answers  uint16
	}{
		{"query A", buildQuery(0x1234, "web.otelbee.test.", dnsmessage.TypeA), true, 0x1234, false, "web.otelbee.test", dnsmessage.TypeA, 0, 0},
		{"mixed case kept", buildQuery(1, "WeB.OtelBee.TEST.", dnsmessage.TypeAAAA), true, 1, false, "WeB.OtelBee.TEST", dnsmessage.TypeAAAA, 0, 0},
		{"root", buildQuery(2, ".", dnsmessage.TypeNS), true, 2, false, ".", dnsmessage.TypeNS, 0, 0},
		{"answer", response(3, "a.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, 3), true, 3, true, "a.test", dnsmessage.TypeA, 0, 3},
		{"nxdomain", response(4, "nx.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, 0), true, 4, true, "nx.test", dnsmessage.TypeA, dnsmessage.RCodeNameError, 0},
		{"non-printable bytes", binaryName, true, 9, false, `a\001 `, dnsmessage.TypeTXT, 0, 0},
		{"not UTF-8", nameQuery(10, "caf\xc3\t\\\"\xff"), true, 10, false, `caf\195\t\\\"\255`, dnsmessage.TypeA, 0, 0},
		{"empty", nil, false, 0, false, "", 0, 0, 0},
		{"short header", []byte{0, 1, 1, 0, 0, 1}, false, 0, false, "", 0, 0, 0},
		{"question cut", buildQuery(5, "cut.otelbee.test.", dnsmessage.TypeA)[:18], false, 0, false, "", 0, 0, 0},
		{"compression loop", loop, false, 0, false, "", 0, 0, 0},
		{"no question", []byte{0, 6, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}, false, 0, false, "", 0, 0, 0},
		{"label past the end", []byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, 'x'}, false, 0, false, "", 0, 0, 0},
		{"reserved label type", []byte{0, 8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80, 'x', 0, 0, 1, 0, 1}, false, 0, false, "", 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m message
			err := parseMessage(tt.in, &m)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if m.id != tt.id || m.response != tt.response || string(m.Name()) != tt.qname ||
				m.qtype != tt.qtype || m.rcode != tt.rcode || m.answers != tt.answers {
				t.Errorf("got id=%d response=%v name=%q type=%v rcode=%v answers=%d", m.id, m.response, m.Name(), m.qtype, m.rcode, m.answers)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[dnsmessage.Type]string{dnsmessage.TypeA: "A", dnsmessage.TypeSRV: "SRV", 65: "HTTPS", 255: "ANY", 4242: "TYPE4242"} {
		if got := typeName(in); got != want {
			t.Errorf("typeName(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[dnsmessage.RCode]string{0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED", 15: "RCODE15"} {
		if got := rcodeName(in); got != want {
			t.Errorf("rcodeName(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestDecodeEvent(t *testing.T) {
	b := make([]byte, eventSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], 1000)
	le.PutUint64(b[8:], 400)
	le.PutUint64(b[16:], 77)
	le.PutUint32(b[24:], 4242)
	le.PutUint16(b[28:], 700)
	le.PutUint16(b[30:], 512)
	b[32+10], b[32+11], b[32+12] = 0xff, 0xff, 127
	le.PutUint16(b[64:], 53)
	le.PutUint16(b[66:], 40000)
	b[68], b[69] = 2, 17
	le.PutUint16(b[70:], 0xbeef)
	le.PutUint32(b[72:], 111)
	var ev event
	if err := decodeEvent(b, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.tsNs != 1000 || ev.queryTsNs != 400 || ev.cookie != 77 || ev.tgid != 4242 || ev.msgLen != 700 ||
		len(ev.data) != 512 || ev.saddr[12] != 127 || ev.sport != 53 || ev.dport != 40000 || ev.kind != 2 ||
		ev.transport != 17 || ev.id != 0xbeef || ev.errno != 111 || eventHeaderSize != 76 {
		t.Errorf("decoded %+v", ev)
	}
	le.PutUint16(b[30:], 9999) // a capture length past the record is clamped
	if err := decodeEvent(b[:100], &ev); err != nil || len(ev.data) != 24 {
		t.Errorf("clamped: %v, %d bytes", err, len(ev.data))
	}
	if err := decodeEvent(b[:71], &ev); err == nil {
		t.Error("short record decoded")
	}
}

// nameQuery is a query for one label of raw bytes, which dnsmessage's
// builder would refuse.
func nameQuery(id uint16, label string) []byte {
	b := []byte{byte(id >> 8), byte(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, byte(len(label))}
	b = append(b, label...)
	return append(b, 0, 0, 1, 0, 1)
}

// unescapeName inverts escapeName.
func unescapeName(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("dangling backslash in %q", s)
		}
		switch c := s[i+1]; {
		case c == 't':
			out = append(out, '\t')
		case c == 'r':
			out = append(out, '\r')
		case c == 'n':
			out = append(out, '\n')
		case c == '\\' || c == '"':
			out = append(out, c)
		case c >= '0' && c <= '2' && i+3 < len(s):
			v, err := strconv.Atoi(s[i+1 : i+4])
			if err != nil || v > 255 {
				return nil, fmt.Errorf("bad escape in %q", s)
			}
			out = append(out, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf("bad escape in %q", s)
		}
		i++
	}
	return out, nil
}

// FuzzParseMessage: whatever the bytes, parsing returns (never panics), and a
// parsed name is valid UTF-8 made only of printable ASCII (what an OTLP
// export needs), and it is exactly the name on the wire once unescaped.
func FuzzParseMessage(f *testing.F) {
	f.Add(nameQuery(3, "caf\xc3"))
	f.Add(nameQuery(4, "\x00\\\"\t\r\n\x7f\xff"))
	f.Add(buildQuery(1, "web.otelbee.test.", dnsmessage.TypeA))
	f.Add(response(2, "a.b.c.", dnsmessage.TypeAAAA, dnsmessage.RCodeNameError, 2))
	f.Add([]byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1})
	f.Add([]byte{0, 1, 1})
	f.Add([]byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m message
		if err := parseMessage(b, &m); err != nil {
			return
		}
		if m.nameLen > maxNameLen || m.nameLen == 0 {
			t.Fatalf("name length %d", m.nameLen)
		}
		name := m.Name()
		if !utf8.Valid(name) {
			t.Fatalf("name %q is not valid UTF-8", name)
		}
		for _, c := range name {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("name %q has byte %#x", name, c)
			}
		}
		// The wire name, as dnsmessage reads it, without its final dot.
		var p dnsmessage.Parser
		p.Start(b)
		q, _ := p.Question()
		wire := q.Name.Data[:q.Name.Length]
		if len(wire) > 1 && wire[len(wire)-1] == '.' {
			wire = wire[:len(wire)-1]
		}
		raw, err := unescapeName(string(name))
		if err != nil || !bytes.Equal(raw, wire) {
			t.Fatalf("name %q unescapes to %q (%v), the wire has %q", name, raw, err, wire)
		}
	})
}

func BenchmarkParseQuery(b *testing.B) {
	q := buildQuery(1, "service-42.namespace.svc.cluster.local.", dnsmessage.TypeAAAA)
	var m message
	b.ReportAllocs()
	b.SetBytes(int64(len(q)))
	for b.Loop() {
		if err := parseMessage(q, &m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponse(b *testing.B) {
	r := response(1, "service-42.namespace.svc.cluster.local.", dnsmessage.TypeA, 0, 4)
	var m message
	b.ReportAllocs()
	b.SetBytes(int64(len(r)))
	for b.Loop() {
		if err := parseMessage(r, &m); err != nil {
			b.Fatal(err)
		}
	}
}

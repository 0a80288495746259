package dns

import (
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// responder is a tiny authoritative DNS server for tests, over UDP and TCP
// on the same loopback port, built with dnsmessage. Names:
//   - nx.* answers NXDOMAIN, servfail.* SERVFAIL, silent.* never answers;
//   - anything else answers NOERROR with one record of the asked type
//     (A, AAAA, TXT, SRV, PTR, CNAME), or none for other types.
type responder struct {
	udp  *net.UDPConn
	tcp  *net.TCPListener
	port int

	mu       sync.Mutex
	answered int
}

func startResponder(t *testing.T) *responder {
	t.Helper()
	for range 20 {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err != nil {
			u.Close()
			continue
		}
		r := &responder{udp: u, tcp: l, port: port}
		t.Cleanup(func() { u.Close(); l.Close() })
		go r.serveUDP()
		go r.serveTCP()
		return r
	}
	t.Fatal("no free port for both UDP and TCP")
	return nil
}

func (r *responder) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

func (r *responder) serveUDP() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.udp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if out := answer(buf[:n]); out != nil {
			r.udp.WriteToUDP(out, from)
		}
	}
}

func (r *responder) serveTCP() {
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				msg := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, msg); err != nil {
					return
				}
				out := answer(msg)
				if out == nil {
					continue
				}
				framed := binary.BigEndian.AppendUint16(nil, uint16(len(out)))
				c.Write(append(framed, out...))
			}
		}()
	}
}

// answer builds the reply to query, or nil for no reply.
func answer(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.ToLower(q.Name.String())
	if strings.HasPrefix(name, "silent.") {
		return nil
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	switch {
	case strings.HasPrefix(name, "nx."):
		rh.RCode = dnsmessage.RCodeNameError
	case strings.HasPrefix(name, "servfail."):
		rh.RCode = dnsmessage.RCodeServerFailure
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	if rh.RCode == dnsmessage.RCodeSuccess {
		res := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
		target := dnsmessage.MustNewName("target.test.")
		switch q.Type {
		case dnsmessage.TypeA:
			b.AResource(res, dnsmessage.AResource{A: [4]byte{198, 18, 0, 9}})
		case dnsmessage.TypeAAAA:
			b.AAAAResource(res, dnsmessage.AAAAResource{AAAA: [16]byte{0xfd, 0, 15: 9}})
		case dnsmessage.TypeTXT:
			b.TXTResource(res, dnsmessage.TXTResource{TXT: []string{"v=test"}})
		case dnsmessage.TypeSRV:
			b.SRVResource(res, dnsmessage.SRVResource{Priority: 1, Weight: 1, Port: 5060, Target: target})
		case dnsmessage.TypePTR:
			b.PTRResource(res, dnsmessage.PTRResource{PTR: target})
		case dnsmessage.TypeCNAME:
			b.CNAMEResource(res, dnsmessage.CNAMEResource{CNAME: target})
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// buildQuery makes a query message for name and type with the given id.
func buildQuery(id uint16, name string, t dnsmessage.Type) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: t, Class: dnsmessage.ClassINET})
	out, err := b.Finish()
	if err != nil {
		panic(err)
	}
	return out
}

package capture

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/collectors/l7"
	tlsc "github.com/otelbee/otelbee/collectors/tls"
)

const (
	tlsChildEnv = "OTELBEE_TLS_CHILD"
	tlsRounds   = 20
	tlsRequest  = "GET /tls HTTP/1.1\r\nHost: x\r\n\r\n"
	tlsResponse = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
)

// tlsProbe counts the bytes of one process's connections whose plaintext
// came from Go's crypto/tls, by role and direction.
type tlsProbe struct {
	pid   uint32
	mu    sync.Mutex
	bytes [3][2]uint64
	other int // records of that process from another source
}

func (p *tlsProbe) Name() string { return "http" }
func (p *tlsProbe) Metrics(l7.Role) []l7.MetricSpec {
	return []l7.MetricSpec{{Name: "test.tls.duration", Unit: "s", Kind: l7.Duration}}
}
func (p *tlsProbe) NewParser(c *l7.Conn) l7.Parser { return &tlsParser{p: p, c: c} }

type tlsParser struct {
	p *tlsProbe
	c *l7.Conn
}

func (pp *tlsParser) Feed(r *l7.Record, _ l7.Sink) {
	if pp.c.PID != pp.p.pid {
		return
	}
	pp.p.mu.Lock()
	defer pp.p.mu.Unlock()
	if pp.c.Source != l7.SourceGoTLS {
		pp.p.other++
		return
	}
	pp.p.bytes[pp.c.Role][r.Dir] += r.Total
}
func (pp *tlsParser) Lost(l7.Dir, l7.Sink)  {}
func (pp *tlsParser) Close(uint64, l7.Sink) {}

// TestPrivilegedTLSGo: the Go crypto/tls data source end to end, on any
// kernel the matrix runs (the test binary is its own TLS program: a child
// of it makes a TLS connection to itself): the engine's attacher
// instruments the child's executable ((*Conn).Read entry and returns,
// Write entry), and every byte of the child's plaintext reaches the
// protocol with source gotls, on both ends, and none of its ciphertext.
func TestPrivilegedTLSGo(t *testing.T) {
	if os.Getenv(tlsChildEnv) != "" {
		tlsChild()
		return
	}
	child := exec.Command(os.Args[0], "-test.run=^TestPrivilegedTLSGo$")
	child.Env = append(os.Environ(), tlsChildEnv+"=1")
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); child.Process.Kill(); child.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("child: %q", lines.Text())
	}

	p := &tlsProbe{pid: uint32(child.Process.Pid)}
	var eng *Engine
	collectortest.Start(t, "http", func(d collectors.Deps) collectors.Collector {
		cfg := DefaultConfig()
		cfg.PickUpExisting = false
		cfg.TLS = tlsc.DefaultConfig()
		eng = NewEngine(d, cfg)
		// The child is this test binary: not an agent of its own.
		eng.SelfComms = []string{}
		c, err := NewCollector(eng, d, p)
		if err != nil {
			t.Fatal(err)
		}
		return &group{eng: eng, cols: []*Collector{c}}
	}, collectortest.Options{})
	if eng.tls == nil {
		t.Fatal("the TLS source did not start (see the log)")
	}
	// Found at the attacher's start (the child runs already): its file,
	// this test binary, is instrumented.
	if s := eng.tls.attacher.Stats(); s.Files == 0 {
		t.Fatalf("nothing instrumented: %+v", s)
	}
	fmt.Fprintln(stdin)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "done") {
		t.Fatalf("child: %q", lines.Text())
	}
	want := [3][2]uint64{}
	for _, role := range []l7.Role{l7.RoleClient, l7.RoleServer} {
		want[role][l7.ToServer] = tlsRounds * uint64(len(tlsRequest))
		want[role][l7.ToClient] = tlsRounds * uint64(len(tlsResponse))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		got, other := p.bytes, p.other
		p.mu.Unlock()
		if got == want && other == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("plaintext bytes by role and direction %v, want %v; %d records from another source", got, want, other)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tlsChild serves and fetches tlsRounds exchanges over one TLS connection
// to itself once a line arrives on stdin.
func tlsChild() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		panic(err)
	}
	in := bufio.NewReader(os.Stdin)
	fmt.Println("ready")
	in.ReadString('\n')
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, len(tlsRequest))
		for i := 0; i < tlsRounds; i++ {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write([]byte(tlsResponse))
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		panic(err)
	}
	buf := make([]byte, len(tlsResponse))
	for i := 0; i < tlsRounds; i++ {
		c.Write([]byte(tlsRequest))
		if _, err := io.ReadFull(c, buf); err != nil {
			panic(err)
		}
	}
	c.Close()
	fmt.Println("done")
	io.Copy(io.Discard, in)
}

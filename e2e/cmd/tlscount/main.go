// Command tlscount is an HTTPS server (Go net/http over crypto/tls, with a
// self-signed certificate it makes at start) that counts the TCP payload
// bytes it moves on each connection, TLS records included: the ground truth
// for the TCP collector's byte counts. On SIGINT it prints one JSON report.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type report struct {
	PID           int   `json:"pid"`
	Connections   int64 `json:"connections"`
	Closed        int64 `json:"closed"`
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	Requests      int64 `json:"requests"`
}

var sent, received, conns, closed, requests atomic.Int64

// countingConn counts what each read and write call on the socket returned.
type countingConn struct {
	net.Conn
	once sync.Once
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	received.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	sent.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	c.once.Do(func() { closed.Add(1) })
	return c.Conn.Close()
}

type countingListener struct{ net.Listener }

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	conns.Add(1)
	return &countingConn{Conn: c}, nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	ready := flag.String("ready-file", "", "file to write the bound address to")
	body := flag.Int("body", 1000, "response body bytes")
	flag.Parse()
	cert, err := selfSigned()
	if err != nil {
		log.Fatalf("making a certificate: %v", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	payload := strings.Repeat("x", *body)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			fmt.Fprint(w, payload)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(os.Stderr, "", 0),
	}
	go func() {
		if err := srv.ServeTLS(countingListener{ln}, "", ""); err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(ln.Addr().String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	srv.Close()
	json.NewEncoder(os.Stdout).Encode(report{PID: os.Getpid(), Connections: conns.Load(), Closed: closed.Load(),
		BytesSent: sent.Load(), BytesReceived: received.Load(), Requests: requests.Load()})
}

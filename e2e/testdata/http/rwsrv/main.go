// Command rwsrv is a Go net/http server for the HTTP e2e tests
// (e2e/http_realprog_test.go) in the shapes the collector cannot read over
// plain TCP: h2c (upgrade and prior knowledge), TLS, and HTTP/1 over a Unix
// domain socket. Every request is answered "hello <proto>" (500 on /err);
// on SIGTERM it prints one JSON line: requests per "PROTO METHOD path".
//
//	rwsrv h2c 127.0.0.1:PORT | tls 127.0.0.1:PORT | unix PATH
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
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
)

func main() {
	var (
		mu     sync.Mutex
		counts = map[string]int{}
	)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		counts[r.Proto+" "+r.Method+" "+r.URL.Path]++
		mu.Unlock()
		if r.URL.Path == "/err" {
			w.WriteHeader(500)
		}
		fmt.Fprintf(w, "hello %s\n", r.Proto)
	})
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
		<-ch
		mu.Lock()
		b, _ := json.Marshal(counts)
		mu.Unlock()
		fmt.Println(string(b))
		os.Exit(0)
	}()
	var (
		l   net.Listener
		err error
	)
	srv := &http.Server{Handler: mux}
	switch os.Args[1] {
	case "h2c":
		srv.Handler = h2c.NewHandler(mux, &http2.Server{})
		l, err = net.Listen("tcp", os.Args[2])
	case "tls":
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSigned()}}
		l, err = net.Listen("tcp", os.Args[2])
		if err == nil {
			l = tls.NewListener(l, srv.TLSConfig)
		}
	case "unix":
		os.Remove(os.Args[2])
		l, err = net.Listen("unix", os.Args[2])
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(l))
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

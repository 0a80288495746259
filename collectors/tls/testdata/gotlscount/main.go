// Command gotlscount makes a TLS connection to itself over loopback, once a
// line arrives on stdin: the client writes -n messages with
// crypto/tls.(*Conn).Write, the server reads until the end with
// (*Conn).Read. It prints how many times each was called, the ground truth
// the uprobe tests compare their counts with, and waits for stdin to close.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"
)

func main() {
	n := flag.Int("n", 10, "messages to write")
	flag.Parse()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		panic(err)
	}
	in := bufio.NewReader(os.Stdin)
	fmt.Println("ready")
	in.ReadString('\n')
	reads := make(chan int)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		buf := make([]byte, 1024)
		calls := 0
		for {
			calls++
			if _, err := c.Read(buf); err != nil {
				if err != io.EOF {
					fmt.Fprintln(os.Stderr, "read:", err)
				}
				break
			}
		}
		c.Close()
		reads <- calls
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		panic(err)
	}
	msg := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	for i := 0; i < *n; i++ {
		if _, err := c.Write(msg); err != nil {
			panic(err)
		}
	}
	c.Close()
	fmt.Printf("reads=%d writes=%d\n", <-reads, *n)
	io.Copy(io.Discard, in)
}

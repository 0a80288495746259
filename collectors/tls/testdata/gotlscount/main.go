// Command gotlscount makes a TLS connection to itself over loopback, once a
// line arrives on stdin: the client writes -n messages with
// crypto/tls.(*Conn).Write, the server reads until the end with
// (*Conn).Read. It prints how many times each was called, the ground truth
// the uprobe tests compare their counts with, and waits for stdin to close.
//
// With -grow each message is written from a new goroutine at a recursion
// depth of its own (0 to 47 frames), so that some Writes begin right at the
// end of their goroutine's stack: their stack check branches to morestack,
// which grows the stack and restarts Write from its entry. The starting
// stack is fixed (adaptivestackstart=0) for that to happen at the same
// depths in every run: it execs itself with GODEBUG=adaptivestackstart=0
// before anything else.
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
	"strings"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 10, "messages to write")
	grow := flag.Bool("grow", false, "write each message from a new goroutine at a depth of its own")
	flag.Parse()
	if *grow && !strings.Contains(os.Getenv("GODEBUG"), "adaptivestackstart=0") {
		env := append(os.Environ(), "GODEBUG=adaptivestackstart=0")
		panic(syscall.Exec("/proc/self/exe", os.Args, env))
	}
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
		write := func() {
			if _, err := c.Write(msg); err != nil {
				panic(err)
			}
		}
		if !*grow {
			write()
			continue
		}
		done := make(chan struct{})
		go func() {
			deep(i%48, write)
			close(done)
		}()
		<-done
	}
	c.Close()
	fmt.Printf("reads=%d writes=%d\n", <-reads, *n)
	io.Copy(io.Discard, in)
}

// deep calls f n frames down, each frame 64 bytes of its own and more.
//
//go:noinline
func deep(n int, f func()) byte {
	var pad [64]byte
	pad[n%64] = byte(n)
	if n == 0 {
		f()
		return pad[0]
	}
	return deep(n-1, f) + pad[n%64]
}

// Command httpload is the HTTP collector's ground truth: a net/http server
// that counts what it served, and a net/http client that runs a request plan
// and counts what it got back. Both print a JSON report on exit (the server
// on SIGTERM or SIGINT), so an end-to-end test can compare the agent's
// numbers with exact ones.
//
//	httpload -listen 127.0.0.1:0 -addr-file /tmp/addr          # server
//	httpload -url http://127.0.0.1:8080 -plan 'GET /users/1*5,POST /users/2*3,GET /fail' \
//	        -traceparent 00-...-01                              # client
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Report is what either side prints.
type Report struct {
	PID    int            `json:"pid"`
	Counts map[string]int `json:"counts"` // server: "METHOD STATUS ROUTE"; client: "METHOD STATUS"
	Errors int            `json:"errors"`
}

func main() {
	listen := flag.String("listen", "", "serve on this address")
	addrFile := flag.String("addr-file", "", "server: write the bound address here")
	url := flag.String("url", "", "client: base URL")
	plan := flag.String("plan", "", "client: comma-separated 'METHOD /path[*count]' steps, run in order")
	tp := flag.String("traceparent", "", "client: send this traceparent header")
	body := flag.Int("body", 0, "client: request body bytes for POST and PUT")
	cert := flag.String("cert", "", "server: serve HTTPS (HTTP/1.1) with this certificate (PEM)")
	key := flag.String("key", "", "server: the certificate's key (PEM)")
	flag.Parse()
	switch {
	case *listen != "":
		serve(*listen, *addrFile, *cert, *key)
	case *url != "":
		client(*url, *plan, *tp, *body)
	default:
		log.Fatal("need -listen or -url")
	}
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

func serve(addr, addrFile, cert, key string) {
	cnt := &counter{m: map[string]int{}}
	mux := http.NewServeMux()
	handle := func(pattern, route string, h func(w http.ResponseWriter, r *http.Request) int) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			st := h(w, r)
			rt := route
			if rt == "" {
				rt = r.URL.Path
			}
			cnt.add(fmt.Sprintf("%s %d %s", r.Method, st, rt))
		})
	}
	handle("/users/{id}", "/users/{id}", func(w http.ResponseWriter, r *http.Request) int {
		fmt.Fprintf(w, "user %s\n", r.PathValue("id"))
		return 200
	})
	handle("/fail", "/fail", func(w http.ResponseWriter, r *http.Request) int {
		http.Error(w, "failure", http.StatusInternalServerError)
		return 500
	})
	handle("/chunked", "/chunked", func(w http.ResponseWriter, r *http.Request) int {
		for i := 0; i < 4; i++ {
			w.Write([]byte(strings.Repeat("c", 200)))
			w.(http.Flusher).Flush()
		}
		return 200
	})
	handle("/hello", "/hello", func(w http.ResponseWriter, r *http.Request) int {
		w.Write([]byte("hello world\n"))
		return 200
	})
	handle("/", "", func(w http.ResponseWriter, r *http.Request) int {
		http.NotFound(w, r)
		return 404
	})
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
	srv := &http.Server{Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if cert != "" {
		// HTTP/1.1 only: a non-nil empty map turns off HTTP/2 over ALPN.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		go srv.ServeTLS(ln, cert, key)
	} else {
		go srv.Serve(ln)
	}
	<-ctx.Done()
	srv.Shutdown(context.Background())
	cnt.mu.Lock()
	defer cnt.mu.Unlock()
	json.NewEncoder(os.Stdout).Encode(Report{PID: os.Getpid(), Counts: cnt.m})
}

func client(base, plan, tp string, body int) {
	rep := Report{PID: os.Getpid(), Counts: map[string]int{}}
	tr := &http.Transport{MaxIdleConnsPerHost: 2, DisableCompression: true}
	if strings.HasPrefix(base, "https:") {
		// A test's self-signed certificate; HTTP/1.1 (with its own TLS
		// config the transport does not try HTTP/2).
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	c := &http.Client{Transport: tr}
	for _, step := range strings.Split(plan, ",") {
		step = strings.TrimSpace(step)
		if step == "" {
			continue
		}
		n := 1
		if i := strings.LastIndexByte(step, '*'); i > 0 {
			n, _ = strconv.Atoi(step[i+1:])
			step = step[:i]
		}
		method, path, _ := strings.Cut(step, " ")
		for i := 0; i < n; i++ {
			var rd io.Reader
			if body > 0 && (method == "POST" || method == "PUT") {
				rd = strings.NewReader(strings.Repeat("b", body))
			}
			req, err := http.NewRequest(method, base+path, rd)
			if err != nil {
				log.Fatal(err)
			}
			if tp != "" {
				req.Header.Set("Traceparent", tp)
			}
			resp, err := c.Do(req)
			if err != nil {
				rep.Errors++
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			rep.Counts[fmt.Sprintf("%s %d", method, resp.StatusCode)]++
		}
	}
	c.CloseIdleConnections()
	json.NewEncoder(os.Stdout).Encode(rep)
}

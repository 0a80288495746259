package httpc

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestParserRandomConversations builds random keep-alive conversations —
// pipelined batches, Content-Length and chunked bodies both ways, HEAD,
// 204/304, 100-continue — cuts both byte streams at random call
// boundaries, and checks that every request comes out exactly once with its
// method, path, status and body sizes.
func TestParserRandomConversations(t *testing.T) {
	methods := []string{"GET", "POST", "PUT", "HEAD", "DELETE", "PATCH"}
	total := 0
	defer func() { t.Logf("%d exchanges checked", total) }()
	for seed := uint64(0); seed < 300; seed++ {
		server := seed%2 == 0 // even seeds: a server reads requests; odd: a client writes them
		r := rand.New(rand.NewPCG(seed, 7))
		var want []string
		type batch struct{ reqs, resps []byte }
		var batches []batch
		for b := 0; b < 1+r.IntN(5); b++ {
			var reqs, resps strings.Builder
			for i := 0; i < 1+r.IntN(4); i++ {
				m := methods[r.IntN(len(methods))]
				path := fmt.Sprintf("/p%d/%d", r.IntN(5), r.IntN(1000))
				reqBody := 0
				fmt.Fprintf(&reqs, "%s %s?q=%d HTTP/1.1\r\nHost: h\r\nX-Pad: %s\r\n", m, path, r.IntN(9), strings.Repeat("x", r.IntN(300)))
				if m == "POST" || m == "PUT" || m == "PATCH" {
					reqBody = r.IntN(2000)
					if r.IntN(2) == 0 {
						fmt.Fprintf(&reqs, "Content-Length: %d\r\n\r\n%s", reqBody, strings.Repeat("b", reqBody))
					} else {
						reqs.WriteString("Transfer-Encoding: chunked\r\n\r\n")
						writeChunked(&reqs, reqBody, r)
					}
				} else {
					reqs.WriteString("\r\n")
				}
				status := []int{200, 201, 204, 304, 404, 500}[r.IntN(6)]
				if r.IntN(5) == 0 {
					resps.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				}
				respBody := 0
				fmt.Fprintf(&resps, "HTTP/1.1 %d X\r\nServer: s\r\n", status)
				switch {
				case status == 204 || status == 304:
					resps.WriteString("\r\n")
				case m == "HEAD":
					fmt.Fprintf(&resps, "Content-Length: %d\r\n\r\n", 1+r.IntN(500))
				case r.IntN(2) == 0:
					respBody = r.IntN(5000)
					fmt.Fprintf(&resps, "Content-Length: %d\r\n\r\n%s", respBody, strings.Repeat("r", respBody))
				default:
					respBody = r.IntN(5000)
					resps.WriteString("Transfer-Encoding: chunked\r\n\r\n")
					writeChunked(&resps, respBody, r)
				}
				want = append(want, fmt.Sprintf("%s %s %d req=%d resp=%d", m, path, status, reqBody, respBody))
			}
			batches = append(batches, batch{[]byte(reqs.String()), []byte(resps.String())})
		}
		var got []string
		st := &Stats{}
		c := NewConn(server, st, func(ex *Exchange) {
			got = append(got, fmt.Sprintf("%s %s %d req=%d resp=%d", ex.Method, ex.Path, ex.Status, ex.ReqBody, ex.RespBody))
		})
		feed := func(read bool, b []byte) {
			for len(b) > 0 {
				n := 1 + r.IntN(len(b))
				if r.IntN(3) == 0 {
					n = min(len(b), 1+r.IntN(8)) // tiny calls too
				}
				c.Feed(read, b[:n], uint64(n), callTimes{1, 2})
				b = b[n:]
			}
		}
		for _, b := range batches {
			feed(server, b.reqs)
			feed(!server, b.resps)
		}
		c.Close()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("seed %d:\n got %q\nwant %q", seed, got, want)
		}
		total += len(got)
		if n := st.Malformed.Load() + st.Unpaired.Load() + st.Incomplete.Load() + st.Lost.Load(); n != 0 {
			t.Fatalf("seed %d: counted %d problems in a clean conversation", seed, n)
		}
	}
}

func writeChunked(b *strings.Builder, n int, r *rand.Rand) {
	for n > 0 {
		k := min(n, 1+r.IntN(700))
		fmt.Fprintf(b, "%x\r\n%s\r\n", k, strings.Repeat("c", k))
		n -= k
	}
	b.WriteString("0\r\n\r\n")
}

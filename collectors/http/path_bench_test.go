package httpc

import (
	"bytes"
	"testing"

	"github.com/otelbee/otelbee/collectors/l7/capture"
	"github.com/otelbee/otelbee/collectors/sampling"
)

// wrkRequest and goResponse are what bench/httpoverhead's wrk sends and its
// Go hello server answers, one read and one write each: the agent's metrics
// path per request is Data twice (parse, route, series, sampling, record).
var (
	wrkRequest = []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n")
	goResponse = []byte("HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 15:30:00 GMT\r\nContent-Length: 13\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, world\n")
	nginxReq   = []byte("GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:18081\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
	nginxResp  = []byte("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 15:30:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 615\r\nLast-Modified: Mon, 30 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6560a0b0-267\"\r\nAccept-Ranges: bytes\r\n\r\n<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n")
)

// BenchmarkRequestPath is the agent's user-space work per request on the
// metrics path at 1 % sampling, from the decoded records on: issue 15's
// "metrics path" item. (The ring read and Decode are BenchmarkDecode's.)
func BenchmarkRequestPath(b *testing.B) {
	for _, tc := range []struct {
		name      string
		req, resp []byte
		respTotal uint64
	}{
		{"go", wrkRequest, goResponse, uint64(len(goResponse))},
		{"nginx", nginxReq, nginxResp, uint64(bytes.Index(nginxResp, []byte("\r\n\r\n"))) + 4 + 615},
	} {
		b.Run(tc.name, func(b *testing.B) {
			// the agent's sampler (sampling.Parse: its own arithmetic for
			// a root span), not the SDK's
			sampler, _ := sampling.Parse("parentbased_traceidratio", "0.01")
			c, _ := unitCollector(b, sampler)
			st := c.cur
			c.cur = nil
			st.parser.Reset(true, &Stats{}, c.sinkFn)
			cc := &capture.Conn{State: st}
			req := &capture.Record{Read: true, Data: tc.req, Total: uint64(len(tc.req))}
			resp := &capture.Record{Read: false, Data: tc.resp, Total: tc.respTotal}
			b.ReportAllocs()
			ns := uint64(1000)
			for b.Loop() {
				req.EnterNs, req.ExitNs = ns, ns+1000
				resp.EnterNs, resp.ExitNs = ns+20000, ns+21000
				c.Data(cc, req)
				c.Data(cc, resp)
				ns += 50000
			}
			b.StopTimer()
			if got := c.recorded.Load(); got < uint64(b.N) {
				b.Fatalf("%d requests recorded for %d", got, b.N)
			}
		})
	}
}

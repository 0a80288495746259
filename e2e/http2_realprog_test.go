package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/e2e/harness"
)

// The HTTP/2 protocol of the L7 layer against real programs: grpc-go
// servers and clients built by the test, h2load, curl and Node's http2, with
// counts exact against what the programs themselves counted, on the server
// and the client side.

// h2Report is what e2e/cmd/http2load prints.
type h2Report struct {
	Counts map[string]int `json:"counts"`
	Before map[string]int `json:"before"`
	Errors int            `json:"errors"`
}

// h2Server starts http2load in a server mode ("grpc", "h2c", or "tls grpc"
// for gRPC over TLS) as a service and returns its
// address and a function that stops it and returns its report.
func h2Server(t *testing.T, service, mode string) (string, func() h2Report) {
	addr, stop, _ := h2ServerProcess(t, service, mode)
	return addr, stop
}

// h2ServerProcess is h2Server, with the server's process.
func h2ServerProcess(t *testing.T, service, mode string) (string, func() h2Report, *harness.Process) {
	t.Helper()
	bin := buildTool(t, "./e2e/cmd/http2load")
	addrFile := filepath.Join(t.TempDir(), "addr")
	args := []string{"-addr-file", addrFile}
	if m, ok := strings.CutPrefix(mode, "tls "); ok {
		mode, args = m, append(args, "-tls")
	}
	cmd := exec.Command(bin, append(args, "-"+mode+"-listen", "127.0.0.1:0")...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	p := harness.StartProcess(t, service, cmd)
	var addr string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil {
			addr = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen:\n%s", service, p.LogTail(20))
		}
	}
	return addr, func() h2Report {
		var r h2Report
		rpStop(t, p, &stdout, &r)
		return r
	}, p
}

// rpcCounts reads a call-duration metric's counts per "method code" for a
// service.
func rpcCounts(mfs map[string]*dto.MetricFamily, name, service string) map[string]int {
	return rpcCountsOf(mfs, name, func(l map[string]string) bool { return l["job"] == service })
}

// rpcCountsOf is rpcCounts for the series whose labels match.
func rpcCountsOf(mfs map[string]*dto.MetricFamily, name string, match func(map[string]string) bool) map[string]int {
	out := map[string]int{}
	if mf := mfs[name]; mf != nil {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if !match(l) {
				continue
			}
			if l["rpc_system_name"] != "grpc" {
				out["without rpc.system.name=grpc"]++
			}
			if n := m.GetHistogram().GetSampleCount(); n > 0 {
				out[l["rpc_method"]+" "+l["rpc_response_status_code"]] += int(n)
			}
		}
	}
	return out
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func h2Dropped(mfs map[string]*dto.MetricFamily, service string, kv ...string) float64 {
	return rpCounter(mfs, "otelbee_l7_exchanges_dropped", svc(service, append([]string{"protocol", "http2"}, kv...)...))
}

// TestHTTP2GRPC: a grpc-go server and client over h2c, every kind of call
// (unary; server, client and bidirectional streaming; OK, NOT_FOUND,
// INTERNAL, DEADLINE_EXCEEDED; a method the server lacks).
//   - one worker: every read and write fits the kernel's capture, and the
//     counts per rpc.method and rpc.response.status_code are the server's
//     own on the server side and the client's own on the client side;
//   - four workers multiplexed on the connection with messages up to
//     12,000 bytes: grpc-go batches frames of several calls into reads and
//     writes far longer than the capture's 4096-byte prefix, and the
//     kernel's frame walk keeps every header block: exact as well (before
//     the walk, 51 to 103 of 123 calls were recorded, the rest dropped).
func TestHTTP2GRPC(t *testing.T) {
	agent := harness.StartAgent(t, nil, "--collectors=http2")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	for _, tc := range []grpcCase{{"sequential", 1, 0, false}, {"multiplexed", 4, 12000, false}} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, agent, sfx) })
	}
}

// TestHTTP2GRPCTLS: TestHTTP2GRPC's programs over TLS (h2 by ALPN, a
// self-signed certificate): the plaintext comes from the Go crypto/tls
// uprobes on both ends, and the counts per rpc.method and
// rpc.response.status_code are the programs' own on each side, exactly.
func TestHTTP2GRPCTLS(t *testing.T) {
	harness.RequireRoot(t)
	agent := harness.StartAgent(t, nil, "--collectors=http2")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	for _, tc := range []grpcCase{{"sequential", 1, 0, true}, {"multiplexed", 4, 12000, true}} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, agent, sfx) })
	}
}

// grpcCase is one run of http2load's gRPC workload, server and client.
type grpcCase struct {
	name    string
	workers int
	size    int
	tls     bool
}

func (tc grpcCase) run(t *testing.T, agent *harness.Agent, sfx string) {
	server, client := "grpcsrv-"+tc.name+"-"+sfx, "grpccl-"+tc.name+"-"+sfx
	bin := buildTool(t, "./e2e/cmd/http2load")
	mode := "grpc"
	args := []string{"-grpc-addr", "", "-workers", strconv.Itoa(tc.workers), "-size", strconv.Itoa(tc.size)}
	if tc.tls {
		server, client = "grpcsrv-tls-"+tc.name+"-"+sfx, "grpccl-tls-"+tc.name+"-"+sfx
		mode = "tls grpc"
		args = append(args, "-tls")
	}
	addr, stop := h2Server(t, server, mode)
	if tc.tls {
		// The client lives for less than the agent takes to
		// instrument a new executable: the server, the same file,
		// has it instrumented already once its probes are on.
		waitUprobes(t, agent, bin)
	}
	args[1] = addr
	var cl h2Report
	if err := json.Unmarshal([]byte(runClient(t, client, append([]string{bin}, args...)...)), &cl); err != nil {
		t.Fatal(err)
	}
	sv := stop()
	total := sumCounts(cl.Counts)
	if total != tc.workers*41 || !equalCounts(sv.Counts, cl.Counts) {
		t.Fatalf("the programs disagree: server %v, client %v", sv.Counts, cl.Counts)
	}
	seen := func(mfs map[string]*dto.MetricFamily, metric, s string) int {
		return sumCounts(rpcCounts(mfs, metric, s)) + int(h2Dropped(mfs, s))
	}
	mfs := rpWait(t, agent, "the gRPC calls", func(mfs map[string]*dto.MetricFamily) bool {
		return seen(mfs, "rpc_server_call_duration_seconds", server) >= total &&
			seen(mfs, "rpc_client_call_duration_seconds", client) >= total
	})
	time.Sleep(time.Second) // anything extra would show up too
	mfs = rpScrape(t, agent.MetricsURL)
	for _, side := range []struct {
		metric, service string
		want            map[string]int
	}{{"rpc_server_call_duration_seconds", server, sv.Counts}, {"rpc_client_call_duration_seconds", client, cl.Counts}} {
		got := rpcCounts(mfs, side.metric, side.service)
		dropped := int(h2Dropped(mfs, side.service))
		if !equalCounts(got, side.want) || dropped != 0 {
			t.Errorf("%s\n got %v (%d dropped)\nwant %v", side.service, got, dropped, side.want)
		}
		for k, n := range got {
			if n > side.want[k] {
				t.Errorf("%s: %d calls recorded as %q, the program counted %d", side.service, n, k, side.want[k])
			}
		}
		if sumCounts(got)+dropped != total {
			t.Errorf("%s: %d recorded + %d dropped, want %d calls", side.service, sumCounts(got), dropped, total)
		}
		t.Logf("%s: %d of %d recorded, %d dropped", side.service, sumCounts(got), total, dropped)
		if n, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(side.service)); n != 0 {
			t.Errorf("%s: %d gRPC calls also recorded as HTTP", side.service, n)
		}
	}
	// The client's series name the server it called.
	if n, _ := rpHist(mfs, "rpc_client_call_duration_seconds", svc(client, "server_address", "127.0.0.1")); n != uint64(total) {
		t.Errorf("client calls with server.address=127.0.0.1: %d of %d", n, total)
	}
	// Errors as the gRPC conventions list them per side.
	for _, c := range []struct {
		metric, service, code, errorType string
	}{
		{"rpc_server_call_duration_seconds", server, "NOT_FOUND", ""},
		{"rpc_server_call_duration_seconds", server, "INTERNAL", "INTERNAL"},
		{"rpc_client_call_duration_seconds", client, "NOT_FOUND", "NOT_FOUND"},
		{"rpc_client_call_duration_seconds", client, "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"},
	} {
		all, _ := rpHist(mfs, c.metric, svc(c.service, "rpc_response_status_code", c.code))
		typed, _ := rpHist(mfs, c.metric, svc(c.service, "rpc_response_status_code", c.code, "error_type", c.errorType))
		if all == 0 || typed != all {
			t.Errorf("%s %s: %d of %d with error.type %q", c.service, c.code, typed, all, c.errorType)
		}
	}
}

// TestHTTP2H2load: h2load against a Go h2c server, 20,000 requests over 10
// connections, 10 streams at a time: exactly 20,000 on each side, all 200,
// network.protocol.version 2.
func TestHTTP2H2load(t *testing.T) {
	if _, err := exec.LookPath("h2load"); err != nil {
		t.Skip("skipping: h2load not installed (nghttp2-client)")
	}
	agent := harness.StartAgent(t, nil, "--collectors=http2")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	server, client := "h2csrv-"+sfx, "h2load-"+sfx
	addr, stop := h2Server(t, server, "h2c")
	out := runClient(t, client, "h2load", "-n", "20000", "-c", "10", "-m", "10", "http://"+addr+"/h2load")
	m := regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`).FindStringSubmatch(out)
	if m == nil || m[1] != "20000" {
		t.Fatalf("h2load did not report 20000 2xx:\n%s", out)
	}
	sv := stop()
	if sv.Counts["GET 200 /h2load 2"] != 20000 || len(sv.Counts) != 1 {
		t.Fatalf("server counted %v", sv.Counts)
	}
	match := func(s string) map[string]string {
		return svc(s, "http_response_status_code", "200", "network_protocol_version", "2", "http_request_method", "GET")
	}
	mfs := rpWait(t, agent, "the h2load requests", func(mfs map[string]*dto.MetricFamily) bool {
		s, _ := rpHist(mfs, "http_server_request_duration_seconds", match(server))
		c, _ := rpHist(mfs, "http_client_request_duration_seconds", match(client))
		return s >= 20000 && c >= 20000
	})
	time.Sleep(time.Second)
	mfs = rpScrape(t, agent.MetricsURL)
	s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
	c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
	s200, _ := rpHist(mfs, "http_server_request_duration_seconds", match(server))
	c200, _ := rpHist(mfs, "http_client_request_duration_seconds", match(client))
	if s != 20000 || c != 20000 || s200 != s || c200 != c {
		t.Errorf("server %d (%d 200 over HTTP/2), client %d (%d): want 20000", s, s200, c, c200)
	}
	for _, svcName := range []string{server, client} {
		if d := h2Dropped(mfs, svcName); d != 0 {
			t.Errorf("%s: %v streams dropped", svcName, d)
		}
	}
}

// TestHTTP2CurlAndNode: curl with prior knowledge, and Node's http2 server
// and client: every response with its real status, no query string.
func TestHTTP2CurlAndNode(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	node := nodeBin(t)
	agent := harness.StartAgent(t, nil, "--collectors=http2")
	sfx := strconv.Itoa(rand.IntN(1 << 30))

	t.Run("curl", func(t *testing.T) {
		server, client := "h2ccurl-srv-"+sfx, "h2ccurl-"+sfx
		addr, stop := h2Server(t, server, "h2c")
		var urls []string
		for i := 0; i < 4; i++ {
			for _, p := range []string{"/ok?token=s3cret", "/missing", "/fail"} {
				urls = append(urls, "http://"+addr+p)
			}
		}
		// One connection per transfer: curl 7.88 cannot reuse a
		// prior-knowledge connection ("Error in the HTTP2 framing layer").
		got := map[string]int{}
		for _, u := range urls {
			for k, v := range curlCounts(t, client, []string{"--http2-prior-knowledge"}, u) {
				got[k] += v
			}
		}
		sv := stop()
		if got["GET 200"] != 4 || got["GET 404"] != 4 || got["GET 500"] != 4 ||
			sv.Counts["GET 200 /ok 2"] != 4 || sv.Counts["GET 404 /missing 2"] != 4 || sv.Counts["GET 500 /fail 2"] != 4 {
			t.Fatalf("curl %v, server %v", got, sv.Counts)
		}
		checkHTTP2Statuses(t, agent, server, client, map[string]int{"200": 4, "404": 4, "500": 4})
	})

	t.Run("node", func(t *testing.T) {
		server, client := "h2node-srv-"+sfx, "h2node-"+sfx
		port := harness.FreePort(t)
		p, stdout := rpServer(t, server, fmt.Sprintf("127.0.0.1:%d", port), node, h2Testdata(t, "node_h2.js"), "server", strconv.Itoa(port))
		var cl map[string]int
		if err := json.Unmarshal([]byte(runClient(t, client, node, h2Testdata(t, "node_h2.js"), "client", strconv.Itoa(port), "25")), &cl); err != nil {
			t.Fatal(err)
		}
		var sv map[string]int
		rpStop(t, p, stdout, &sv)
		if cl["GET 200"] != 25 || cl["POST 200"] != 25 || sv["GET 404 /missing"] != 25 || sv["POST 200 /ok"] != 25 {
			t.Fatalf("client %v, server %v", cl, sv)
		}
		checkHTTP2Statuses(t, agent, server, client, map[string]int{"200": 50, "404": 25, "500": 25})
	})
}

func h2Testdata(t *testing.T, name string) string {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "e2e", "testdata", "http2", name)
}

// checkHTTP2Statuses: each side's HTTP/2 requests per status are want
// exactly, errors typed per side, nothing dropped.
func checkHTTP2Statuses(t *testing.T, agent *harness.Agent, server, client string, want map[string]int) {
	t.Helper()
	total := uint64(sumCounts(want))
	mfs := rpWait(t, agent, "the HTTP/2 requests", func(mfs map[string]*dto.MetricFamily) bool {
		s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
		c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
		return s >= total && c >= total
	})
	time.Sleep(500 * time.Millisecond)
	mfs = rpScrape(t, agent.MetricsURL)
	for st, n := range want {
		s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "http_response_status_code", st, "network_protocol_version", "2"))
		c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client, "http_response_status_code", st, "network_protocol_version", "2"))
		if s != uint64(n) || c != uint64(n) {
			t.Errorf("status %s: server %d, client %d, want %d", st, s, c, n)
		}
	}
	s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
	c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
	s5, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server, "error_type", "500"))
	c4, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client, "error_type", "404"))
	if s != total || c != total || s5 != uint64(want["500"]) || c4 != uint64(want["404"]) {
		t.Errorf("server %d (%d error.type 500), client %d (%d error.type 404), want %d", s, s5, c, c4, total)
	}
	for _, name := range []string{server, client} {
		if d := h2Dropped(mfs, name); d != 0 {
			t.Errorf("%s: %v streams dropped", name, d)
		}
	}
}

// TestHTTP2ConnectionBeforeAgent: the agent starts while a gRPC
// connection is open and warm (every header indexed): each of its 30 calls
// after the start is either recorded with its real method and status or
// dropped as undecodable, never misnamed, on both sides; a new
// connection's calls are exact.
func TestHTTP2ConnectionBeforeAgent(t *testing.T) {
	harness.RequireRoot(t)
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	server, client := "grpcold-srv-"+sfx, "grpcold-"+sfx
	addr, stop, sp := h2ServerProcess(t, server, "grpc")
	hold := filepath.Join(t.TempDir(), "go")
	cmd := exec.Command(buildTool(t, "./e2e/cmd/http2load"), "-grpc-addr", addr, "-hold", hold, "-calls", "30")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+client)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	p := harness.StartProcess(t, client, cmd)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(hold + ".ready"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client did not make its first calls:\n%s", p.LogTail(20))
		}
	}
	// matched by pid below: per-process instances (the option that keeps them)
	agent := harness.StartAgent(t, nil, "--collectors=http2", "--process.instance=pid")
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(60 * time.Second); err != nil {
		t.Fatalf("client: %v\n%s", err, p.LogTail(20))
	}
	var cl h2Report
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout.String())), &cl); err != nil {
		t.Fatal(err)
	}
	stop()
	const m = "grpc.testing.TestService/UnaryCall "
	after := map[string]int{} // calls after the start, old connection and new
	for k, v := range cl.Counts {
		after[strings.TrimSuffix(k, " new")] += v
	}
	if cl.Counts[m+"OK new"] != 30 || sumCounts(after) != 60 {
		t.Fatalf("client report %+v", cl)
	}
	// Processes that were running before the agent are matched by their
	// pid (the instance label): their service name is the identity
	// resolver's business, not this test's.
	for _, side := range []struct {
		metric, service string
		pid             int
	}{
		{"rpc_server_call_duration_seconds", server, sp.Cmd.Process.Pid},
		{"rpc_client_call_duration_seconds", client, p.Cmd.Process.Pid},
	} {
		ofPID := func(l map[string]string) bool { return strings.HasSuffix(l["instance"], ":"+strconv.Itoa(side.pid)) }
		var got map[string]int
		var job string
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(300 * time.Millisecond) {
			mfs := rpScrape(t, agent.MetricsURL)
			if got = rpcCountsOf(mfs, side.metric, ofPID); got[m+"OK"] >= 30 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s (pid %d): the new connection's calls did not arrive: %v", side.service, side.pid, got)
			}
		}
		time.Sleep(500 * time.Millisecond)
		mfs := rpScrape(t, agent.MetricsURL)
		got = rpcCountsOf(mfs, side.metric, ofPID)
		if mf := mfs[side.metric]; mf != nil {
			for _, s := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range s.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if ofPID(l) {
					job = l["job"]
				}
			}
		}
		if job != side.service {
			t.Logf("%s (pid %d) is exported as service %q", side.service, side.pid, job)
		}
		undecodable := h2Dropped(mfs, job, "reason", "undecodable")
		// The new connection's 30 OK are exact; of the old connection's 30,
		// whatever was recorded is what the client got, and the rest is
		// dropped as undecodable (their header blocks name entries of
		// the HPACK table from before the agent).
		old := map[string]int{}
		for k, v := range got {
			if k == m+"OK" {
				v -= 30
			}
			if v < 0 || v > cl.Counts[k] {
				t.Errorf("%s: %d calls recorded as %q, the client made %d on the old connection after the start (%v)", side.service, v, k, cl.Counts[k], got)
			}
			if v > 0 {
				old[k] = v
			}
		}
		// Every call on the old connection after the start is seen: the
		// kernel decides the connection as HTTP/2 at its first call that
		// is a chain of client frames (bpf/l7/classify.h).
		if n := sumCounts(old) + int(undecodable); n != 30 {
			t.Errorf("%s: %d old-connection calls recorded and %v undecodable, want 30 in all", side.service, sumCounts(old), undecodable)
		}
		if d := h2Dropped(mfs, job); d != undecodable {
			t.Errorf("%s: %v streams dropped, %v of them undecodable: want none other", side.service, d, undecodable)
		}
		t.Logf("%s: new connection %d OK; old connection: %v recorded, %v undecodable", side.service, got[m+"OK"]-old[m+"OK"], old, undecodable)
	}
}

// TestHTTP2Spans: a span per stream, named by the conventions, the child of
// the request's traceparent; gRPC server spans named by rpc.method, failed
// by the conventions' server codes.
func TestHTTP2Spans(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	harness.RequireRoot(t)
	col := harness.StartCollector(t)
	env := []string{"OTEL_TRACES_SAMPLER=always_on", "OTEL_BSP_SCHEDULE_DELAY=1000"}
	harness.StartAgent(t, env, "--collectors=http2", "--http.routes=/ok", "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	h2srv, curlSvc, gsrv, gcl := "h2span-srv-"+sfx, "h2span-curl-"+sfx, "grpcspan-srv-"+sfx, "grpcspan-cl-"+sfx
	addr, stop := h2Server(t, h2srv, "h2c")
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tp := []string{"--http2-prior-knowledge", "-H", "traceparent: 00-" + tid + "-" + sid + "-01"}
	got := curlCounts(t, curlSvc, tp, "http://"+addr+"/ok?x=1")
	for k, v := range curlCounts(t, curlSvc, tp, "http://"+addr+"/fail") {
		got[k] += v
	}
	if got["GET 200"] != 1 || got["GET 500"] != 1 {
		t.Fatalf("curl %v", got)
	}
	stop()
	gaddr, gstop := h2Server(t, gsrv, "grpc")
	var cl h2Report
	if err := json.Unmarshal([]byte(runClient(t, gcl, buildTool(t, "./e2e/cmd/http2load"), "-grpc-addr", gaddr, "-workers", "1")), &cl); err != nil {
		t.Fatal(err)
	}
	gstop()
	// This test's spans are told apart by the traceparent it sent, and the
	// gRPC server's by its service (other tests may run the same gRPC
	// test service on this host at the same time).
	byName := func(ss []harness.Span, kind string, mine func(harness.Span) bool) map[string][]harness.Span {
		out := map[string][]harness.Span{}
		for _, s := range ss {
			if s.Kind == kind && s.Scope == "github.com/otelbee/otelbee/collectors/l7/http2" && mine(s) {
				out[s.Name] = append(out[s.Name], s)
			}
		}
		return out
	}
	traced := func(s harness.Span) bool { return s.TraceID == tid }
	grpcTest := func(s harness.Span) bool {
		return s.Resource["service.name"] == gsrv && (strings.HasPrefix(s.Attributes["rpc.method"], "grpc.testing.") ||
			s.Attributes["rpc.method_original"] == "grpc.testing.UnimplementedService/UnimplementedCall")
	}
	const unary = "grpc.testing.TestService/UnaryCall"
	nUnary := cl.Counts[unary+" OK"] + cl.Counts[unary+" NOT_FOUND"] + cl.Counts[unary+" INTERNAL"] + cl.Counts[unary+" DEADLINE_EXCEEDED"]
	// Every span asserted below: all the gRPC server spans, not only the
	// unary ones (the streams' can come in a later export).
	spans := col.WaitForSpans(t, func(ss []harness.Span) bool {
		n := 0
		for _, l := range byName(ss, "Server", grpcTest) {
			n += len(l)
		}
		return len(byName(ss, "Server", traced)) == 2 && len(byName(ss, "Client", traced)) == 2 &&
			len(byName(ss, "Server", grpcTest)[unary]) == nUnary && n >= sumCounts(cl.Counts)
	}, 60*time.Second)
	time.Sleep(2 * time.Second) // nothing more may come
	spans, err := col.Spans()
	if err != nil {
		t.Fatal(err)
	}
	srv := byName(spans, "Server", traced)
	ok, fail := srv["GET /ok"], srv["GET"]
	if len(srv) != 2 || len(ok) != 1 || len(fail) != 1 {
		t.Fatalf("server spans %v", srv)
	}
	for _, s := range []harness.Span{ok[0], fail[0]} {
		if s.TraceID != tid || s.ParentSpanID != sid {
			t.Errorf("server span %q: trace %s parent %s, want the traceparent's %s %s", s.Name, s.TraceID, s.ParentSpanID, tid, sid)
		}
		if s.Attributes["network.protocol.version"] != "2" || s.Attributes["http.request.method"] != "GET" {
			t.Errorf("server span %q attributes %v", s.Name, s.Attributes)
		}
	}
	if ok[0].Attributes["http.route"] != "/ok" || ok[0].StatusCode == "Error" || fail[0].StatusCode != "Error" || fail[0].Attributes["error.type"] != "500" {
		t.Errorf("server spans: /ok %v %s, /fail %v %s", ok[0].Attributes, ok[0].StatusCode, fail[0].Attributes, fail[0].StatusCode)
	}
	if c := byName(spans, "Client", traced); len(c) != 2 || len(c["GET /ok"]) != 1 || len(c["GET /fail"]) != 1 {
		t.Errorf("client spans %v", c)
	}
	g := byName(spans, "Server", grpcTest)
	n := 0
	for _, l := range g {
		n += len(l)
	}
	if n != sumCounts(cl.Counts) {
		t.Errorf("%d gRPC server spans, the client made %d calls", n, sumCounts(cl.Counts))
	}
	failed := 0
	for _, s := range g[unary] {
		if s.Attributes["rpc.system.name"] != "grpc" || s.Attributes["rpc.method"] != unary {
			t.Errorf("gRPC span attributes %v", s.Attributes)
		}
		if s.StatusCode == "Error" {
			failed++
		}
	}
	// On the server, INTERNAL and DEADLINE_EXCEEDED fail the span, NOT_FOUND does not.
	if want := cl.Counts[unary+" INTERNAL"] + cl.Counts[unary+" DEADLINE_EXCEEDED"]; failed != want {
		t.Errorf("%d failed UnaryCall server spans, want %d", failed, want)
	}
	if len(g["grpc"]) != cl.Counts["_OTHER UNIMPLEMENTED"] {
		t.Errorf("%d spans of unknown methods named grpc, want %d", len(g["grpc"]), cl.Counts["_OTHER UNIMPLEMENTED"])
	}
}

// TestHTTP2CurlUpgrade: curl --http2 upgrades each connection from HTTP/1.1
// (Upgrade: h2c, answered 101) and makes its next requests over HTTP/2 on
// it. With the http and http2 collectors on, the kernel re-decides the
// connection at the 101 and the layer hands it from the HTTP/1 parser to
// the HTTP/2 one: every response is recorded once, with its real status
// and network.protocol.version=2 (the upgrade request as stream 1), none
// as a 101. (With --collectors=http alone the upgrade stays a 101:
// TestHTTPMethodsUpgradesAndUnseen/h2c.)
func TestHTTP2CurlUpgrade(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	agent := harness.StartAgent(t, nil, "--collectors=http,http2")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	server, client := "h2cup-srv-"+sfx, "h2cup-"+sfx
	addr, stop := h2Server(t, server, "h2c")
	got := map[string]int{}
	const conns = 4
	for i := 0; i < conns; i++ {
		// three transfers on one connection: the first upgrades it
		urls := []string{"http://" + addr + "/ok?token=s3cret", "http://" + addr + "/missing", "http://" + addr + "/fail"}
		if i%2 == 1 {
			urls[0], urls[2] = urls[2], urls[0]
		}
		addCounts(got, curlCounts(t, client, []string{"--http2"}, urls...))
	}
	sv := stop()
	// Go's h2c handler gives the upgrade request (stream 1) ProtoMajor 1
	served := func(k string) int { return sv.Counts[k+" 1"] + sv.Counts[k+" 2"] }
	if got["GET 200"] != conns || got["GET 404"] != conns || got["GET 500"] != conns ||
		served("GET 200 /ok") != conns || served("GET 404 /missing") != conns || served("GET 500 /fail") != conns {
		t.Fatalf("curl %v, server %v", got, sv.Counts)
	}
	want := map[string]int{"200": conns, "404": conns, "500": conns}
	total := uint64(3 * conns)
	v2 := func(mfs map[string]*dto.MetricFamily, metric, service string, kv ...string) uint64 {
		n, _ := rpHist(mfs, metric, svc(service, append([]string{"network_protocol_version", "2"}, kv...)...))
		return n
	}
	mfs := rpWait(t, agent, "the upgraded requests", func(mfs map[string]*dto.MetricFamily) bool {
		return v2(mfs, "http_server_request_duration_seconds", server) >= total &&
			v2(mfs, "http_client_request_duration_seconds", client) >= total
	})
	time.Sleep(500 * time.Millisecond) // anything extra would show up too
	mfs = rpScrape(t, agent.MetricsURL)
	for _, side := range []struct{ metric, service string }{
		{"http_server_request_duration_seconds", server}, {"http_client_request_duration_seconds", client},
	} {
		for st, n := range want {
			if got := v2(mfs, side.metric, side.service, "http_response_status_code", st); got != uint64(n) {
				t.Errorf("%s status %s: %d over HTTP/2, want %d", side.service, st, got, n)
			}
		}
		if all, _ := rpHist(mfs, side.metric, svc(side.service)); all != total {
			t.Errorf("%s: %d requests recorded, want %d (none as HTTP/1's 101)", side.service, all, total)
		}
		if d := h2Dropped(mfs, side.service); d != 0 {
			t.Errorf("%s: %v streams dropped", side.service, d)
		}
	}
}

// startH2Nginx is Debian's nginx serving HTTP/2 over TLS (`listen ... ssl
// http2`, ALPN h2) on loopback, /h2load answered 200 by nginx itself, with
// an access log of "METHOD URI STATUS PROTOCOL" lines.
func startH2Nginx(t *testing.T, service, cert, key string) *nginx {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	n := &nginx{Port: harness.FreePort(t), AccessLog: filepath.Join(dir, "access.log")}
	// keepalive_requests: h2load's 2,000 requests per connection on one
	// connection each (nginx's default of 1,000 would GOAWAY half way).
	n.proc = runNginx(t, dir, service, n.Port, nginxSetup{KeepEnv: true, HTTP: fmt.Sprintf(`
    log_format e2e '$request_method $uri $status $server_protocol';
    access_log %[1]s e2e;
    keepalive_requests 100000;
    ssl_certificate %[3]s;
    ssl_certificate_key %[4]s;
    server {
        listen 127.0.0.1:%[2]d ssl http2;
        location = /h2load { return 200 "ok\n"; }
        location = /ok { return 200 "ok\n"; }
        location = /missing { return 404 "missing\n"; }
    }`, n.AccessLog, n.Port, cert, key)})
	n.ServiceName = service
	return n
}

// h2AccessCounts reads startH2Nginx's access log as "METHOD STATUS URI PROTOCOL".
func h2AccessCounts(t *testing.T, n *nginx) map[string]int {
	t.Helper()
	b, err := os.ReadFile(n.AccessLog)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) == 4 {
			out[f[0]+" "+f[2]+" "+f[1]+" "+f[3]]++
		}
	}
	return out
}

// TestHTTP2H2loadTLS: h2load (nghttp2, Debian's libssl) against nginx with
// `listen ... ssl http2` (Debian's nginx and libssl), 20,000 requests over
// 10 connections, 10 streams at a time: the plaintext of both ends comes
// from the OpenSSL uprobes; nginx's side equals its access log, h2load's
// its own report, exactly, all with url.scheme=https (the client's with
// --http.client-url-scheme) and network.protocol.version=2.
func TestHTTP2H2loadTLS(t *testing.T) {
	harness.RequireRoot(t)
	for _, tool := range []string{"h2load", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
	agent := harness.StartAgent(t, nil, "--collectors=http2", "--http.client-url-scheme")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	server, client := "h2nginx-"+sfx, "h2load-tls-"+sfx
	cert, key := tlsCert(t)
	ng := startH2Nginx(t, server, cert, key)
	// nginx's libssl instrumented before the first request; h2load's is
	// the same file (the host's, pinned at the agent's start).
	waitLibUprobes(t, agent, ng.proc.Pid(), "libssl.so")
	out := runClient(t, client, "h2load", "-n", "20000", "-c", "10", "-m", "10", fmt.Sprintf("https://127.0.0.1:%d/h2load", ng.Port))
	m := regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`).FindStringSubmatch(out)
	if m == nil || m[1] != "20000" || !strings.Contains(out, "Application protocol: h2") {
		t.Fatalf("h2load did not report 20000 2xx over h2:\n%s", out)
	}
	// A second, small run: a status other than 200 on both sides.
	out = runClient(t, client, "h2load", "-n", "30", "-c", "1", "-m", "3", fmt.Sprintf("https://127.0.0.1:%d/missing", ng.Port))
	if m := regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx`).FindStringSubmatch(out); m == nil || m[3] != "30" {
		t.Fatalf("h2load did not report 30 4xx:\n%s", out)
	}
	var log map[string]int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		// nginx writes its log line after the response
		if log = h2AccessCounts(t, ng); sumCounts(log) >= 20030 || time.Now().After(deadline) {
			break
		}
	}
	if log["GET 200 /h2load HTTP/2.0"] != 20000 || log["GET 404 /missing HTTP/2.0"] != 30 || len(log) != 2 {
		t.Fatalf("nginx access log %v", log)
	}
	want := map[string]uint64{"200": 20000, "404": 30}
	match := func(s, status string) map[string]string {
		return svc(s, "http_response_status_code", status, "network_protocol_version", "2", "http_request_method", "GET", "url_scheme", "https")
	}
	mfs := rpWait(t, agent, "the h2load requests", func(mfs map[string]*dto.MetricFamily) bool {
		s, _ := rpHist(mfs, "http_server_request_duration_seconds", svc(server))
		c, _ := rpHist(mfs, "http_client_request_duration_seconds", svc(client))
		return s >= 20030 && c >= 20030
	})
	time.Sleep(time.Second) // anything extra would show up too
	mfs = rpScrape(t, agent.MetricsURL)
	for _, side := range []struct{ metric, service string }{
		{"http_server_request_duration_seconds", server}, {"http_client_request_duration_seconds", client},
	} {
		all, _ := rpHist(mfs, side.metric, svc(side.service))
		for st, n := range want {
			if got, _ := rpHist(mfs, side.metric, match(side.service, st)); got != n {
				t.Errorf("%s: %d %s over HTTP/2 with url.scheme=https, want %d", side.service, got, st, n)
			}
		}
		if all != 20030 {
			t.Errorf("%s: %d requests recorded, want 20030", side.service, all)
		}
		if d := h2Dropped(mfs, side.service); d != 0 {
			t.Errorf("%s: %v streams dropped", side.service, d)
		}
	}
}

// TestHTTP2SpansTLS: curl --http2 (Debian's libssl) against nginx `ssl
// http2`: each request is a server span (nginx) and a client span (curl),
// children of the request's traceparent, with url.scheme=https from the
// TLS data source (the client's with --http.client-url-scheme) and
// network.protocol.version=2.
func TestHTTP2SpansTLS(t *testing.T) {
	harness.RequireRoot(t)
	for _, tool := range []string{"curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
	col := harness.StartCollector(t)
	env := []string{"OTEL_TRACES_SAMPLER=always_on", "OTEL_BSP_SCHEDULE_DELAY=1000"}
	agent := harness.StartAgent(t, env, "--collectors=http2", "--http.routes=/ok", "--http.client-url-scheme",
		"--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")
	sfx := strconv.Itoa(rand.IntN(1 << 30))
	cert, key := tlsCert(t)
	ng := startH2Nginx(t, "h2span-nginx-"+sfx, cert, key)
	waitLibUprobes(t, agent, ng.proc.Pid(), "libssl.so")
	const tid, sid = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"
	base := fmt.Sprintf("https://127.0.0.1:%d", ng.Port)
	got := curlCounts(t, "h2span-curl-"+sfx, []string{"--http2", "--cacert", cert, "-H", "traceparent: 00-" + tid + "-" + sid + "-01"},
		base+"/ok?token=s3cret", base+"/missing")
	if got["GET 200"] != 1 || got["GET 404"] != 1 {
		t.Fatalf("curl %v", got)
	}
	mine := func(ss []harness.Span, kind string) map[string]harness.Span {
		out := map[string]harness.Span{}
		for _, s := range ss {
			if s.Kind == kind && s.TraceID == tid && s.Scope == "github.com/otelbee/otelbee/collectors/l7/http2" {
				out[s.Attributes["http.response.status_code"]] = s
			}
		}
		return out
	}
	col.WaitForSpans(t, func(ss []harness.Span) bool {
		return len(mine(ss, "Server")) == 2 && len(mine(ss, "Client")) == 2
	}, 60*time.Second)
	time.Sleep(2 * time.Second) // nothing more may come
	spans, err := col.Spans()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range spans {
		if s.TraceID == tid {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d spans of the trace, want 4 (a server and a client span per request)", n)
	}
	for _, kind := range []string{"Server", "Client"} {
		for st, name := range map[string]string{"200": "GET /ok", "404": "GET"} {
			s, ok := mine(spans, kind)[st]
			if kind == "Client" && st == "404" {
				name = "GET /missing"
			}
			if !ok || s.Name != name || s.Attributes["url.scheme"] != "https" || s.Attributes["network.protocol.version"] != "2" || s.ParentSpanID != sid && kind == "Server" {
				t.Errorf("%s span %s: %q %v parent %s, want %q with url.scheme https", kind, st, s.Name, s.Attributes, s.ParentSpanID, name)
			}
		}
	}
}

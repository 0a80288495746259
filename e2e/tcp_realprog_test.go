package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// progReport is what the test programs of e2e/testdata/tcp and tlscount
// print: their own counts, the ground truth.
type progReport struct {
	PID           int   `json:"pid"`
	Connections   int64 `json:"connections"`
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
}

func tcpTestdata(t *testing.T, name string) string {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "e2e", "testdata", "tcp", name)
}

// startProg runs a program with its own service name; wait returns its
// report (the last line of its output).
func startProg(t *testing.T, service string, argv ...string) (p *harness.Process, wait func() progReport) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	p = harness.StartProcess(t, service, cmd)
	return p, func() progReport {
		t.Helper()
		if err := p.Wait(120 * time.Second); err != nil {
			t.Fatalf("%s: %v", service, err)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		var r progReport
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
			t.Fatalf("parsing the report of %s %q: %v", service, stdout.String(), err)
		}
		return r
	}
}

func waitFile(t *testing.T, path string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// promCount is the number of series a selector matches (0 for none).
func promCount(t *testing.T, p *harness.Prometheus, sel string) float64 {
	t.Helper()
	s, err := p.Query(t.Context(), "count("+sel+") or vector(0)")
	if err != nil || len(s) != 1 {
		t.Fatalf("counting %s: %v %v", sel, s, err)
	}
	return s[0].Value
}

// TestTCPLateWriteRealPrograms: a server that writes after its client closed
// (issue 9 item 8; e2e/testdata/tcp/latewrite_server.py) keeps one inbound
// series with exact bytes, and gets no outbound series.
func TestTCPLateWriteRealPrograms(t *testing.T) {
	harness.RequireRoot(t)
	py := pythonBin(t)
	agent := harness.StartAgent(t, nil, "--collectors=tcp")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	suffix := strconv.Itoa(rand.IntN(1 << 30))
	srvSvc, cliSvc := "late-server-"+suffix, "late-client-"+suffix
	const n = 30
	ready := filepath.Join(t.TempDir(), "ready")
	_, waitServer := startProg(t, srvSvc, py, tcpTestdata(t, "latewrite_server.py"), strconv.Itoa(n), ready)
	addr := waitFile(t, ready, 10*time.Second)
	_, port, _ := net.SplitHostPort(addr)
	_, waitClient := startProg(t, cliSvc, py, tcpTestdata(t, "latewrite_client.py"), strconv.Itoa(n), addr)
	client, server := waitClient(), waitServer()
	t.Logf("server: %+v; client: %+v", server, client)

	in := fmt.Sprintf(`job=%q,otelbee_network_connection_direction="inbound",network_peer_address="127.0.0.1",server_port=%q`, srvSvc, port)
	out := fmt.Sprintf(`job=%q,otelbee_network_connection_direction="outbound",network_peer_address="127.0.0.1",server_port=%q`, cliSvc, port)
	for _, c := range []struct {
		q    string
		want float64
	}{
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{%s})`, in), n},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_closed_total{%s})`, in), n},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="transmit"})`, in), float64(server.BytesSent)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="receive"})`, in), float64(server.BytesReceived)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{%s})`, out), n},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="transmit"})`, out), float64(client.BytesSent)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="receive"})`, out), float64(client.BytesReceived)},
	} {
		waitProm(t, prom, c.q, c.want)
	}
	// Exactly one series per side: no outbound one with an ephemeral port.
	if got := promCount(t, prom, fmt.Sprintf(`otelbee_tcp_connection_opened_total{job=%q}`, srvSvc)); got != 1 {
		t.Errorf("server has %v TCP series, want 1 (inbound)", got)
	}
	if got := promCount(t, prom, fmt.Sprintf(`otelbee_tcp_connection_opened_total{job=%q}`, cliSvc)); got != 1 {
		t.Errorf("client has %v TCP series, want 1 (outbound)", got)
	}
}

// TestTCPHTTPSShortConnections: an HTTPS server (Go net/http, crypto/tls)
// answering many short curl connections. Each connection the client closes
// ends with the server's close_notify written to a peer that has gone
// (issue 9 item 8): still exactly one inbound series per client address,
// bytes exact against the server's own count of what it moved on the
// socket, and no outbound series.
func TestTCPHTTPSShortConnections(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipping: curl not installed")
	}
	agent := harness.StartAgent(t, nil, "--collectors=tcp")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	suffix := strconv.Itoa(rand.IntN(1 << 30))
	srvSvc, cliSvc := "tls-server-"+suffix, "tls-curl-"+suffix
	bin := buildTool(t, "./e2e/cmd/tlscount")
	ready := filepath.Join(t.TempDir(), "ready")
	srv, waitServer := startProg(t, srvSvc, bin, "-ready-file", ready, "-body", "5000")
	addr := waitFile(t, ready, 10*time.Second)
	_, port, _ := net.SplitHostPort(addr)
	const n = 60
	for range n {
		cmd := exec.Command("curl", "-sk", "-o", "/dev/null", "--fail", "https://"+addr+"/")
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+cliSvc)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
	}
	// Let the server finish its close_notify writes and closes.
	time.Sleep(500 * time.Millisecond)
	srv.Cmd.Process.Signal(os.Interrupt)
	server := waitServer()
	t.Logf("server: %+v", server)
	if server.Connections != n {
		t.Fatalf("server accepted %d connections, want %d", server.Connections, n)
	}
	in := fmt.Sprintf(`job=%q,otelbee_network_connection_direction="inbound",network_peer_address="127.0.0.1",server_port=%q`, srvSvc, port)
	for _, c := range []struct {
		q    string
		want float64
	}{
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{%s})`, in), n},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_closed_total{%s})`, in), n},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="transmit"})`, in), float64(server.BytesSent)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="receive"})`, in), float64(server.BytesReceived)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{job=%q,otelbee_network_connection_direction="outbound",server_port=%q})`, cliSvc, port), n},
	} {
		waitProm(t, prom, c.q, c.want)
	}
	if got := promCount(t, prom, fmt.Sprintf(`otelbee_tcp_connection_opened_total{job=%q}`, srvSvc)); got != 1 {
		t.Errorf("server has %v TCP series, want 1 (inbound from 127.0.0.1)", got)
	}
	if got := promCount(t, prom, fmt.Sprintf(`otelbee_tcp_connection_opened_total{job=%q,otelbee_network_connection_direction!="outbound"}`, cliSvc)); got != 0 {
		t.Errorf("curl has %v series that are not outbound", got)
	}
}

// TestTCPPeerFloodIsFoldedInKernel: one process connecting to 9,000
// distinct peer addresses (issue 17 item 4) keeps tcp.max_peers_per_process
// series of its own plus one _OTHER series, exactly counted, instead of
// filling the host's series table; a second pair of processes then still
// gets its exact series. The table is made smaller than the flood so that
// "it fills" does not depend on its default size.
func TestTCPPeerFloodIsFoldedInKernel(t *testing.T) {
	harness.RequireRoot(t)
	py := pythonBin(t)
	agent := harness.StartAgent(t, nil, "--collectors=tcp", "--tcp.max-series=4096")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)
	suffix := strconv.Itoa(rand.IntN(1 << 30))
	srvSvc, cliSvc := "flood-server-"+suffix, "flood-client-"+suffix
	const (
		peers    = 9000
		maxPeers = 100 // the default tcp.max_peers_per_process
	)
	ready := filepath.Join(t.TempDir(), "ready")
	_, waitServer := startProg(t, srvSvc, py, tcpTestdata(t, "flood_server.py"), strconv.Itoa(peers), ready)
	port := waitFile(t, ready, 10*time.Second)
	_, waitClient := startProg(t, cliSvc, py, tcpTestdata(t, "flood_client.py"), port, strconv.Itoa(peers))
	client, server := waitClient(), waitServer()
	t.Logf("flood client: %+v; server: %+v", client, server)

	// A second, ordinary pair afterwards.
	normSrv, normCli := "after-flood-server-"+suffix, "after-flood-client-"+suffix
	addr, stop := tcpServer(t, "", "127.0.0.1:0", normSrv)
	_, normPort, _ := net.SplitHostPort(addr)
	rep := tcpClient(t, "", normCli, "-addr", addr, "-n", "10", "-send", "3000", "-recv", "700")()
	normServer := stop()

	cli := fmt.Sprintf(`job=%q,otelbee_network_connection_direction="outbound",server_port=%q`, cliSvc, port)
	srv := fmt.Sprintf(`job=%q,otelbee_network_connection_direction="inbound",server_port=%q`, srvSvc, port)
	nOut := fmt.Sprintf(`job=%q,otelbee_network_connection_direction="outbound",server_port=%q`, normCli, normPort)
	nIn := fmt.Sprintf(`job=%q,otelbee_network_connection_direction="inbound",server_port=%q`, normSrv, normPort)
	for _, c := range []struct {
		q    string
		want float64
	}{
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{%s})`, cli), peers},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_closed_total{%s})`, cli), peers},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="transmit"})`, cli), float64(client.BytesSent)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="receive"})`, cli), float64(client.BytesReceived)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{%s,network_peer_address="_OTHER"})`, cli), peers - maxPeers},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{%s})`, srv), peers},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="receive"})`, srv), float64(server.BytesReceived)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="transmit"})`, srv), float64(server.BytesSent)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{%s})`, nOut), float64(rep.Connections)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="transmit"})`, nOut), float64(rep.BytesSent)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="receive"})`, nOut), float64(rep.BytesReceived)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_opened_total{%s})`, nIn), float64(normServer.Connections)},
		{fmt.Sprintf(`sum(otelbee_tcp_connection_io_bytes_total{%s,network_io_direction="receive"})`, nIn), float64(normServer.BytesReceived)},
	} {
		waitProm(t, prom, c.q, c.want)
	}
	if got := promCount(t, prom, fmt.Sprintf(`otelbee_tcp_connection_opened_total{%s}`, cli)); got != maxPeers+1 {
		t.Errorf("flood client has %v series, want %d peers and _OTHER", got, maxPeers+1)
	}
	// Agent-wide: no other process on the host folds peers meanwhile.
	if v, ok := promValue(t.Context(), prom, `sum(otelbee_tcp_peers_folded_total)`); !ok || v != peers-maxPeers {
		t.Errorf("otelbee_tcp_peers_folded_total = %v (ok %v), want %d", v, ok, peers-maxPeers)
	}
}

// scrapeSeries reads the agent's /metrics now and returns the samples of
// one metric whose labels contain every want pair.
func scrapeSeries(t *testing.T, url, metric string, want ...string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
lines:
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				continue lines
			}
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("parsing %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func sumValues(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

// TestTCPConnectionsOpenBeforeStart: keep-alive connections opened before
// the agent starts, with traffic flowing while it starts (issue 17 item 6),
// get their right inbound and outbound series, with exact bytes from then
// on, including a server write after the client closed; no other series.
func TestTCPConnectionsOpenBeforeStart(t *testing.T) {
	harness.RequireRoot(t)
	py := pythonBin(t)
	dir := t.TempDir()
	script := tcpTestdata(t, "keepalive.py")
	_, waitServer := startProg(t, "ka-server", py, script, "server", dir)
	port := waitFile(t, filepath.Join(dir, "port"), 10*time.Second)
	_, waitClient := startProg(t, "ka-client", py, script, "client", dir)
	waitFile(t, filepath.Join(dir, "connected"), 10*time.Second)

	agent := harness.StartAgent(t, nil, "--collectors=tcp")
	time.Sleep(time.Second)
	os.WriteFile(filepath.Join(dir, "pause"), nil, 0o644)
	waitFile(t, filepath.Join(dir, "paused"), 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	io := func(dir, which string) map[string]float64 {
		return scrapeSeries(t, agent.MetricsURL, "otelbee_tcp_connection_io_bytes_total",
			`otelbee_network_connection_direction="`+dir+`"`, `network_io_direction="`+which+`"`, `server_port="`+port+`"`)
	}
	before := map[string]float64{}
	for _, d := range []string{"inbound", "outbound"} {
		for _, w := range []string{"transmit", "receive"} {
			before[d+w] = sumValues(io(d, w))
		}
	}
	os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
	server, client := waitServer(), waitClient()
	t.Logf("after start: server %+v, client %+v", server, client)

	want := map[string]float64{
		"inboundtransmit":  float64(server.BytesSent),
		"inboundreceive":   float64(server.BytesReceived),
		"outboundtransmit": float64(client.BytesSent),
		"outboundreceive":  float64(client.BytesReceived),
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[string]float64{}
		for _, d := range []string{"inbound", "outbound"} {
			for _, w := range []string{"transmit", "receive"} {
				got[d+w] = sumValues(io(d, w)) - before[d+w]
			}
		}
		ok := true
		for k, v := range want {
			ok = ok && got[k] == v
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bytes moved after start: got %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Each side has exactly the series of its side of port: the server
	// one inbound, the client one outbound. The listening server is its
	// own instance (host:pid); the client, which does not listen, is its
	// service's folded instance on this host (docs/metrics.md "Instances").
	for _, p := range []struct {
		job, instance, dir string
	}{
		{"ka-server", fmt.Sprintf("%s:%d", hostname(), server.PID), "inbound"},
		{"ka-client", hostname() + ":ka-client", "outbound"},
	} {
		all := scrapeSeries(t, agent.MetricsURL, "otelbee_tcp_connection_io_bytes_total", fmt.Sprintf(`job=%q`, p.job), fmt.Sprintf(`instance=%q`, p.instance))
		for s := range all {
			if !strings.Contains(s, `otelbee_network_connection_direction="`+p.dir+`"`) || !strings.Contains(s, `server_port="`+port+`"`) {
				t.Errorf("%s (%s side of port %s) has the series %s", p.instance, p.dir, port, s)
			}
		}
		if len(all) != 2 {
			t.Errorf("%s: %d io series, want 2 (transmit and receive): %v", p.instance, len(all), all)
		}
	}
}

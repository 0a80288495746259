package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// startServer runs the server in-process on loopback and returns its address
// and a function that stops it and returns its report.
func startServer(t *testing.T, extra ...string) (string, func() *serverReport) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	c, err := parseFlags(append([]string{"-server", "-addr", "127.0.0.1:0", "-ready-file", ready}, extra...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type res struct {
		r   *serverReport
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := runServer(ctx, c, io.Discard)
		done <- res{r, err}
	}()
	var addr string
	deadline := time.Now().Add(5 * time.Second)
	for addr == "" {
		select {
		case r := <-done:
			t.Fatalf("server ended early: %v", r.err)
		default:
		}
		if b, err := os.ReadFile(ready); err == nil {
			addr = strings.TrimSpace(string(b))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server not ready after 5s")
		}
		time.Sleep(10 * time.Millisecond) // the ready file has no notification
	}
	stopped := false
	var final *serverReport
	stop := func() *serverReport {
		if !stopped {
			stopped = true
			cancel()
			r := <-done
			if r.err != nil {
				t.Fatalf("server: %v", r.err)
			}
			final = r.r
		}
		return final
	}
	t.Cleanup(func() { stop() })
	return addr, stop
}

func clientRun(t *testing.T, args ...string) (*clientReport, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"-client"}, args...), &out, &errb)
	var rep clientReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("client output %q (stderr %q): %v", out.String(), errb.String(), err)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("client printed %d lines, want exactly one JSON line", strings.Count(out.String(), "\n"))
	}
	return &rep, code
}

func TestExactCounts(t *testing.T) {
	addr, stop := startServer(t)
	t.Setenv("OTEL_SERVICE_NAME", "tcpload-test-client")
	rep, code := clientRun(t, "-addr", addr, "-n", "5", "-parallel", "2", "-send", "5000", "-recv", "20000",
		"-long", "-long.every", "50ms", "-long.for", "200ms", "-long.chunk", "300", "-refused", "3")
	if code != 0 || len(rep.Errors) != 0 {
		t.Fatalf("client exit %d, errors %v", code, rep.Errors)
	}
	const longChunks = 4
	wantSent := int64(5*5000 + headerLen + longChunks*300)
	wantRecv := int64(5*20000 + longChunks*300)
	if rep.Connections != 6 || rep.Exchanges != 6 || rep.ConnectionsFailed != 0 {
		t.Errorf("connections %d exchanges %d failed %d, want 6 6 0", rep.Connections, rep.Exchanges, rep.ConnectionsFailed)
	}
	if rep.BytesSent != wantSent || rep.BytesReceived != wantRecv {
		t.Errorf("client bytes sent/received %d/%d, want %d/%d", rep.BytesSent, rep.BytesReceived, wantSent, wantRecv)
	}
	if rep.Long == nil || rep.Long.Chunks != longChunks || rep.Long.BytesSent != headerLen+longChunks*300 ||
		rep.Long.BytesReceived != longChunks*300 || rep.Long.DurationMS < 200 {
		t.Errorf("long = %+v", rep.Long)
	}
	if rep.Refused != 3 || rep.RefusedAddr == "" || rep.RefusedAddr == addr {
		t.Errorf("refused %d at %q (server %s)", rep.Refused, rep.RefusedAddr, addr)
	}
	if rep.PID != os.Getpid() || rep.Service != "tcpload-test-client" || rep.Role != "client" {
		t.Errorf("identity = %d %q %q", rep.PID, rep.Service, rep.Role)
	}

	srv := stop()
	if len(srv.Errors) != 0 {
		t.Fatalf("server errors: %v", srv.Errors)
	}
	if srv.Connections != 6 || srv.Completed != 6 || srv.BytesReceived != wantSent || srv.BytesSent != wantRecv {
		t.Errorf("server = %+v, want 6 connections, received %d, sent %d", srv, wantSent, wantRecv)
	}
}

func TestServerExitsAfterConns(t *testing.T) {
	addr, stop := startServer(t, "-server.conns", "2")
	if rep, code := clientRun(t, "-addr", addr, "-n", "2", "-send", "16", "-recv", "0"); code != 0 {
		t.Fatalf("client: %v", rep.Errors)
	}
	srv := stop() // returns at once: the server ended by itself
	if srv.Connections != 2 || srv.Completed != 2 || srv.BytesReceived != 32 || srv.BytesSent != 0 {
		t.Errorf("server = %+v", srv)
	}
}

func TestLoadMode(t *testing.T) {
	addr, stop := startServer(t)
	rep, code := clientRun(t, "-addr", addr, "-rate", "200", "-duration", "500ms", "-send", "100", "-recv", "100")
	if code != 0 {
		t.Fatalf("client: %v", rep.Errors)
	}
	if rep.Load == nil || rep.Load.Launched != 100 || rep.Connections != 100 || rep.Exchanges != 100 {
		t.Fatalf("load = %+v, connections %d", rep.Load, rep.Connections)
	}
	if rep.Load.AchievedRate < 100 || rep.Load.LatencyMS["p50"] <= 0 || rep.Load.LatencyMS["max"] < rep.Load.LatencyMS["p99"] {
		t.Errorf("load = %+v", rep.Load)
	}
	if srv := stop(); srv.Connections != 100 || srv.BytesReceived != 100*100 {
		t.Errorf("server = %+v", srv)
	}
}

func TestProtocolViolation(t *testing.T) {
	addr, stop := startServer(t)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [headerLen]byte
	binary.BigEndian.PutUint64(hdr[0:8], 20) // 4 payload bytes...
	binary.BigEndian.PutUint64(hdr[8:16], 3)
	if _, err := conn.Write(append(hdr[:], "abcdEXTRA"...)); err != nil { // ...but 9 sent
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 3)); err != nil {
		t.Fatalf("read response: %v", err)
	}
	conn.Close()
	srv := stop()
	if len(srv.Errors) != 1 || !strings.Contains(srv.Errors[0], "more than S=20") {
		t.Errorf("server errors = %v, want one protocol error", srv.Errors)
	}
}

func TestRefusedPortNotClosed(t *testing.T) {
	addr, stop := startServer(t)
	defer stop()
	rep, code := clientRun(t, "-addr", addr, "-n", "0", "-refused", "2", "-refused.addr", addr)
	if code == 0 || rep.Refused != 0 || len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "is not closed") {
		t.Errorf("exit %d, refused %d, errors %v; want a failure naming the open port", code, rep.Refused, rep.Errors)
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-server", "-client"},
		{"-client", "-send", "15"},
		{"-client", "-addr", "nohostport"},
		{"-client", "-long", "-long.every", "0s"},
		{"-client", "-rate", "10", "-duration", "0s"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded", args)
		}
	}
}

// TestAcrossNetns runs server and client as separate processes in the two
// namespaces of a pair, as the e2e tests do, and checks the ground truth against
// the kernel's own counters.
func TestAcrossNetns(t *testing.T) {
	harness.RequireRoot(t)
	p := harness.NewNetnsPair(t, "tcpload")
	bin := filepath.Join(t.TempDir(), "tcpload")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	var srvOut bytes.Buffer
	srvCmd := harness.Command(p.B, bin, "-server", "-addr", net.JoinHostPort(p.IPv4B, "9000"), "-ready-file", ready, "-server.conns", "4")
	srvCmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=tcpload-server")
	srvCmd.Stdout, srvCmd.Stderr = &srvOut, os.Stderr
	srv := harness.StartProcess(t, "tcpload-server", srvCmd)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if ok, err := srv.Exited(); ok {
			t.Fatalf("server exited: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("server not ready after 10s")
		}
		time.Sleep(10 * time.Millisecond) // the ready file has no notification
	}
	beforeA, err := harness.Snmp(p.A)
	if err != nil {
		t.Fatal(err)
	}
	beforeB, err := harness.Snmp(p.B)
	if err != nil {
		t.Fatal(err)
	}

	cliCmd := harness.Command(p.A, bin, "-client", "-addr", net.JoinHostPort(p.IPv4B, "9000"), "-n", "3",
		"-send", "3000", "-recv", "70000", "-long", "-long.every", "100ms", "-long.for", "300ms", "-refused", "2")
	cliCmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=tcpload-client")
	var cliOut bytes.Buffer
	cliCmd.Stdout, cliCmd.Stderr = &cliOut, os.Stderr
	cli := harness.StartProcess(t, "tcpload-client", cliCmd)
	if err := cli.Wait(30 * time.Second); err != nil {
		t.Fatalf("client: %v; output %s", err, cliOut.String())
	}
	if err := srv.Wait(10 * time.Second); err != nil {
		t.Fatalf("server: %v; output %s", err, srvOut.String())
	}
	var c clientReport
	var s serverReport
	if err := json.Unmarshal(cliOut.Bytes(), &c); err != nil {
		t.Fatalf("client output %q: %v", cliOut.String(), err)
	}
	if err := json.Unmarshal(srvOut.Bytes(), &s); err != nil {
		t.Fatalf("server output %q: %v", srvOut.String(), err)
	}
	if c.PID != cli.Pid() || s.PID != srv.Pid() {
		t.Errorf("pids: client reports %d (process %d), server %d (process %d)", c.PID, cli.Pid(), s.PID, srv.Pid())
	}
	if c.Service != "tcpload-client" || s.Service != "tcpload-server" {
		t.Errorf("services %q %q", c.Service, s.Service)
	}
	if c.Connections != 4 || c.Refused != 2 || c.RefusedAddr != net.JoinHostPort(p.IPv4B, "9001") ||
		s.Connections != 4 || s.BytesReceived != c.BytesSent || s.BytesSent != c.BytesReceived ||
		c.BytesSent != 3*3000+headerLen+3*1000 || c.BytesReceived != 3*70000+3*1000 {
		t.Errorf("client %+v\nserver %+v", c, s)
	}

	afterA, err := harness.Snmp(p.A)
	if err != nil {
		t.Fatal(err)
	}
	afterB, err := harness.Snmp(p.B)
	if err != nil {
		t.Fatal(err)
	}
	if d := afterA["TcpActiveOpens"] - beforeA["TcpActiveOpens"]; d != 6 {
		t.Errorf("A: TcpActiveOpens +%d, want 6 (4 connections + 2 refused)", d)
	}
	if d := afterA["TcpAttemptFails"] - beforeA["TcpAttemptFails"]; d != 2 {
		t.Errorf("A: TcpAttemptFails +%d, want 2", d)
	}
	if d := afterB["TcpPassiveOpens"] - beforeB["TcpPassiveOpens"]; d != 4 {
		t.Errorf("B: TcpPassiveOpens +%d, want 4", d)
	}
}

// Command tcpload is the ground truth for otelbee's TCP collector tests: it makes
// TCP traffic whose connection and byte counts are known exactly, and prints
// them as one JSON line on standard output when it ends.
//
// Server (runs until SIGTERM/SIGINT, -server.conns exchanges, or -server.for):
//
//	tcpload -server -addr 198.18.0.2:9000 [-ready-file F] [-server.conns N]
//
// Client (N connections, each writing exactly -send bytes and reading exactly
// -recv bytes; see proto.go for the protocol):
//
//	tcpload -client -addr 198.18.0.2:9000 -n 10 -send 5000 -recv 20000 \
//	    [-parallel P] [-long -long.every 1s -long.for 12s -long.chunk 1000] [-refused 3]
//
// Load (short connections at a steady rate, bounded in count and time):
//
//	tcpload -client -addr 127.0.0.1:9000 -rate 500 -duration 10s [-parallel 64]
//
// Human-readable progress goes to standard error. The exit status is 0 only when
// every exchange matched its counts (and, with -refused, every connect was refused).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type config struct {
	server, client bool
	addr           string
	readyFile      string
	serverConns    int64
	serverFor      time.Duration

	n        int
	send     int64
	recv     int64
	parallel int
	timeout  time.Duration

	long      bool
	longEvery time.Duration
	longFor   time.Duration
	longChunk int64

	refused     int
	refusedAddr string

	rate     float64
	duration time.Duration
	max      int
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("tcpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.server, "server", false, "run the server: listen on -addr and answer each exchange")
	fs.BoolVar(&c.client, "client", false, "run the client against the server at -addr")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:9000", "server: listen address (port 0 picks one); client: server address")
	fs.StringVar(&c.readyFile, "ready-file", "", "server: once listening, write the bound address to this file (atomically)")
	fs.Int64Var(&c.serverConns, "server.conns", 0, "server: exit after this many connections have ended (0: run until signalled)")
	fs.DurationVar(&c.serverFor, "server.for", 10*time.Minute, "server: exit after this long at the latest")

	fs.IntVar(&c.n, "n", 1, "client: number of short connections")
	fs.Int64Var(&c.send, "send", 1000, "client: bytes the client writes on each connection, including the 16-byte header (>= 16)")
	fs.Int64Var(&c.recv, "recv", 1000, "client: bytes the server writes back on each connection")
	fs.IntVar(&c.parallel, "parallel", 0, "client: connections in flight at once (default 1, or 64 with -rate)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "I/O and connect timeout of one exchange")

	fs.BoolVar(&c.long, "long", false, "client: also keep one long connection that transfers a chunk each way every -long.every for -long.for")
	fs.DurationVar(&c.longEvery, "long.every", time.Second, "client: interval between the long connection's chunks")
	fs.DurationVar(&c.longFor, "long.for", 5*time.Second, "client: lifetime of the long connection")
	fs.Int64Var(&c.longChunk, "long.chunk", 1000, "client: bytes per chunk on the long connection, each way")

	fs.IntVar(&c.refused, "refused", 0, "client: also make this many connects to a closed port (each must be refused)")
	fs.StringVar(&c.refusedAddr, "refused.addr", "", "client: address for -refused (default: the -addr host on a port that is verified closed)")

	fs.Float64Var(&c.rate, "rate", 0, "client load mode: new connections per second (with -duration; replaces -n)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "client load mode: how long to keep opening connections")
	fs.IntVar(&c.max, "max", 100000, "client load mode: at most this many connections in total")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.server == c.client {
		return nil, errors.New("give exactly one of -server and -client")
	}
	if _, _, err := net.SplitHostPort(c.addr); err != nil {
		return nil, fmt.Errorf("-addr %q: %w", c.addr, err)
	}
	if c.client {
		switch {
		case c.send < headerLen:
			return nil, fmt.Errorf("-send %d: must be at least %d (the header is part of it)", c.send, headerLen)
		case c.send > maxBytes || c.recv < 0 || c.recv > maxBytes:
			return nil, fmt.Errorf("-send/-recv out of range")
		case c.n < 0 || c.refused < 0 || c.parallel < 0:
			return nil, errors.New("-n, -refused and -parallel must not be negative")
		case c.long && (c.longEvery <= 0 || c.longFor < c.longEvery || c.longChunk <= 0):
			return nil, errors.New("-long needs -long.every > 0, -long.for >= -long.every and -long.chunk > 0")
		case c.rate < 0 || (c.rate > 0 && (c.duration <= 0 || c.max <= 0)):
			return nil, errors.New("-rate needs -duration > 0 and -max > 0")
		case c.rate > 0 && c.rate > 100000:
			return nil, errors.New("-rate is limited to 100000 connections per second")
		}
		if c.parallel == 0 {
			c.parallel = 1
			if c.rate > 0 {
				c.parallel = 64
			}
		}
	}
	return c, nil
}

// errorList collects up to 20 error messages and counts the rest.
type errorList struct {
	mu      sync.Mutex
	msgs    []string
	dropped int
}

func (e *errorList) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.msgs) < 20 {
		e.msgs = append(e.msgs, fmt.Sprintf(format, args...))
	} else {
		e.dropped++
	}
}

func (e *errorList) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := slices.Clone(e.msgs)
	if e.dropped > 0 {
		out = append(out, fmt.Sprintf("... and %d more errors", e.dropped))
	}
	if out == nil {
		out = []string{}
	}
	return out
}

// serverReport is the server's ground truth.
type serverReport struct {
	Role          string   `json:"role"` // "server"
	PID           int      `json:"pid"`
	Service       string   `json:"service"` // $OTEL_SERVICE_NAME
	Addr          string   `json:"addr"`    // bound address
	Connections   int64    `json:"connections"`
	Completed     int64    `json:"completed"` // exchanges that ended without error
	BytesSent     int64    `json:"bytes_sent"`
	BytesReceived int64    `json:"bytes_received"`
	DurationMS    int64    `json:"duration_ms"`
	Errors        []string `json:"errors"`
}

func runServer(ctx context.Context, c *config, stderr io.Writer) (*serverReport, error) {
	start := time.Now()
	l, err := net.Listen("tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	rep := &serverReport{Role: "server", PID: os.Getpid(), Service: os.Getenv("OTEL_SERVICE_NAME"), Addr: l.Addr().String()}
	fmt.Fprintf(stderr, "tcpload: server listening on %s (pid %d)\n", rep.Addr, rep.PID)
	if c.readyFile != "" {
		if err := writeFileAtomic(c.readyFile, rep.Addr+"\n"); err != nil {
			l.Close()
			return nil, fmt.Errorf("ready file: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.serverFor)
	defer cancel()
	context.AfterFunc(ctx, func() { l.Close() })

	var (
		cnt      counters
		errs     errorList
		accepted atomic.Int64
		ended    atomic.Int64
		done     atomic.Int64
		wg       sync.WaitGroup
		connsMu  sync.Mutex
		conns    = map[net.Conn]struct{}{}
	)
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil {
				errs.add("accept: %v", err)
			}
			break
		}
		accepted.Add(1)
		connsMu.Lock()
		conns[conn] = struct{}{}
		connsMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := serveConn(countingConn{conn, &cnt}, c.timeout)
			conn.Close()
			connsMu.Lock()
			delete(conns, conn)
			connsMu.Unlock()
			if err != nil {
				errs.add("%s: %v", conn.RemoteAddr(), err)
			} else {
				done.Add(1)
			}
			if n := ended.Add(1); c.serverConns > 0 && n >= c.serverConns {
				cancel()
			}
		}()
	}
	// Give exchanges in flight a moment to finish, then cut them off.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		connsMu.Lock()
		for conn := range conns {
			conn.Close()
		}
		connsMu.Unlock()
		<-finished
	}
	rep.Connections = accepted.Load()
	rep.Completed = done.Load()
	rep.BytesSent = cnt.sent.Load()
	rep.BytesReceived = cnt.received.Load()
	rep.DurationMS = time.Since(start).Milliseconds()
	rep.Errors = errs.list()
	return rep, nil
}

func writeFileAtomic(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tcpload-ready-*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// clientReport is the client's ground truth. Byte counts are what crossed this
// process's sockets (headers included), so they equal what the kernel saw.
type clientReport struct {
	Role    string `json:"role"` // "client"
	PID     int    `json:"pid"`
	Service string `json:"service"` // $OTEL_SERVICE_NAME
	Server  string `json:"server"`

	Connections       int64 `json:"connections"`        // connects that succeeded (short + long)
	ConnectionsFailed int64 `json:"connections_failed"` // connects to the server that failed
	Exchanges         int64 `json:"exchanges"`          // exchanges that completed with exact counts
	BytesSent         int64 `json:"bytes_sent"`         // all connections, the long one included
	BytesReceived     int64 `json:"bytes_received"`
	PerConnection     struct {
		Sent     int64 `json:"sent"`
		Received int64 `json:"received"`
	} `json:"per_connection"` // what each short connection transfers

	// The kernel's smoothed RTT of each connection as it closed
	// (TCP_INFO): their sum in µs and how many.
	RTTSumUS   int64 `json:"rtt_sum_us"`
	RTTSamples int64 `json:"rtt_samples"`

	Long        *longReport `json:"long,omitempty"`
	Refused     int64       `json:"refused"`      // connects that were refused
	RefusedAddr string      `json:"refused_addr"` // where they went
	Load        *loadReport `json:"load,omitempty"`
	DurationMS  int64       `json:"duration_ms"`
	Errors      []string    `json:"errors"`
}

type longReport struct {
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	Chunks        int64 `json:"chunks"`
	DurationMS    int64 `json:"duration_ms"`
}

type loadReport struct {
	Rate         float64            `json:"rate"`          // target, connections per second
	Launched     int64              `json:"launched"`      // connections attempted
	AchievedRate float64            `json:"achieved_rate"` // launched per second of launch time
	LatencyMS    map[string]float64 `json:"latency_ms"`    // connect-to-close time of exchanges: p50, p90, p99, max
}

func runClient(ctx context.Context, c *config, stderr io.Writer) *clientReport {
	start := time.Now()
	rep := &clientReport{Role: "client", PID: os.Getpid(), Service: os.Getenv("OTEL_SERVICE_NAME"), Server: c.addr}
	rep.PerConnection.Sent, rep.PerConnection.Received = c.send, c.recv
	var (
		cnt       counters
		errs      errorList
		opened    atomic.Int64
		failed    atomic.Int64
		exchanges atomic.Int64
		rtt       rttStats
	)
	dialer := net.Dialer{Timeout: c.timeout}
	one := func(s, r, chunk int64, every time.Duration, c2 *counters, closeAt time.Time) error {
		conn, err := dialer.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			failed.Add(1)
			return fmt.Errorf("connect: %w", err)
		}
		opened.Add(1)
		counted := countingConn{rttConn{conn, &rtt}, &cnt}
		var w net.Conn = counted
		if c2 != nil {
			w = countingConn{counted, c2}
		}
		if err := exchange(w, s, r, chunk, every, c.timeout, closeAt); err != nil {
			return fmt.Errorf("%s: %w", conn.LocalAddr(), err)
		}
		exchanges.Add(1)
		return nil
	}

	// The long connection runs alongside everything else.
	var longWG sync.WaitGroup
	var longCnt counters
	if c.long {
		chunks := max(int64(c.longFor/c.longEvery), 1)
		rep.Long = &longReport{Chunks: chunks}
		longWG.Add(1)
		go func() {
			defer longWG.Done()
			t0 := time.Now()
			if err := one(headerLen+chunks*c.longChunk, chunks*c.longChunk, c.longChunk, c.longEvery, &longCnt, t0.Add(c.longFor)); err != nil {
				errs.add("long connection: %v", err)
			}
			rep.Long.DurationMS = time.Since(t0).Milliseconds()
		}()
	}

	if c.rate > 0 {
		rep.Load = runLoad(ctx, c, func() error { return one(c.send, c.recv, 0, 0, nil, time.Time{}) }, &errs)
	} else {
		sem := make(chan struct{}, c.parallel)
		var wg sync.WaitGroup
		for i := 0; i < c.n && ctx.Err() == nil; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := one(c.send, c.recv, 0, 0, nil, time.Time{}); err != nil {
					errs.add("connection: %v", err)
				}
			}()
		}
		wg.Wait()
	}

	if c.refused > 0 {
		addr, release, err := closedAddr(c)
		if err != nil {
			errs.add("refused: %v", err)
		} else {
			rep.RefusedAddr = addr
			n, err := refuse(ctx, addr, c.refused, c.timeout)
			release()
			rep.Refused = int64(n)
			if err != nil {
				errs.add("refused: %v", err)
			}
		}
	}

	longWG.Wait()
	if rep.Long != nil {
		rep.Long.BytesSent, rep.Long.BytesReceived = longCnt.sent.Load(), longCnt.received.Load()
	}
	rep.Connections = opened.Load()
	rep.ConnectionsFailed = failed.Load()
	rep.Exchanges = exchanges.Load()
	rep.BytesSent, rep.BytesReceived = cnt.sent.Load(), cnt.received.Load()
	rep.RTTSumUS, rep.RTTSamples = rtt.sumUS.Load(), rtt.samples.Load()
	rep.DurationMS = time.Since(start).Milliseconds()
	rep.Errors = errs.list()
	fmt.Fprintf(stderr, "tcpload: client done: %d connections, %d refused, %d errors\n", rep.Connections, rep.Refused, len(rep.Errors))
	return rep
}

// runLoad launches connections at c.rate per second for c.duration (at most c.max,
// at most c.parallel in flight; when all slots are busy the launcher waits, and
// the achieved rate shows it).
func runLoad(ctx context.Context, c *config, one func() error, errs *errorList) *loadReport {
	total := min(int64(c.rate*c.duration.Seconds()), int64(c.max))
	rep := &loadReport{Rate: c.rate}
	interval := time.Duration(float64(time.Second) / c.rate)
	sem := make(chan struct{}, c.parallel)
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		lat []time.Duration
	)
	start := time.Now()
	var i int64
	for i = 0; i < total && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-time.After(d): // pacing: the schedule, not an arbitrary wait
			case <-ctx.Done():
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			t0 := time.Now()
			if err := one(); err != nil {
				errs.add("connection: %v", err)
				return
			}
			d := time.Since(t0)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		}()
	}
	launchTime := time.Since(start)
	wg.Wait()
	rep.Launched = i
	if s := launchTime.Seconds(); s > 0 {
		rep.AchievedRate = float64(i) / s
	}
	slices.Sort(lat)
	rep.LatencyMS = map[string]float64{}
	if len(lat) > 0 {
		q := func(p float64) float64 {
			return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / 1e6
		}
		rep.LatencyMS["p50"], rep.LatencyMS["p90"], rep.LatencyMS["p99"] = q(0.5), q(0.9), q(0.99)
		rep.LatencyMS["max"] = float64(lat[len(lat)-1]) / 1e6
	}
	return rep
}

// closedAddr picks the address for -refused. With -refused.addr it is used as
// given (the first connect verifies it). Otherwise, when the server's host is a
// local address, a port is reserved by binding a socket that never listens:
// connects to it are refused for as long as it is held (release frees it). For
// a remote host, the port after the server's is used and verified by the first
// connect.
func closedAddr(c *config) (addr string, release func(), err error) {
	if c.refusedAddr != "" {
		return c.refusedAddr, func() {}, nil
	}
	host, portStr, _ := net.SplitHostPort(c.addr)
	ip := net.ParseIP(host)
	if ip != nil {
		if a, rel, err := reservePort(ip); err == nil {
			return a, rel, nil
		}
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port >= 65535 {
		return "", nil, fmt.Errorf("cannot derive a closed port from -addr %q; give -refused.addr", c.addr)
	}
	return net.JoinHostPort(host, strconv.Itoa(port+1)), func() {}, nil
}

// reservePort binds (without listening) a TCP socket on ip and a kernel-chosen
// port. It fails when ip is not an address of this host.
func reservePort(ip net.IP) (string, func(), error) {
	var sa unix.Sockaddr
	domain := unix.AF_INET
	if ip4 := ip.To4(); ip4 != nil {
		sa = &unix.SockaddrInet4{Addr: [4]byte(ip4)}
	} else {
		domain = unix.AF_INET6
		sa = &unix.SockaddrInet6{Addr: [16]byte(ip.To16())}
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", nil, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return "", nil, err
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return "", nil, err
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(port)), func() { unix.Close(fd) }, nil
}

// refuse makes n connects to addr, each of which must be refused (RST). It stops
// at the first connect that is not refused.
func refuse(ctx context.Context, addr string, n int, timeout time.Duration) (int, error) {
	d := net.Dialer{Timeout: timeout}
	for i := 0; i < n; i++ {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
			return i, fmt.Errorf("%s is not closed: connect %d succeeded", addr, i+1)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return i, fmt.Errorf("connect %d to %s: want connection refused, got: %w", i+1, addr, err)
		}
	}
	return n, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "tcpload: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep any
	var nerr int
	if c.server {
		r, err := runServer(ctx, c, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "tcpload: %v\n", err)
			return 1
		}
		rep, nerr = r, len(r.Errors)
	} else {
		r := runClient(ctx, c, stderr)
		rep, nerr = r, len(r.Errors)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		fmt.Fprintf(stderr, "tcpload: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", b)
	if nerr > 0 {
		return 1
	}
	return 0
}

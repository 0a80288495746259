package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
)

// startCollector loads the collector on the running kernel (see
// collectortest: OTELBEE_ATTACH_MODE, skips, PROGSTAT lines).
func startCollector(t *testing.T) (*Collector, *sdkmetric.ManualReader) {
	t.Helper()
	return startCollectorReader(t, DefaultConfig())
}

func startCollectorReader(t *testing.T, cfg Config) (*Collector, *sdkmetric.ManualReader) {
	t.Helper()
	c, env := collectortest.Start(t, Name, func(d collectors.Deps) collectors.Collector {
		return New(d, cfg)
	}, collectortest.Options{})
	return c.(*Collector), env.Reader
}

// snapshot sums the kernel's per-CPU counters by series.
func (c *Collector) snapshot(t *testing.T) map[tcpConnKey]tcpConnCounters {
	t.Helper()
	out := map[tcpConnKey]tcpConnCounters{}
	var (
		key    tcpConnKey
		perCPU []tcpConnCounters
	)
	it := c.stats.Iterate()
	for it.Next(&key, &perCPU) {
		var s tcpConnCounters
		for _, v := range perCPU {
			s.Opened += v.Opened
			s.Closed += v.Closed
			for i := range s.Failed {
				s.Failed[i] += v.Failed[i]
			}
			s.BytesSent += v.BytesSent
			s.BytesReceived += v.BytesReceived
			s.Retransmits += v.Retransmits
			s.ResetsSent += v.ResetsSent
			s.ResetsReceived += v.ResetsReceived
		}
		out[key] = s
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func loopbackKey(port int, dir tcpDirection) tcpConnKey {
	k := tcpConnKey{Tgid: uint32(os.Getpid()), ServerPort: uint16(port), Direction: uint8(dir)}
	copy(k.Peer[:], net.IPv4(127, 0, 0, 1).To16())
	return k
}

// echoServer accepts connections; on each it reads until EOF and answers
// with reply bytes after reading want bytes.
func echoServer(t *testing.T, network, addr string, want, reply int) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				buf := make([]byte, want)
				if _, err := io.ReadFull(conn, buf); err != nil {
					return
				}
				conn.Write(make([]byte, reply))
				io.Copy(io.Discard, conn)
			}()
		}
	}()
	return ln
}

func exchange(t *testing.T, network, addr string, send, recv int) {
	t.Helper()
	conn, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(make([]byte, send)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, recv)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

// waitFor polls the kernel counters until cond holds: closes are recorded in
// softirq context shortly after Close returns.
func waitFor(t *testing.T, c *Collector, cond func(map[tcpConnKey]tcpConnCounters) error) map[tcpConnKey]tcpConnCounters {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		snap := c.snapshot(t)
		err := cond(snap)
		if err == nil {
			return snap
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPrivilegedExactLoopbackCounts(t *testing.T) {
	for _, perPeer := range []bool{false, true} {
		t.Run(fmt.Sprintf("peer_histograms=%v", perPeer), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.PeerHistograms = perPeer
			exactLoopbackCounts(t, cfg)
		})
	}
}

func exactLoopbackCounts(t *testing.T, cfg Config) {
	c, reader := startCollectorReader(t, cfg)
	const (
		conns = 25
		send  = 70001
		recv  = 3333
	)
	ln := echoServer(t, "tcp4", "127.0.0.1:0", send, recv)
	port := ln.Addr().(*net.TCPAddr).Port
	for range conns {
		exchange(t, "tcp4", ln.Addr().String(), send, recv)
	}
	out, in := loopbackKey(port, tcpDirectionDIRECTION_OUTBOUND), loopbackKey(port, tcpDirectionDIRECTION_INBOUND)
	want := func(s map[tcpConnKey]tcpConnCounters) error {
		o, i := s[out], s[in]
		if o.Opened != conns || o.Closed != conns || o.BytesSent != conns*send || o.BytesReceived != conns*recv {
			return fmt.Errorf("outbound: got %+v, want %d opened and closed, %d sent, %d received", o, conns, conns*send, conns*recv)
		}
		if i.Opened != conns || i.Closed != conns || i.BytesReceived != conns*send || i.BytesSent != conns*recv {
			return fmt.Errorf("inbound: got %+v, want %d opened and closed, %d received, %d sent", i, conns, conns*send, conns*recv)
		}
		return nil
	}
	waitFor(t, c, want)

	// The same numbers reach the OpenTelemetry readers.
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	pid := fmt.Sprint(os.Getpid())
	got := sumWhere(rm, "otelbee.tcp.connection.io", map[string]string{
		"otelbee.network.connection.direction": "outbound", "network.io.direction": "transmit",
		"server.port": fmt.Sprint(port), "process.pid": pid,
	})
	if got != conns*send {
		t.Errorf("otelbee.tcp.connection.io outbound transmit = %v, want %d", got, conns*send)
	}
	for _, name := range []string{"otelbee.tcp.connection.duration", "otelbee.tcp.connection.rtt"} {
		if cfg.PeerHistograms {
			// Per series: the port's, both ends.
			if n := histCount(rm, name, map[string]string{"server.port": fmt.Sprint(port), "network.peer.address": "127.0.0.1"}); n != 2*conns {
				t.Errorf("%s count for port %d = %d, want %d (both ends)", name, port, n, 2*conns)
			}
			continue
		}
		// Per instance (this process: the only one making connections
		// in this collector's maps) and direction, without the peer's
		// attributes.
		for _, dir := range []string{"outbound", "inbound"} {
			if n := histCount(rm, name, map[string]string{"otelbee.network.connection.direction": dir, "process.pid": pid}); n != conns {
				t.Errorf("%s count for %s = %d, want %d", name, dir, n, conns)
			}
		}
		if n := histCount(rm, name, map[string]string{"server.port": ""}) + histCount(rm, name, map[string]string{"network.peer.address": ""}); n != 0 {
			t.Errorf("%s: %d connections in points with a peer address or server port", name, n)
		}
	}
}

func TestPrivilegedIPv6AndRefused(t *testing.T) {
	c, _ := startCollector(t)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("skipping: no IPv6 loopback: %v", err)
	}
	ln.Close()
	srv := echoServer(t, "tcp6", "[::1]:0", 10, 20)
	port := srv.Addr().(*net.TCPAddr).Port
	for range 3 {
		exchange(t, "tcp6", srv.Addr().String(), 10, 20)
	}
	// A port that was just closed: connects to it are refused.
	closedLn, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closedLn.Addr().(*net.TCPAddr).Port
	closedLn.Close()
	const refused = 7
	for range refused {
		_, err := net.Dial("tcp4", closedLn.Addr().String())
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial closed port: got %v, want connection refused", err)
		}
	}
	k6 := tcpConnKey{Tgid: uint32(os.Getpid()), ServerPort: uint16(port), Direction: uint8(tcpDirectionDIRECTION_OUTBOUND)}
	copy(k6.Peer[:], net.IPv6loopback)
	kr := loopbackKey(closedPort, tcpDirectionDIRECTION_OUTBOUND)
	waitFor(t, c, func(s map[tcpConnKey]tcpConnCounters) error {
		if v := s[k6]; v.Opened != 3 || v.Closed != 3 || v.BytesSent != 30 || v.BytesReceived != 60 {
			return fmt.Errorf("ipv6 outbound: got %+v; all series: %v", v, s)
		}
		v := s[kr]
		if v.Failed[tcpConnectFailureFAILURE_REFUSED] != refused || v.Opened != 0 || v.ResetsReceived != refused {
			return fmt.Errorf("refused: got %+v, want %d refused and resets received", v, refused)
		}
		return nil
	})
}

func sumWhere(rm metricdata.ResourceMetrics, name string, attrs map[string]string) int64 {
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
		points:
			for _, dp := range sum.DataPoints {
				for k, v := range attrs {
					got, ok := dp.Attributes.Value(attributeKey(k))
					if !ok || got.Emit() != v {
						continue points
					}
				}
				total += dp.Value
			}
		}
	}
	return total
}

// histCount sums the counts of name's points that carry attrs (a value
// "" matches any value of the key).
func histCount(rm metricdata.ResourceMetrics, name string, attrs map[string]string) uint64 {
	var n uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			for _, dp := range h.DataPoints {
				var buckets uint64
				for _, b := range dp.BucketCounts {
					buckets += b
				}
				if buckets != dp.Count || len(dp.BucketCounts) != len(dp.Bounds)+1 {
					panic(fmt.Sprintf("%s: malformed histogram point %+v", m.Name, dp))
				}
			}
			if m.Name != name || !ok {
				continue
			}
		points:
			for _, dp := range h.DataPoints {
				for k, want := range attrs {
					v, ok := dp.Attributes.Value(attributeKey(k))
					if !ok || (want != "" && v.Emit() != want) {
						continue points
					}
				}
				n += dp.Count
			}
		}
	}
	return n
}

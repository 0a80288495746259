package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Wire protocol (one exchange per connection):
//
//	client -> server: header = uint64 S, uint64 R (big endian, 16 bytes), then
//	                  S-16 payload bytes. S counts the header: the client writes
//	                  exactly S bytes on the connection in total (S >= 16).
//	server -> client: exactly R bytes. The server writes them in step with the
//	                  payload it has read (after x of the S-16 payload bytes it has
//	                  written floor(R*x/(S-16))), so a connection whose client sends
//	                  slowly also receives slowly; with no payload it writes R at once.
//	then:             the client closes after it has written S and read R bytes; the
//	                  server reads EOF (any extra byte is a protocol error) and closes.
const headerLen = 16

const maxBytes = 1 << 40 // sanity bound for S and R

var errProto = errors.New("protocol error")

// counters are the byte counts of one side, updated as bytes cross the socket
// so that a report after an interruption is still exact.
type counters struct {
	sent, received atomic.Int64
}

type countingConn struct {
	net.Conn
	c *counters
}

func (cc countingConn) Read(p []byte) (int, error) {
	n, err := cc.Conn.Read(p)
	cc.c.received.Add(int64(n))
	return n, err
}

func (cc countingConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	cc.c.sent.Add(int64(n))
	return n, err
}

// rttConn adds the kernel's smoothed round-trip time of a TCP connection
// (TCP_INFO's tcpi_rtt, the srtt the agent reads at the close) to rtt as the
// connection closes: the ground truth of the agent's RTT histogram, whatever
// delay the machine's load adds to the link.
type rttConn struct {
	net.Conn
	rtt *rttStats
}

type rttStats struct{ sumUS, samples atomic.Int64 }

func (rc rttConn) Close() error {
	if tc, ok := rc.Conn.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil && info.Rtt > 0 {
					rc.rtt.sumUS.Add(int64(info.Rtt))
					rc.rtt.samples.Add(1)
				}
			})
		}
	}
	return rc.Conn.Close()
}

// fill is the payload content (its value is irrelevant; it is never all zeros so
// that compression anywhere would not hide bytes).
var fill = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

func writeN(w io.Writer, n int64) error {
	for n > 0 {
		k := min(n, int64(len(fill)))
		if _, err := w.Write(fill[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// serveConn runs the server side of one exchange on conn (already counting).
func serveConn(conn net.Conn, idle time.Duration) error {
	var hdr [headerLen]byte
	_ = conn.SetDeadline(time.Now().Add(idle))
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	s := int64(binary.BigEndian.Uint64(hdr[0:8]))
	r := int64(binary.BigEndian.Uint64(hdr[8:16]))
	if s < headerLen || s > maxBytes || r < 0 || r > maxBytes {
		return fmt.Errorf("%w: header S=%d R=%d", errProto, s, r)
	}
	payload := s - headerLen
	var read, written int64
	buf := make([]byte, 32<<10)
	for {
		// Write what is due for the payload read so far.
		due := r
		if payload > 0 {
			due = mulDiv(r, read, payload)
		}
		if due > written {
			_ = conn.SetDeadline(time.Now().Add(idle))
			if err := writeN(conn, due-written); err != nil {
				return fmt.Errorf("write response (%d of %d bytes written): %w", written, r, err)
			}
			written = due
		}
		if read == payload {
			break
		}
		_ = conn.SetDeadline(time.Now().Add(idle))
		n, err := conn.Read(buf[:min(int64(len(buf)), payload-read)])
		read += int64(n)
		if err != nil {
			return fmt.Errorf("read payload (%d of %d bytes read): %w", read, payload, err)
		}
	}
	// Wait for the client to close; nothing more may arrive.
	_ = conn.SetDeadline(time.Now().Add(idle))
	n, err := conn.Read(buf[:1])
	if n > 0 {
		return fmt.Errorf("%w: client sent more than S=%d bytes", errProto, s)
	}
	if !errors.Is(err, io.EOF) {
		return fmt.Errorf("wait for client close: %w", err)
	}
	return nil
}

// mulDiv returns floor(a*b/c) without overflow for a, b <= maxBytes.
func mulDiv(a, b, c int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	q, _ := bits.Div64(hi, lo, uint64(c)) // b <= c, so the quotient fits
	return int64(q)
}

// exchange runs the client side of one exchange: it writes S bytes (the header
// and then the payload, in chunks of chunk bytes every `every` when every > 0)
// while reading R bytes, then closes the connection, not before closeAt.
func exchange(conn net.Conn, s, r int64, chunk int64, every time.Duration, timeout time.Duration, closeAt time.Time) error {
	if s < headerLen {
		conn.Close()
		return fmt.Errorf("S=%d is less than the %d-byte header", s, headerLen)
	}
	defer conn.Close()
	if every <= 0 {
		_ = conn.SetDeadline(time.Now().Add(timeout))
	}
	readErr := make(chan error, 1)
	go func() {
		n, err := io.CopyN(io.Discard, conn, r)
		if err != nil {
			err = fmt.Errorf("read response (%d of %d bytes): %w", n, r, err)
		}
		readErr <- err
	}()
	var hdr [headerLen]byte
	binary.BigEndian.PutUint64(hdr[0:8], uint64(s))
	binary.BigEndian.PutUint64(hdr[8:16], uint64(r))
	if _, err := conn.Write(hdr[:]); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	left := s - headerLen
	if every <= 0 || chunk <= 0 {
		if err := writeN(conn, left); err != nil {
			return fmt.Errorf("write payload: %w", err)
		}
	} else {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for left > 0 {
			k := min(chunk, left)
			_ = conn.SetWriteDeadline(time.Now().Add(timeout))
			if err := writeN(conn, k); err != nil {
				return fmt.Errorf("write chunk: %w", err)
			}
			left -= k
			if left > 0 {
				<-tick.C
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
	}
	if err := <-readErr; err != nil {
		return err
	}
	if d := time.Until(closeAt); d > 0 {
		time.Sleep(d) // keep the connection open (idle) until closeAt
	}
	return nil
}

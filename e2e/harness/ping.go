package harness

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ping sends count ICMP echo requests from namespace ns to addr (IPv4 or IPv6),
// one every interval, and returns the round-trip time of each. Any request
// without a reply within 2s is an error. It uses a raw ICMP socket created inside
// ns (root), so it needs no ping binary.
func Ping(ns, addr string, count int, interval time.Duration) ([]time.Duration, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("ping %s: %w", addr, err)
	}
	network, laddr, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if ip.Is6() && !ip.Is4In6() {
		network, laddr, proto = "ip6:ipv6-icmp", "::", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var conn *icmp.PacketConn
	if err := InNetns(ns, func() error {
		var err error
		conn, err = icmp.ListenPacket(network, laddr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("ping %s from netns %s: %w", addr, ns, err)
	}
	defer conn.Close()

	dst := &net.IPAddr{IP: ip.AsSlice()}
	id := rand.IntN(0xffff)
	buf := make([]byte, 1500)
	rtts := make([]time.Duration, 0, count)
	for seq := 1; seq <= count; seq++ {
		if seq > 1 {
			time.Sleep(interval) // pacing between echo requests, as ping -i does
		}
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("otelbee-e2e-ping")}}
		wb, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
		if err != nil {
			return rtts, fmt.Errorf("ping %s: marshal: %w", addr, err)
		}
		sent := time.Now()
		if _, err := conn.WriteTo(wb, dst); err != nil {
			return rtts, fmt.Errorf("ping %s from netns %s: send: %w", addr, ns, err)
		}
		if err := conn.SetReadDeadline(sent.Add(2 * time.Second)); err != nil {
			return rtts, fmt.Errorf("ping %s: %w", addr, err)
		}
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return rtts, fmt.Errorf("ping %s from netns %s: no reply to seq %d within 2s", addr, ns, seq)
				}
				return rtts, fmt.Errorf("ping %s from netns %s: receive: %w", addr, ns, err)
			}
			rm, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || rm.Type != replyType {
				continue
			}
			echo, ok := rm.Body.(*icmp.Echo)
			if !ok || echo.ID != id || echo.Seq != seq {
				continue
			}
			if fa, ok := from.(*net.IPAddr); ok && !fa.IP.Equal(dst.IP) {
				continue
			}
			rtts = append(rtts, time.Since(sent))
			break
		}
	}
	return rtts, nil
}

package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Direction is the way a packet crosses an emulated link.
type Direction int

const (
	AtoB Direction = iota
	BtoA
)

func (d Direction) String() string {
	if d == AtoB {
		return "A->B"
	}
	return "B->A"
}

// Link is the behaviour of an emulated link, a stand-in for netem on kernels
// built without it (CONFIG_NET_SCH_NETEM unset).
type Link struct {
	// Delay is added to every packet in each direction, so a round trip grows by
	// 2*Delay. Packet order is kept.
	Delay time.Duration
	// Drop, when set, is called for every packet (an IPv4 or IPv6 datagram) in
	// the order packets enter the link; returning true drops it. It runs on the
	// link's forwarding goroutines (one per direction) and must not block.
	Drop func(dir Direction, packet []byte) bool
}

// LinkStats counts packets per direction.
type LinkStats struct {
	Forwarded [2]uint64 // indexed by Direction
	Dropped   [2]uint64 // by Link.Drop
	Overflow  [2]uint64 // delay queue full (QueueLen packets in flight)
}

// QueueLen is how many packets one direction of an emulated link holds while
// delaying them; more are dropped and counted in LinkStats.Overflow.
const QueueLen = 8192

// EmulatedPair is a NetnsPair whose link is emulated in this process: each
// namespace has a TUN device (DevA/DevB "tun0") with the usual pair addresses,
// and the harness forwards IP packets between the two devices, applying the
// Link's delay and drops. The kernels on both sides are real (TCP, RTT estimates,
// retransmissions are the kernel's own); only the wire is emulated. Throughput
// is what one goroutine per direction forwards (tens of thousands of packets per
// second), plenty for tests.
type EmulatedPair struct {
	*NetnsPair

	link  atomic.Pointer[Link]
	stats [3][2]atomic.Uint64 // forwarded, dropped, overflow × direction
	files [2]*os.File
	wg    sync.WaitGroup
}

// NewEmulatedPair creates an EmulatedPair with the given link behaviour (which
// SetLink changes later). Everything is removed on t.Cleanup.
func NewEmulatedPair(t testing.TB, name string, link Link) *EmulatedPair {
	t.Helper()
	p := newNamespaces(t, name, "tun0")
	e := &EmulatedPair{NetnsPair: p}
	e.link.Store(&link)
	for i, ns := range []string{p.A, p.B} {
		f, err := openTUN(ns, "tun0")
		if err != nil {
			t.Fatalf("harness: emulated pair: %v", err)
		}
		e.files[i] = f
	}
	t.Cleanup(e.close) // runs before the namespaces are deleted
	p.configure(t)
	queues := [2]chan queued{make(chan queued, QueueLen), make(chan queued, QueueLen)}
	e.wg.Add(4)
	go e.read(AtoB, e.files[0], queues[AtoB])
	go e.read(BtoA, e.files[1], queues[BtoA])
	go e.write(e.files[1], queues[AtoB])
	go e.write(e.files[0], queues[BtoA])
	return e
}

// SetLink changes the link's behaviour for packets entering it from now on.
func (e *EmulatedPair) SetLink(l Link) { e.link.Store(&l) }

// Stats returns the packet counts so far.
func (e *EmulatedPair) Stats() LinkStats {
	var s LinkStats
	for d := 0; d < 2; d++ {
		s.Forwarded[d] = e.stats[0][d].Load()
		s.Dropped[d] = e.stats[1][d].Load()
		s.Overflow[d] = e.stats[2][d].Load()
	}
	return s
}

func (e *EmulatedPair) close() {
	for _, f := range e.files {
		if f != nil {
			f.Close() // unblocks the readers; the device disappears with its last fd
		}
	}
	e.wg.Wait()
}

type queued struct {
	pkt []byte
	at  time.Time
}

func (e *EmulatedPair) read(dir Direction, src *os.File, q chan<- queued) {
	defer e.wg.Done()
	defer close(q)
	buf := make([]byte, 65536)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return // closed
		}
		pkt := buf[:n]
		l := e.link.Load()
		if l.Drop != nil && l.Drop(dir, pkt) {
			e.stats[1][dir].Add(1)
			continue
		}
		item := queued{pkt: append([]byte(nil), pkt...), at: time.Now().Add(l.Delay)}
		select {
		case q <- item:
			e.stats[0][dir].Add(1)
		default:
			e.stats[2][dir].Add(1)
		}
	}
}

func (e *EmulatedPair) write(dst *os.File, q <-chan queued) {
	defer e.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for item := range q {
		if d := time.Until(item.at); d > 0 {
			timer.Reset(d)
			<-timer.C
		}
		// A write fails only while the device is going away; the packet is lost
		// as it would be on a real link.
		_, _ = dst.Write(item.pkt)
	}
}

// openTUN creates TUN device name (IFF_TUN, no packet information header) in
// network namespace ns and returns its non-blocking file (served by Go's poller).
func openTUN(ns, name string) (*os.File, error) {
	var fd int
	err := InNetns(ns, func() error {
		var err error
		// The device is created in the namespace of the opening thread.
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: tun device: %w", ns, err)
	}
	return os.NewFile(uintptr(fd), "tun:"+ns+":"+name), nil
}

// TCPSegment describes the TCP header of an IP packet.
type TCPSegment struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8 // FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10
	PayloadLen       int
}

const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagACK = 0x10
)

var errNotTCP = errors.New("not a TCP packet")

// ParseTCP parses the TCP header of an IPv4 or IPv6 packet (IPv6 without
// extension headers), as handed to Link.Drop.
func ParseTCP(pkt []byte) (TCPSegment, error) {
	if len(pkt) < 1 {
		return TCPSegment{}, errNotTCP
	}
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[9] != unix.IPPROTO_TCP {
			return TCPSegment{}, errNotTCP
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < 20 || total > len(pkt) || total < ihl {
			return TCPSegment{}, errNotTCP
		}
		l4 = pkt[ihl:total]
	case 6:
		if len(pkt) < 40 || pkt[6] != unix.IPPROTO_TCP {
			return TCPSegment{}, errNotTCP
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:6]))
		if 40+plen > len(pkt) {
			return TCPSegment{}, errNotTCP
		}
		l4 = pkt[40 : 40+plen]
	default:
		return TCPSegment{}, errNotTCP
	}
	if len(l4) < 20 {
		return TCPSegment{}, errNotTCP
	}
	off := int(l4[12]>>4) * 4
	if off < 20 || off > len(l4) {
		return TCPSegment{}, errNotTCP
	}
	return TCPSegment{
		SrcPort:    binary.BigEndian.Uint16(l4[0:2]),
		DstPort:    binary.BigEndian.Uint16(l4[2:4]),
		Seq:        binary.BigEndian.Uint32(l4[4:8]),
		Ack:        binary.BigEndian.Uint32(l4[8:12]),
		Flags:      l4[13],
		PayloadLen: len(l4) - off,
	}, nil
}

// DropTCPData returns a Link.Drop function that drops the listed data segments:
// TCP segments with payload in direction dir to port dstPort (0: any port) are
// numbered 1, 2, ... as they enter the link, retransmissions included, and those
// whose number is listed are dropped. DropTCPData(AtoB, 9000, 3) drops the third
// data segment, which the sender then retransmits.
func DropTCPData(dir Direction, dstPort uint16, nth ...int) func(Direction, []byte) bool {
	want := map[int]bool{}
	for _, n := range nth {
		want[n] = true
	}
	seen := 0
	return func(d Direction, pkt []byte) bool {
		if d != dir {
			return false
		}
		seg, err := ParseTCP(pkt)
		if err != nil || seg.PayloadLen == 0 || (dstPort != 0 && seg.DstPort != dstPort) {
			return false
		}
		seen++
		return want[seen]
	}
}

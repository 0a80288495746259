package capture

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Connections that exist when the agent starts were accepted or connected
// before its hooks: the kernel never tracked them, so keep-alive clients
// that stay connected (a pool, a load balancer) would never be seen. They are
// found in /proc (each process's socket descriptors, each network
// namespace's TCP table) and put into the kernel's table marked midstream:
// the kernel waits for the next request to start on them (bpf/l7.c
// MIDSTREAM_PROBES) and applies the filters at the first call, in the
// owning process.

// tcpSocket is one row of /proc/<pid>/net/tcp{,6}.
type tcpSocket struct {
	local, peer         [16]byte // IPv6 or IPv4-mapped
	localPort, peerPort uint16
	v6                  bool
}

const (
	tcpEstablished = 0x01
	tcpListen      = 0x0A
)

// netTable is one network namespace's TCP sockets.
type netTable struct {
	established map[uint64]tcpSocket // by inode
	listening   map[uint16]bool      // local ports
}

// pickUpExisting puts the established TCP connections of every process
// into the kernel's table; it returns how many (the agents' own left out).
//
// The agents' own processes go first, and the client end of each of their
// connections is remembered as an agent's (self_ends) right away, so the
// server side of such a connection (a local collector receiving an agent's
// export) is left out from its first call whichever end calls first.
// Remembered only at the agent's first call, as the kernel does for the
// unfiltered entries of other processes, a server reading a request the
// agent had written just before the pick-up, or reading it before the
// agent's write had returned, parsed the connection for good.
func (e *Engine) pickUpExisting() (int, error) {
	if e.seen == nil {
		return 0, e.seenErr
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("listing processes: %w", err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("reading the monotonic clock: %w", err)
	}
	p := pickUp{
		conns:    e.loader.Map(l7MapConns),
		seen:     e.seen,
		selfEnds: e.loader.Map(l7MapSelfEnds),
		tables:   map[string]*netTable{},
		now:      uint64(ts.Nano()),
		max:      int(e.cfg.MaxConnections / 2), // leave room for the connections to come
	}
	self := uint32(os.Getpid())
	if e.cfg.ObserveSelf {
		self = 0
	}
	names := e.selfNames()
	var agents, others []uint32
	for _, d := range procs {
		pid, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil {
			continue
		}
		if uint32(pid) == self || isSelfComm(uint32(pid), names) {
			agents = append(agents, uint32(pid))
		} else {
			others = append(others, uint32(pid))
		}
	}
	for _, pid := range agents {
		if err := p.process(pid, true); err != nil || p.full() {
			e.selfPickedUp.Add(p.self)
			return p.n, err
		}
	}
	e.selfPickedUp.Add(p.self)
	for _, pid := range others {
		if err := p.process(pid, false); err != nil || p.full() {
			return p.n, err
		}
	}
	return p.n, nil
}

// isSelfComm reports whether process pid's executable name is one of an
// agent's (the kernel compares each thread's comm with the same names).
func isSelfComm(pid uint32, names []string) bool {
	if len(names) == 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/comm")
	if err != nil {
		return false
	}
	comm := strings.TrimSuffix(string(b), "\n")
	for _, n := range names {
		if len(n) > 15 {
			n = n[:15] // the kernel's comm is 15 bytes
		}
		if n != "" && n == comm {
			return true
		}
	}
	return false
}

// pickUp is one pick-up's state: the kernel's tables, each network
// namespace's TCP sockets, and what was put in.
type pickUp struct {
	conns, selfEnds *ebpf.Map
	seen            *seenMarks
	tables          map[string]*netTable
	now             uint64
	max             int
	n               int    // connections put in to be parsed
	self            uint64 // the agents' connections left out
}

func (p *pickUp) full() bool { return p.n+int(p.self) >= p.max }

// process puts in the established TCP connections of process pid: an
// agent's (self) are left out, their client ends remembered.
func (p *pickUp) process(pid uint32, self bool) error {
	dir := "/proc/" + strconv.FormatUint(uint64(pid), 10)
	fds, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return nil // gone, or a kernel thread
	}
	var tbl *netTable
	for _, fd := range fds {
		link, err := os.Readlink(dir + "/fd/" + fd.Name())
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
		if err != nil {
			continue
		}
		if tbl == nil {
			ns, err := os.Readlink(dir + "/ns/net")
			if err != nil {
				return nil
			}
			if tbl = p.tables[ns]; tbl == nil {
				tbl = readNetTable(dir)
				p.tables[ns] = tbl
			}
		}
		sk, ok := tbl.established[ino]
		if !ok {
			continue
		}
		fdn, err := strconv.ParseUint(fd.Name(), 10, 32)
		if err != nil {
			continue
		}
		key := uint64(pid)<<32 | fdn
		server := tbl.listening[sk.localPort]
		if self {
			if !server {
				if err := p.selfClient(key, sk); err != nil {
					return err
				}
			}
			p.self++
		} else {
			if err := p.parsed(key, sk, server); err != nil {
				return err
			}
		}
		if p.full() {
			return nil
		}
	}
	return nil
}

// parsed puts in a connection to be parsed from its next request on,
// filtered at its first call (in the owning process).
func (p *pickUp) parsed(key uint64, sk tcpSocket, server bool) error {
	info := l7ConnInfo{
		StartNs:    p.now,
		Peer:       sk.peer,
		Local:      sk.local,
		PeerPort:   sk.peerPort,
		LocalPort:  sk.localPort,
		Role:       uint8(l7HttpRoleROLE_CLIENT),
		Family:     family(sk),
		Midstream:  1,
		Unfiltered: 1,
	}
	if server {
		info.Role = uint8(l7HttpRoleROLE_SERVER)
	}
	if err := p.seen.markConns(uint32(key >> 32)); err != nil {
		return err
	}
	if err := p.conns.Update(key, &info, ebpf.UpdateNoExist); err != nil {
		if errors.Is(err, ebpf.ErrKeyExist) {
			return nil // tracked since the hooks were attached
		}
		return fmt.Errorf("adding an existing connection: %w", err)
	}
	p.n++
	return nil
}

// selfClient remembers an agent's client end as the kernel's track_self
// does at a connect: in self_ends, and in a never-parsed entry whose close
// forgets it.
func (p *pickUp) selfClient(key uint64, sk tcpSocket) error {
	info := l7ConnInfo{
		Local:     sk.local,
		LocalPort: sk.localPort,
		Role:      uint8(l7HttpRoleROLE_SELF),
		State:     uint8(l7HttpConnStateSTATE_NONE),
		Family:    family(sk),
	}
	if err := p.seen.markConns(uint32(key >> 32)); err != nil { // its close forgets the end
		return err
	}
	if err := p.conns.Update(key, &info, ebpf.UpdateNoExist); err != nil {
		if errors.Is(err, ebpf.ErrKeyExist) {
			return nil // tracked since the hooks were attached
		}
		return fmt.Errorf("adding an agent's existing connection: %w", err)
	}
	end := l7SelfEnd{Addr: sk.local, Port: sk.localPort}
	if err := p.selfEnds.Update(&end, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("remembering an agent's existing connection: %w", err)
	}
	return nil
}

func family(sk tcpSocket) uint8 {
	if sk.v6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// readNetTable reads the TCP tables of the network namespace of the process
// at dir.
func readNetTable(dir string) *netTable {
	t := &netTable{established: map[uint64]tcpSocket{}, listening: map[uint16]bool{}}
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(dir + "/net/" + f)
		if err != nil {
			continue
		}
		parseNetTCP(b, f == "tcp6", t)
	}
	return t
}

// parseNetTCP reads the rows of a /proc/net/tcp{,6} file into t.
func parseNetTCP(b []byte, v6 bool, t *netTable) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Scan() // the header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			continue
		}
		local, lport, ok1 := parseHexAddr(f[1])
		peer, pport, ok2 := parseHexAddr(f[2])
		if !ok1 || !ok2 {
			continue
		}
		switch st {
		case tcpListen:
			t.listening[lport] = true
		case tcpEstablished:
			ino, err := strconv.ParseUint(f[9], 10, 64)
			if err != nil || ino == 0 {
				continue
			}
			t.established[ino] = tcpSocket{local: local, peer: peer, localPort: lport, peerPort: pport, v6: v6}
		}
	}
}

// parseHexAddr reads "0100007F:1F90": the address as the kernel's 32-bit
// words in host order (little-endian here), then the port.
func parseHexAddr(s string) ([16]byte, uint16, bool) {
	var out [16]byte
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return out, 0, false
	}
	raw, err := hex.DecodeString(s[:i])
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return out, 0, false
	}
	port, err := strconv.ParseUint(s[i+1:], 16, 16)
	if err != nil {
		return out, 0, false
	}
	var addr [16]byte
	for w := 0; w < len(raw)/4; w++ {
		binary.BigEndian.PutUint32(addr[w*4:], binary.LittleEndian.Uint32(raw[w*4:]))
	}
	if len(raw) == 4 {
		out[10], out[11] = 0xff, 0xff
		copy(out[12:], addr[:4])
	} else {
		out = addr
	}
	return out, uint16(port), true
}

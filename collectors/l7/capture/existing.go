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
// into the kernel's table; it returns how many.
func (e *Engine) pickUpExisting() (int, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("listing processes: %w", err)
	}
	conns := e.loader.Map(l7MapConns)
	tables := map[string]*netTable{}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("reading the monotonic clock: %w", err)
	}
	now := uint64(ts.Nano())
	self := uint32(os.Getpid())
	if e.cfg.ObserveSelf {
		self = 0
	}
	n := 0
	for _, p := range procs {
		pid, err := strconv.ParseUint(p.Name(), 10, 32)
		if err != nil || uint32(pid) == self {
			continue
		}
		dir := "/proc/" + p.Name()
		fds, err := os.ReadDir(dir + "/fd")
		if err != nil {
			continue // gone, or a kernel thread
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
					break
				}
				if tbl = tables[ns]; tbl == nil {
					tbl = readNetTable(dir)
					tables[ns] = tbl
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
			info := l7ConnInfo{
				StartNs:    now,
				Peer:       sk.peer,
				Local:      sk.local,
				PeerPort:   sk.peerPort,
				LocalPort:  sk.localPort,
				Role:       uint8(l7HttpRoleROLE_CLIENT),
				Family:     unix.AF_INET,
				Midstream:  1,
				Unfiltered: 1,
			}
			if sk.v6 {
				info.Family = unix.AF_INET6
			}
			if tbl.listening[sk.localPort] {
				info.Role = uint8(l7HttpRoleROLE_SERVER)
			}
			key := uint64(pid)<<32 | fdn
			if err := conns.Update(key, &info, ebpf.UpdateNoExist); err != nil {
				if errors.Is(err, ebpf.ErrKeyExist) {
					continue // tracked since the hooks were attached
				}
				return n, fmt.Errorf("adding an existing connection: %w", err)
			}
			n++
			if uint32(n) >= e.cfg.MaxConnections/2 {
				return n, nil // leave room for the connections to come
			}
		}
	}
	return n, nil
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

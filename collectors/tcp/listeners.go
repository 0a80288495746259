package tcp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// seedListeners records the sockets that were already listening when the
// agent started, so their inbound connections are credited to the right
// process: the kernel map only learns about listen() calls it sees.
// It covers the agent's own network namespace.
func seedListeners(procRoot string, m *ebpf.Map) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(procRoot, "self/ns/net"), &st); err != nil {
		return 0, fmt.Errorf("reading network namespace: %w", err)
	}
	netns := uint32(st.Ino)
	ports := map[uint64]uint16{} // socket inode -> port
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		b, err := os.ReadFile(filepath.Join(procRoot, f))
		if err != nil {
			continue
		}
		for inode, port := range parseListening(b) {
			ports[inode] = port
		}
	}
	if len(ports) == 0 {
		return 0, nil
	}
	owners := socketOwners(procRoot, ports)
	n := 0
	for inode, port := range ports {
		tgid, ok := owners[inode]
		if !ok {
			continue
		}
		key := tcpListenerKey{Netns: netns, Port: port}
		err := m.Update(key, tgid, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return n, fmt.Errorf("seeding listener on port %d: %w", port, err)
		}
		n++
	}
	return n, nil
}

// parseListening returns inode -> local port of the LISTEN sockets in a
// /proc/net/tcp{,6} table.
func parseListening(table []byte) map[uint64]uint16 {
	out := map[uint64]uint16{}
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		port, err1 := strconv.ParseUint(portHex, 16, 16)
		inode, err2 := strconv.ParseUint(f[9], 10, 64)
		if err1 != nil || err2 != nil || inode == 0 {
			continue
		}
		out[inode] = uint16(port)
	}
	return out
}

// socketOwners maps socket inodes to the process holding them.
func socketOwners(procRoot string, want map[uint64]uint16) map[uint64]uint32 {
	out := map[uint64]uint32{}
	procs, _ := os.ReadDir(procRoot)
	for _, p := range procs {
		pid, err := strconv.ParseUint(p.Name(), 10, 32)
		if err != nil {
			continue
		}
		fdDir := filepath.Join(procRoot, p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(target[len("socket:["):], "]"), 10, 64)
			if err != nil {
				continue
			}
			if _, ok := want[inode]; ok {
				if _, seen := out[inode]; !seen {
					out[inode] = uint32(pid)
				}
			}
		}
	}
	return out
}

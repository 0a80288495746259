package identity

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// listenCache answers whether a process holds a listening socket. It reads
// the process's descriptors, and its network namespace's listening sockets
// (/proc/<pid>/net/{tcp,tcp6,unix}) only when it has a socket at all; the
// namespace's set is kept for listenTTL, so a burst of short-lived clients
// costs one read of those tables, not one each.
type listenCache struct {
	mu    sync.Mutex
	netns map[string]listenSet
}

type listenSet struct {
	inodes map[uint64]struct{}
	at     time.Time
}

const (
	listenTTL   = 2 * time.Second
	negativeTTL = 20 * time.Millisecond
)

// maxNetns bounds the namespaces cached; past it the cache starts over.
const maxNetns = 256

func (c *listenCache) listening(procRoot string, pid uint32) bool {
	dir := filepath.Join(procRoot, pidString(pid))
	socks := socketInodes(filepath.Join(dir, "fd"))
	if len(socks) == 0 {
		return false
	}
	ns, err := os.Readlink(filepath.Join(dir, "ns", "net"))
	if err != nil {
		ns = "?"
	}
	now := time.Now()
	c.mu.Lock()
	set, ok := c.netns[ns]
	c.mu.Unlock()
	if ok && now.Sub(set.at) <= listenTTL && set.has(socks) {
		return true
	}
	// A "no" from a cached set is trusted only very briefly: a server may
	// have called listen() and served its first request since it was read
	// (a scrape of another server reads it just before).
	if ok && now.Sub(set.at) <= negativeTTL {
		return false
	}
	set = listenSet{inodes: listeningInodes(filepath.Join(dir, "net")), at: now}
	c.mu.Lock()
	if c.netns == nil || len(c.netns) >= maxNetns {
		c.netns = map[string]listenSet{}
	}
	c.netns[ns] = set
	c.mu.Unlock()
	return set.has(socks)
}

func (s listenSet) has(inodes []uint64) bool {
	for _, ino := range inodes {
		if _, ok := s.inodes[ino]; ok {
			return true
		}
	}
	return false
}

// socketInodes lists the socket inodes among a process's descriptors.
func socketInodes(fdDir string) []uint64 {
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil
	}
	var out []uint64
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil || len(l) < len("socket:[]") || l[:len("socket:[")] != "socket:[" {
			continue
		}
		if n, err := strconv.ParseUint(l[len("socket:["):len(l)-1], 10, 64); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// listeningInodes reads the inodes of the listening TCP and Unix sockets
// of a network namespace from its /proc/<pid>/net directory.
func listeningInodes(netDir string) map[uint64]struct{} {
	out := map[uint64]struct{}{}
	for _, f := range []string{"tcp", "tcp6"} {
		// sl local rem st ... inode (field 10); st 0A is LISTEN.
		scanTable(filepath.Join(netDir, f), func(fields [][]byte) {
			if len(fields) >= 10 && string(fields[3]) == "0A" {
				addInode(out, fields[9])
			}
		})
	}
	// Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 is
	// __SO_ACCEPTCON, a listening socket (php-fpm's usual socket).
	scanTable(filepath.Join(netDir, "unix"), func(fields [][]byte) {
		if len(fields) >= 7 {
			if flags, err := strconv.ParseUint(string(fields[3]), 16, 32); err == nil && flags&0x10000 != 0 {
				addInode(out, fields[6])
			}
		}
	})
	return out
}

func addInode(set map[uint64]struct{}, b []byte) {
	if n, err := strconv.ParseUint(string(b), 10, 64); err == nil && n != 0 {
		set[n] = struct{}{}
	}
}

// scanTable calls fn with the fields of every line but the header.
func scanTable(path string, fn func([][]byte)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		fn(bytes.Fields(sc.Bytes()))
	}
}

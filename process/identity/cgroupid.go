package identity

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cgroupNames finds the container of a cgroup v2 id — the id the exec
// watcher's event carries (bpf_get_current_cgroup_id), which is the inode
// number of the cgroup's directory — for a process that exited before its
// /proc/<pid>/cgroup could be read: a short-lived process in a container
// (a job's step, a probe's command) keeps its container, and with it its
// pod. The cgroup tree is walked on a miss, at most every walkEvery, and
// what it names is kept until the next walk.
type cgroupNames struct {
	mu sync.Mutex
	// root is the cgroup2 mount ("" until looked up; "-" when there is none).
	root     string
	byID     map[uint64]string // container id ("" for none) by cgroup id
	lastWalk time.Time
}

const (
	walkEvery = 200 * time.Millisecond
	// maxCgroupDirs bounds one walk (a node's cgroups are far fewer).
	maxCgroupDirs = 50000
)

func (c *cgroupNames) containerID(id uint64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.byID[id]; ok {
		return v
	}
	if c.root == "" {
		c.root = cgroup2Mount("/proc/self/mounts")
	}
	if c.root == "-" || time.Since(c.lastWalk) < walkEvery {
		return ""
	}
	c.lastWalk = time.Now()
	c.byID = walkCgroups(c.root)
	return c.byID[id]
}

// walkCgroups maps every cgroup directory under root to the container id
// its path names.
func walkCgroups(root string) map[uint64]string {
	out := map[uint64]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if len(out) >= maxCgroupDirs {
			return filepath.SkipAll
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel := strings.TrimPrefix(p, root)
		// As /proc/<pid>/cgroup shows it on a cgroup2-only host.
		out[st.Ino] = ContainerIDFromCgroup([]byte("0::/" + strings.TrimPrefix(rel, "/") + "\n"))
		return nil
	})
	return out
}

// cgroup2Mount returns the shortest cgroup2 mount point in a mounts file,
// "-" when there is none.
func cgroup2Mount(mounts string) string {
	f, err := os.Open(mounts)
	if err != nil {
		return "-"
	}
	defer f.Close()
	best := ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" && (best == "" || len(fields[1]) < len(best)) {
			best = fields[1]
		}
	}
	if best == "" {
		return "-"
	}
	return best
}

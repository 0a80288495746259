package tls

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/prometheus/procfs"
)

// Process lists the TLS targets one process maps: its executable (Go,
// built-in OpenSSL) and its TLS libraries.
type Process struct {
	PID     int
	Comm    string
	Targets []*Target
	// Open[i] is a path that reaches Targets[i]'s file now, from this
	// agent's mount namespace (through /proc/<pid>/root, or the mapping
	// itself when the file was deleted or replaced): what a uprobe is
	// attached through.
	Open []string
}

// Discoverer finds TLS targets in processes through a /proc, sharing one
// Cache across them.
type Discoverer struct {
	fs    procfs.FS
	root  string
	cache *Cache
}

// NewDiscoverer reads processes under procRoot (normally "/proc").
func NewDiscoverer(procRoot string, cache *Cache) (*Discoverer, error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", procRoot, err)
	}
	return &Discoverer{fs: fs, root: procRoot, cache: cache}, nil
}

// PIDs lists the processes now running.
func (d *Discoverer) PIDs() ([]int, error) {
	procs, err := d.fs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	out := make([]int, len(procs))
	for i, p := range procs {
		out[i] = p.PID
	}
	return out, nil
}

// Process finds the TLS targets of one process. Only the executable and
// mappings whose names say TLS library are opened; files are reached
// through the process's own root, so containers' files are the ones read.
func (d *Discoverer) Process(pid int) (*Process, error) {
	p, err := d.fs.Proc(pid)
	if err != nil {
		return nil, fmt.Errorf("reading process %d: %w", pid, err)
	}
	maps, err := p.ProcMaps()
	if err != nil {
		return nil, fmt.Errorf("reading maps of %d: %w", pid, err)
	}
	out := &Process{PID: pid}
	out.Comm, _ = p.Comm()
	procDir := filepath.Join(d.root, strconv.Itoa(pid))
	exe, exeOK := stat(filepath.Join(procDir, "exe"))
	seen := map[FileID]bool{}
	for _, m := range maps {
		if m.Inode == 0 || len(m.Pathname) == 0 || m.Pathname[0] != '/' {
			continue
		}
		id := FileID{Dev: m.Dev, Ino: m.Inode}
		if seen[id] {
			continue
		}
		seen[id] = true
		isExe := exeOK && exe.Ino == m.Inode && exe.Dev == m.Dev
		if !isExe && libraryStack(m.Pathname) == StackNone {
			continue
		}
		open := filepath.Join(procDir, "root", m.Pathname)
		if st, ok := stat(open); !ok || st.Ino != m.Inode || st.Dev != m.Dev {
			// Deleted or replaced since it was mapped: the mapping itself
			// still reaches the file.
			open = filepath.Join(procDir, "map_files", fmt.Sprintf("%x-%x", m.StartAddr, m.EndAddr))
		}
		t := d.cache.inspect(open, m.Pathname)
		if t.Stack != StackNone {
			out.Targets = append(out.Targets, t)
			out.Open = append(out.Open, open)
		}
	}
	return out, nil
}

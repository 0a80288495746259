package hook

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Cgroup2Path returns where the cgroup v2 hierarchy is mounted (its root),
// read from /proc/self/mounts: /sys/fs/cgroup on unified hosts,
// /sys/fs/cgroup/unified on hybrid ones.
func Cgroup2Path() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	best := ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			// Prefer the shortest path: the host's root, not a nested mount.
			if best == "" || len(fields[1]) < len(best) {
				best = fields[1]
			}
		}
	}
	if best == "" {
		return "", fmt.Errorf("%w: cgroup v2 is not mounted (mount -t cgroup2 none /sys/fs/cgroup)", ErrUnavailable)
	}
	return best, nil
}

// Cgroup attaches a cgroup program (cgroup_skb, sock_addr, sock) to the root
// of the cgroup v2 hierarchy, so it applies to every process on the host.
func Cgroup(at ebpf.AttachType) AttachFunc {
	return func(p *ebpf.Program) (link.Link, error) {
		path, err := Cgroup2Path()
		if err != nil {
			return nil, err
		}
		return link.AttachCgroup(link.CgroupOptions{Path: path, Attach: at, Program: p})
	}
}

func probeCgroup(t ebpf.ProgramType) error {
	if _, err := Cgroup2Path(); err != nil {
		return err
	}
	return programType(t)
}

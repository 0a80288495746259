package harness

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ContainerCgroup is a container's cgroup laid out as containerd's CRI
// plugin lays it out (systemd driver):
//
//	kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope
//
// under a per-test root, in the cgroup v2 hierarchy and, on a hybrid host,
// in a cgroup v1 one too (pids), so processes started in it look to the
// agent like a pod's container in both layouts. It is removed on cleanup
// (after the processes started in it, which t.Cleanup stops first).
type ContainerCgroup struct {
	ID    string   // 64 hex digits, as the container's status reports it
	Paths []string // the directories, v2 first
}

// NewContainerID returns a random container id (64 hex digits).
func NewContainerID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// cgroupRoots are the cgroup2 mount and, if mounted, cgroup v1's pids
// hierarchy.
func cgroupRoots() (v2, v1pids string, err error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 4 {
			continue
		}
		switch {
		case fields[2] == "cgroup2" && (v2 == "" || len(fields[1]) < len(v2)):
			v2 = fields[1]
		case fields[2] == "cgroup" && strings.Contains(","+fields[3]+",", ",pids,"):
			v1pids = fields[1]
		}
	}
	if v2 == "" {
		return "", "", fmt.Errorf("cgroup2 is not mounted")
	}
	return v2, v1pids, nil
}

// NewContainerCgroup creates the cgroup of container id of the pod podUID.
func NewContainerCgroup(t testing.TB, podUID, id string) *ContainerCgroup {
	t.Helper()
	RequireRoot(t)
	v2, v1, err := cgroupRoots()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	sweepStaleCgroups(v2, v1)
	pod := "kubepods-besteffort-pod" + strings.ReplaceAll(podUID, "-", "_") + ".slice"
	rel := filepath.Join("kubepods.slice", "kubepods-besteffort.slice", pod, "cri-containerd-"+id+".scope")
	c := &ContainerCgroup{ID: id}
	for _, base := range []string{v2, v1} {
		if base == "" {
			continue
		}
		root := filepath.Join(base, fmt.Sprintf("otelbee-e2e-%d.slice", os.Getpid()))
		path := filepath.Join(root, rel)
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatalf("harness: creating cgroup %s: %v", path, err)
		}
		c.Paths = append(c.Paths, path)
		t.Cleanup(func() {
			// Leaf first; a parent another container still uses stays.
			// The leaf may be busy a moment while its last process exits;
			// a parent is busy for good while it has other children.
			err := syscall.Rmdir(path)
			for i := 0; err == syscall.EBUSY && i < 50; i++ {
				time.Sleep(20 * time.Millisecond)
				err = syscall.Rmdir(path)
			}
			for p := filepath.Dir(path); strings.HasPrefix(p, root); p = filepath.Dir(p) {
				syscall.Rmdir(p)
			}
		})
	}
	return c
}

// Command returns a command that runs argv inside the cgroup: a shell
// moves itself in, then execs argv, so the program's exec (where the agent
// reads a process's identity) already happens inside.
func (c *ContainerCgroup) Command(argv ...string) *exec.Cmd {
	script := ""
	for _, p := range c.Paths {
		script += fmt.Sprintf("echo $$ > %q/cgroup.procs && ", p)
	}
	return exec.Command("/bin/sh", append([]string{"-c", script + `exec "$@"`, "sh"}, argv...)...)
}

// sweepStaleCgroups removes the empty cgroup trees of test processes that
// died before their cleanup ran.
func sweepStaleCgroups(bases ...string) {
	for _, base := range bases {
		if base == "" {
			continue
		}
		roots, _ := filepath.Glob(filepath.Join(base, "otelbee-e2e-*.slice"))
		for _, root := range roots {
			pid := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(root), "otelbee-e2e-"), ".slice")
			if _, err := os.Stat(filepath.Join("/proc", pid)); err == nil {
				continue // that test binary still runs
			}
			var dirs []string
			filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				syscall.Rmdir(dirs[i])
			}
		}
	}
}

package identity

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestContainerOfGoneProcess: a process gone before its exec was handled
// (no /proc/<pid>/cgroup left) keeps its container, found from the cgroup
// id its exec event carried: the inode of its cgroup's directory.
func TestContainerOfGoneProcess(t *testing.T) {
	root := t.TempDir()
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	dir := filepath.Join(root, "kubepods.slice", "kubepods-besteffort.slice", "kubepods-besteffort-pod1234.slice", "cri-containerd-"+id+".scope")
	other := filepath.Join(root, "system.slice", "cron.service")
	for _, d := range []string{dir, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ino := func(p string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	r := NewResolver(t.TempDir(), "host") // an empty /proc: every process gone
	r.cgroups.root = root
	p := r.RefreshExec(4242, "job", []byte("OTEL_SERVICE_NAME=job\x00"), ino(dir))
	if p.ContainerID != id {
		t.Errorf("container %q, want %q", p.ContainerID, id)
	}
	if p := r.RefreshExec(4243, "cron", nil, ino(other)); p.ContainerID != "" {
		t.Errorf("a cgroup outside any container gave container %q", p.ContainerID)
	}
	if p := r.RefreshExec(4244, "x", nil, 0); p.ContainerID != "" {
		t.Errorf("no cgroup id gave container %q", p.ContainerID)
	}
	// A cgroup made after the last walk is found by the next one.
	later := filepath.Join(filepath.Dir(dir), "cri-containerd-"+id[:60]+"ffff.scope")
	if err := os.Mkdir(later, 0o755); err != nil {
		t.Fatal(err)
	}
	r.cgroups.lastWalk = r.cgroups.lastWalk.Add(-walkEvery)
	if got := r.cgroups.containerID(ino(later)); got != id[:60]+"ffff" {
		t.Errorf("new cgroup: container %q", got)
	}
}

func TestCgroup2Mount(t *testing.T) {
	f := filepath.Join(t.TempDir(), "mounts")
	os.WriteFile(f, []byte("cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\nproc /proc proc rw 0 0\n"), 0o644)
	if got := cgroup2Mount(f); got != "/sys/fs/cgroup" {
		t.Errorf("got %q", got)
	}
	os.WriteFile(f, []byte("proc /proc proc rw 0 0\n"), 0o644)
	if got := cgroup2Mount(f); got != "-" {
		t.Errorf("no cgroup2: got %q", got)
	}
}

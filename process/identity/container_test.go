package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

// More cgroup layouts that name a container: CRI-O, Docker on cgroup v1, a
// hybrid v1+v2 host, and paths seen from inside a cgroup namespace.
func TestContainerIDFromCgroupLayouts(t *testing.T) {
	id := strings.Repeat("ab12", 16)
	tests := []struct{ name, cgroup, want string }{
		{"cri-o v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e_2d3c.slice/crio-" + id + ".scope\n", id},
		{"docker v1", "12:pids:/docker/" + id + "\n11:memory:/docker/" + id + "\n", id},
		{"containerd cgroupfs v1", "4:memory:/kubepods/besteffort/pod5f3a9e1c-0000-4000-8000-000000000001/" + id + "\n", id},
		{"hybrid", "1:name=systemd:/system.slice/containerd.service\n0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + id + ".scope\n", id},
		{"from inside a cgroup namespace", "0::/../../kubepods-besteffort-pod1.slice/cri-containerd-" + id + ".scope\n", id},
		{"pod uid is not a container id", "0::/kubepods.slice/kubepods-pod5f3a9e1c_0000_4000_8000_000000000001.slice\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ContainerIDFromCgroup([]byte(tt.cgroup)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

type fakeContainers map[string]ContainerInfo

func (f fakeContainers) Container(id string) (ContainerInfo, bool) {
	info, ok := f[id]
	return info, ok
}

// fakeProc writes a /proc/<pid> with the files the resolver reads.
func fakeProc(t *testing.T, root string, pid, cgroup, environ string) {
	t.Helper()
	dir := filepath.Join(root, pid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := pid + " (srv) S 1 " + strings.Repeat("0 ", 17) + "4242 0 0\n"
	for name, content := range map[string]string{"stat": stat, "cgroup": cgroup, "environ": environ, "comm": "srv\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestContainerSource(t *testing.T) {
	idA, idB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	root := t.TempDir()
	fakeProc(t, root, "100", "0::/kubepods.slice/cri-containerd-"+idA+".scope\n", "PATH=/bin\x00")
	fakeProc(t, root, "101", "0::/kubepods.slice/cri-containerd-"+idA+".scope\n",
		"OTEL_SERVICE_NAME=own\x00OTEL_RESOURCE_ATTRIBUTES=service.namespace=ownns\x00")
	fakeProc(t, root, "102", "0::/kubepods.slice/cri-containerd-"+idB+".scope\n", "")
	fakeProc(t, root, "103", "0::/user.slice\n", "")
	r := NewResolver(root, "node1")
	r.SetContainerSource(fakeContainers{idA: {
		Attributes:  []attribute.KeyValue{attribute.String("k8s.pod.name", "web-1")},
		ServiceName: "web", ServiceNamespace: "shop", ServiceVersion: "1.2", ServiceInstanceID: "shop.web-1.srv",
	}})
	attrs := func(pid uint32) map[string]string {
		m := map[string]string{}
		for _, kv := range r.Lookup(pid).Attributes() {
			m[string(kv.Key)] = kv.Value.Emit()
		}
		return m
	}
	for _, tc := range []struct {
		pid  uint32
		want map[string]string
	}{
		{100, map[string]string{"service.name": "web", "service.namespace": "shop", "service.version": "1.2",
			"service.instance.id": "shop.web-1.srv", "k8s.pod.name": "web-1", "container.id": idA, "process.pid": "100"}},
		// The program's own OTEL_SERVICE_NAME and namespace win.
		{101, map[string]string{"service.name": "own", "service.namespace": "ownns", "service.version": "1.2",
			"service.instance.id": "shop.web-1.srv", "k8s.pod.name": "web-1", "container.id": idA, "process.pid": "101"}},
		// A container the source does not know: container.id only.
		{102, map[string]string{"service.name": "srv", "service.instance.id": "node1:102", "container.id": idB, "process.pid": "102"}},
		{103, map[string]string{"service.name": "srv", "service.instance.id": "node1:103", "process.pid": "103"}},
	} {
		got := attrs(tc.pid)
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("pid %d: %s = %q, want %q (all: %v)", tc.pid, k, got[k], v, got)
			}
		}
		for k := range got {
			if _, ok := tc.want[k]; !ok && k != "process.executable.name" {
				t.Errorf("pid %d: unexpected %s=%q", tc.pid, k, got[k])
			}
		}
	}
}

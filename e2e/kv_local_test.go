package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/e2e/harness"
)

// hostNetns is a network namespace joined to the root namespace by a veth
// pair: a client in it reaches a server of the root namespace through the
// host's veth address, as a container reaches its host over a bridge.
type hostNetns struct {
	ns             string
	hostIP, nsIP   string
	hostDev, nsDev string
}

// newHostNetns makes a namespace (named as the harness names its pairs, so a
// dead test's is swept) and its veth link with a /30 of its own in
// 198.19.0.0/16, deleted on cleanup.
func newHostNetns(t *testing.T) *hostNetns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: ip (iproute2) not installed")
	}
	n := time.Now().UnixNano()
	sub := int(n/1000) % 16000
	h := &hostNetns{
		ns:      fmt.Sprintf("obe-dblocal-%d-%d-a", os.Getpid(), n%100000),
		hostIP:  fmt.Sprintf("198.19.%d.%d", sub/64, (sub%64)*4+1),
		nsIP:    fmt.Sprintf("198.19.%d.%d", sub/64, (sub%64)*4+2),
		hostDev: fmt.Sprintf("obd%d", n%1000000),
		nsDev:   "veth0",
	}
	run := func(argv ...string) {
		t.Helper()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
		}
	}
	run("ip", "netns", "add", h.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", h.ns).Run() })
	run("ip", "link", "add", h.hostDev, "type", "veth", "peer", "name", h.nsDev, "netns", h.ns)
	t.Cleanup(func() { exec.Command("ip", "link", "delete", h.hostDev).Run() })
	run("ip", "addr", "add", h.hostIP+"/30", "dev", h.hostDev)
	run("ip", "link", "set", h.hostDev, "up")
	run("ip", "-n", h.ns, "addr", "add", h.nsIP+"/30", "dev", h.nsDev)
	run("ip", "-n", h.ns, "link", "set", h.nsDev, "up")
	run("ip", "-n", h.ns, "link", "set", "lo", "up")
	// both ends up (carrier), or the first SYN waits for the link watch
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		host, _ := os.ReadFile("/sys/class/net/" + h.hostDev + "/operstate")
		peer, _ := exec.Command("ip", "netns", "exec", h.ns, "cat", "/sys/class/net/"+h.nsDev+"/operstate").Output()
		if strings.TrimSpace(string(host)) == "up" && strings.TrimSpace(string(peer)) == "up" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("veth %s/%s not up: %q %q", h.hostDev, h.nsDev, host, peer)
		}
	}
	return h
}

// TestKVLocalClientCountedOnce ("never twice when both are here", issue 14):
// Redis commands from redis-benchmark, counted against each server's own
// INFO commandstats, with the server in the root namespace:
//   - veth: the client in a network namespace of its own reaching the
//     server through the host's veth address: counted once, under the
//     client (its server end is given up in the kernel, since its client
//     end is tracked), with the server as server.address; nothing under
//     the server;
//   - excluded-veth and excluded-loopback: the same client left out by the
//     agent's executable filter (as a client on another host is not
//     observed): counted once, under the server, from the server's side.
//
// Before the kernel decided this, the veth client was counted twice and the
// excluded loopback client not at all.
func TestKVLocalClientCountedOnce(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"redis-server", "redis-cli", "redis-benchmark"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not installed", bin)
		}
	}
	h := newHostNetns(t)
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	// A copy of redis-benchmark under a name of its own, which the agent
	// leaves out.
	excluded := "obx" + sfx[len(sfx)-6:]
	bench, _ := exec.LookPath("redis-benchmark")
	exe := filepath.Join(t.TempDir(), excluded)
	if out, err := exec.Command("cp", bench, exe).CombinedOutput(); err != nil {
		t.Fatalf("copying redis-benchmark: %v: %s", err, out)
	}
	agent := harness.StartAgent(t, nil, "--collectors=redis", "--l7.exclude-executables="+excluded)
	for _, tc := range []struct {
		name     string
		netns    bool // the client in the namespace, the server on the host's veth address
		excluded bool
	}{
		{"veth", true, false},
		{"excluded-veth", true, true},
		{"excluded-loopback", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
			port := harness.FreePort(t)
			addr := "127.0.0.1"
			if tc.netns {
				addr = h.hostIP
			}
			server, client := "rlsrv-"+sfx, "rlcli-"+sfx
			rpServer(t, server, fmt.Sprintf("127.0.0.1:%d", port), "redis-server", "--port", strconv.Itoa(port),
				"--bind", "127.0.0.1", h.hostIP, "--protected-mode", "no", "--save", "", "--appendonly", "no")
			argv := []string{"redis-benchmark", "-h", addr, "-p", strconv.Itoa(port), "-q", "-n", "500", "-c", "2", "-t", "set,get,incr"}
			if tc.excluded {
				argv[0] = exe
			}
			if tc.netns {
				argv = append([]string{"ip", "netns", "exec", h.ns}, argv...)
			}
			runClient(t, client, argv...)
			calls, _ := redisStats(t, port)
			want := sum(calls)
			recorder, other := client, server
			if tc.excluded {
				recorder, other = server, client
			}
			mfs := kvWait(t, agent, func(mfs map[string]*dto.MetricFamily) bool { return sum(redisOps(mfs, recorder)) >= want })
			if got := redisOps(mfs, recorder); fmt.Sprint(got) != fmt.Sprint(calls) {
				t.Errorf("%s: agent %v\nredis-server %v", recorder, got, calls)
			}
			if got := redisOps(mfs, other); len(got) != 0 {
				t.Errorf("%s: %v, want nothing (counted once, by %s)", other, got, recorder)
			}
			if !tc.excluded {
				if n, _ := rpHist(mfs, "db_client_operation_duration_seconds", svc(client, "server_address", addr, "server_port", strconv.Itoa(port))); n != want {
					t.Errorf("%s: %d operations with server.address %s:%d, want %d", client, n, addr, port, want)
				}
			}
			kvNoDrops(t, mfs, recorder)
		})
	}
}

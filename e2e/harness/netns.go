package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses of a NetnsPair: the benchmarking range 198.18.0.0/15 and the ULA
// range fd00::/8, on a link of its own (pairs never share a link, so every pair
// can use the same addresses).
const (
	PairIPv4A = "198.18.0.1"
	PairIPv4B = "198.18.0.2"
	PairIPv6A = "fd00:198:18::1"
	PairIPv6B = "fd00:198:18::2"
	PairDev   = "veth0"
)

// NetnsPair is two network namespaces joined by a veth pair. Both namespaces
// have lo up; each side's veth is named PairDev ("veth0") and has an IPv4 /24 and
// an IPv6 /64 address (IPv6 without duplicate address detection, usable at once).
type NetnsPair struct {
	A, B         string // namespace names, as used by `ip netns`
	DevA, DevB   string // veth device in A and in B
	IPv4A, IPv4B string
	IPv6A, IPv6B string
}

var netnsSeq atomic.Int64

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,24}$`)

// NewNetnsPair creates the namespaces "obe-<name>-<pid>-<n>-a" and "...-b" and
// the link between them, and deletes both on t.Cleanup (which also removes the
// veth pair). name must match [A-Za-z0-9_-]{1,24}. Needs root: it skips the test
// otherwise.
func NewNetnsPair(t testing.TB, name string) *NetnsPair {
	t.Helper()
	p := newNamespaces(t, name, PairDev)
	// Distinct ifindexes on the two ends: with equal ones (both namespaces are
	// fresh, so both would get 2) the kernel treats the carrier change as not
	// urgent and the link only comes up after the 1s link-watch delay.
	if out, err := exec.Command("ip", "link", "add", p.DevA, "netns", p.A, "index", "10",
		"type", "veth", "peer", "name", p.DevB, "netns", p.B, "index", "11").CombinedOutput(); err != nil {
		t.Fatalf("harness: netns pair %s: create veth: %v: %s", p.A, err, bytes.TrimSpace(out))
	}
	p.configure(t)
	// Wait for carrier on both ends so the first packet is not lost.
	deadline := time.Now().Add(5 * time.Second)
	for _, side := range [][2]string{{p.A, p.DevA}, {p.B, p.DevB}} {
		for {
			out, err := Exec(side[0], "cat", "/sys/class/net/"+side[1]+"/operstate")
			if err == nil && strings.TrimSpace(string(out)) == "up" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("harness: netns %s: %s not up after 5s (operstate %q, err %v)", side[0], side[1], bytes.TrimSpace(out), err)
			}
			time.Sleep(20 * time.Millisecond) // no event to wait on without netlink
		}
	}
	return p
}

// newNamespaces creates the two namespaces of a pair (deleted on t.Cleanup)
// with devices named dev, not yet created.
func newNamespaces(t testing.TB, name, dev string) *NetnsPair {
	t.Helper()
	RequireRoot(t)
	if !nameRE.MatchString(name) {
		t.Fatalf("harness: netns pair name %q: want [A-Za-z0-9_-]{1,24}", name)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("e2e: the ip command (iproute2) is needed for network namespaces: %v", err)
	}
	sweepOnce.Do(sweepStaleNamespaces)
	base := fmt.Sprintf("obe-%s-%d-%d", name, os.Getpid(), netnsSeq.Add(1))
	p := &NetnsPair{
		A: base + "-a", B: base + "-b",
		DevA: dev, DevB: dev,
		IPv4A: PairIPv4A, IPv4B: PairIPv4B,
		IPv6A: PairIPv6A, IPv6B: PairIPv6B,
	}
	for _, ns := range []string{p.A, p.B} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("harness: ip netns add %s: %v: %s", ns, err, bytes.TrimSpace(out))
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
				t.Errorf("harness: ip netns delete %s: %v: %s", ns, err, bytes.TrimSpace(out))
			}
		})
	}
	return p
}

var (
	sweepOnce sync.Once
	staleNSRE = regexp.MustCompile(`^obe-[A-Za-z0-9_-]+-(\d+)-\d+-[ab]$`)
)

// sweepStaleNamespaces deletes pair namespaces left behind by test processes
// that died without running their cleanups (a panic, a -timeout, SIGKILL): the
// creating pid is part of the name, and a namespace whose creator is gone is
// deleted.
func sweepStaleNamespaces() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		m := staleNSRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			_ = exec.Command("ip", "netns", "delete", e.Name()).Run()
		}
	}
}

// configure brings lo and the pair's devices up and assigns the addresses.
func (p *NetnsPair) configure(t testing.TB) {
	t.Helper()
	steps := [][]string{
		{"ip", "-n", p.A, "link", "set", "lo", "up"},
		{"ip", "-n", p.B, "link", "set", "lo", "up"},
		{"ip", "-n", p.A, "addr", "add", p.IPv4A + "/24", "dev", p.DevA},
		{"ip", "-n", p.B, "addr", "add", p.IPv4B + "/24", "dev", p.DevB},
		{"ip", "-n", p.A, "-6", "addr", "add", p.IPv6A + "/64", "dev", p.DevA, "nodad"},
		{"ip", "-n", p.B, "-6", "addr", "add", p.IPv6B + "/64", "dev", p.DevB, "nodad"},
		{"ip", "-n", p.A, "link", "set", p.DevA, "up"},
		{"ip", "-n", p.B, "link", "set", p.DevB, "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("harness: netns pair %s: %s: %v: %s", p.A, strings.Join(s, " "), err, bytes.TrimSpace(out))
		}
	}
}

// Command returns a command that runs argv inside network namespace ns
// (`ip netns exec ns argv...`). ip execs argv directly, so the process's pid and
// executable are argv's own. Start it with StartProcess for supervision.
func Command(ns string, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
}

// Exec runs argv inside network namespace ns and returns its standard output.
// The error includes the exit status and standard error.
func Exec(ns string, argv ...string) ([]byte, error) {
	cmd := Command(ns, argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("netns %s: %s: %w: %s", ns, strings.Join(argv, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// ErrNetemUnsupported is returned (wrapped) by Netem when the kernel has no netem
// qdisc (CONFIG_NET_SCH_NETEM unset or module missing).
var ErrNetemUnsupported = errors.New("netem qdisc not supported by this kernel (CONFIG_NET_SCH_NETEM)")

// Netem sets the root qdisc of dev in ns to netem with args, e.g.
// Netem(ns, "veth0", "delay", "20ms") or ("loss", "5%"); it replaces any earlier
// netem setting on the device.
func Netem(ns, dev string, args ...string) error {
	argv := append([]string{"tc", "qdisc", "replace", "dev", dev, "root", "netem"}, args...)
	if _, err := Exec(ns, argv...); err != nil {
		if strings.Contains(err.Error(), "qdisc kind is unknown") {
			return fmt.Errorf("%w: %w", ErrNetemUnsupported, err)
		}
		return err
	}
	return nil
}

// NetemOrSkip applies Netem and skips the test when the kernel lacks netem; any
// other failure fails the test.
func NetemOrSkip(t testing.TB, ns, dev string, args ...string) {
	t.Helper()
	if err := Netem(ns, dev, args...); err != nil {
		if errors.Is(err, ErrNetemUnsupported) {
			t.Skipf("e2e: %v", err)
		}
		t.Fatalf("harness: %v", err)
	}
}

// NetemClear removes the root qdisc of dev in ns (back to the default).
func NetemClear(ns, dev string) error {
	_, err := Exec(ns, "tc", "qdisc", "del", "dev", dev, "root")
	return err
}

// Snmp returns the network stack counters of namespace ns, named as nstat names
// them: the protocol prefix followed by the field, from /proc/net/snmp
// ("TcpRetransSegs", "TcpActiveOpens", "IpInReceives", "UdpInDatagrams"),
// /proc/net/netstat ("TcpExtTCPSynRetrans", "TcpExtListenDrops") and
// /proc/net/snmp6 ("Ip6InReceives").
func Snmp(ns string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, f := range []string{"/proc/net/snmp", "/proc/net/netstat"} {
		b, err := Exec(ns, "cat", f)
		if err != nil {
			return nil, err
		}
		if err := parseSnmpPairs(b, out); err != nil {
			return nil, fmt.Errorf("netns %s: %s: %w", ns, f, err)
		}
	}
	if b, err := Exec(ns, "cat", "/proc/net/snmp6"); err == nil { // absent without IPv6
		if err := parseSnmp6(b, out); err != nil {
			return nil, fmt.Errorf("netns %s: /proc/net/snmp6: %w", ns, err)
		}
	}
	return out, nil
}

// parseSnmpPairs parses the header/value line pairs of /proc/net/snmp and
// /proc/net/netstat ("Tcp: RtoAlgorithm ..." then "Tcp: 1 ...").
func parseSnmpPairs(b []byte, out map[string]int64) error {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines)%2 != 0 {
		return fmt.Errorf("odd number of lines (%d)", len(lines))
	}
	for i := 0; i < len(lines); i += 2 {
		hdr, val := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(hdr) == 0 || len(hdr) != len(val) || hdr[0] != val[0] || !strings.HasSuffix(hdr[0], ":") {
			return fmt.Errorf("line %d: header and values do not match: %q / %q", i+1, lines[i], lines[i+1])
		}
		proto := strings.TrimSuffix(hdr[0], ":")
		for j := 1; j < len(hdr); j++ {
			v, err := strconv.ParseInt(val[j], 10, 64)
			if err != nil {
				return fmt.Errorf("%s%s: %w", proto, hdr[j], err)
			}
			out[proto+hdr[j]] = v
		}
	}
	return nil
}

func parseSnmp6(b []byte, out map[string]int64) error {
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %w", f[0], err)
		}
		out[f[0]] = v
	}
	return s.Err()
}

// InNetns runs fn on an OS thread that has joined network namespace ns. Sockets
// fn creates belong to ns and stay there after fn returns, so fn can create
// listeners or connections that the caller then uses from any goroutine. Other
// goroutines are unaffected. The thread is discarded if it cannot rejoin the
// original namespace.
func InNetns(ns string, fn func() error) error {
	type result struct{ err error }
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately no UnlockOSThread on failure paths after Setns: a goroutine
		// that exits locked takes its (tainted) thread with it.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{fmt.Errorf("netns %s: open own netns: %w", ns, err)}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{fmt.Errorf("netns %s: %w", ns, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{fmt.Errorf("netns %s: setns: %w", ns, err)}
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{errors.Join(ferr, fmt.Errorf("netns %s: restore original netns: %w", ns, err))}
			return
		}
		runtime.UnlockOSThread()
		done <- result{ferr}
	}()
	return (<-done).err
}

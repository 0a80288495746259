package e2e

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/otelbee/otelbee/e2e/harness"
)

// The DNS tests run a real dnsmasq in namespace B of a pair and the clients
// (dig, Python's getaddrinfo through glibc, Go's own resolver, dnsperf) in
// namespace A, whose /etc/resolv.conf is /etc/netns/<A>/resolv.conf (ip netns
// exec bind-mounts it; the host's resolver is never touched). Ground truth is
// what each client says it got.

const dnsDomain = "otelbee.test"

type dnsEnv struct {
	pair   *harness.NetnsPair
	server string
}

func dnsRequireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("e2e: %s not installed (make deps installs it): %v", tool, err)
		}
	}
}

// startDNSEnv creates the pair, the resolv.conf of A and dnsmasq on B, and
// waits until dnsmasq accepts TCP on port 53 (no DNS query: the agent may
// already be running in other tests' namespaces, never in this one's).
func startDNSEnv(t *testing.T, name string, dnsmasqArgs ...string) *dnsEnv {
	t.Helper()
	harness.RequireRoot(t)
	dnsRequireTools(t, "dnsmasq", "dig")
	pair := harness.NewNetnsPair(t, name)
	dir := filepath.Join("/etc/netns", pair.A)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := fmt.Sprintf("nameserver %s\noptions attempts:1 timeout:3\n", pair.IPv4B)
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
		"--listen-address=" + pair.IPv4B, "--port=53", "--pid-file=" + filepath.Join(t.TempDir(), "dnsmasq.pid"),
		"--log-queries", "--log-facility=-", "--cache-size=0",
		"--local=/" + dnsDomain + "/",
		"--host-record=web." + dnsDomain + ",198.18.0.10,fd00:198:18::10",
		"--txt-record=txt." + dnsDomain + ",v=otelbee",
		"--srv-host=_sip._udp." + dnsDomain + ",sip." + dnsDomain + ",5060",
		"--cname=alias." + dnsDomain + ",web." + dnsDomain,
	}
	args = append(args, dnsmasqArgs...)
	p := harness.StartProcess(t, "dnsmasq", harness.Command(pair.B, args...))
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := harness.InNetns(pair.A, func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(pair.IPv4B, "53"), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			break
		}
		if exited, _ := p.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("dnsmasq not ready: %v\n%s", err, p.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &dnsEnv{pair: pair, server: pair.IPv4B}
}

// dnsOutcomeKey is how lookups are counted: service, name, type, code, transport.
func dnsOutcomeKey(service, name, qtype, code, transport string) string {
	return strings.Join([]string{service, name, qtype, code, transport}, " ")
}

var dnsDigStatus = regexp.MustCompile(`status: ([A-Z]+),`)

// dnsDig runs one dig in ns and returns the response code it printed.
func dnsDig(t *testing.T, ns, service string, args ...string) (code string, pid int) {
	t.Helper()
	cmd := harness.Command(ns, append([]string{"dig"}, args...)...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid = cmd.Process.Pid
	err := cmd.Wait()
	if m := dnsDigStatus.FindStringSubmatch(out.String()); m != nil {
		return m[1], pid
	}
	if err == nil {
		t.Fatalf("dig %v: no status in output:\n%s", args, out.String())
	}
	return "", pid // no answer (timeout)
}

func dnsRunClient(t *testing.T, ns, service string, argv ...string) (string, int) {
	t.Helper()
	cmd := harness.Command(ns, argv...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s%s", service, err, out.String(), errb.String())
	}
	return out.String(), cmd.Process.Pid
}

func dnsScrapeFamilies(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return mfs
}

func dnsLabelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

// dnsLookupCounts sums dns_lookup_duration_seconds_count by dnsOutcomeKey for the
// services given, and collects each service's instance label values.
func dnsLookupCounts(mfs map[string]*dto.MetricFamily, services map[string]bool) (map[string]uint64, map[string]map[string]bool) {
	counts := map[string]uint64{}
	instances := map[string]map[string]bool{}
	mf := mfs["dns_lookup_duration_seconds"]
	if mf == nil {
		return counts, instances
	}
	for _, m := range mf.GetMetric() {
		l := dnsLabelsOf(m)
		svc := l["job"]
		if !services[svc] {
			continue
		}
		code := l["otelbee_dns_response_code"]
		if code == "" {
			code = l["error_type"]
		}
		counts[dnsOutcomeKey(svc, l["dns_question_name"], l["otelbee_dns_question_type"], code, l["network_transport"])] += m.GetHistogram().GetSampleCount()
		if instances[svc] == nil {
			instances[svc] = map[string]bool{}
		}
		instances[svc][l["instance"]] = true
	}
	return counts, instances
}

// dnsFamilySum adds the values of a counter or gauge family's series whose
// labels include match.
func dnsFamilySum(mfs map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	var sum float64
	mf := mfs[name]
	if mf == nil {
		return 0
	}
series:
	for _, m := range mf.GetMetric() {
		l := dnsLabelsOf(m)
		for k, v := range match {
			if l[k] != v {
				continue series
			}
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

func dnsCountsString(m map[string]uint64) string {
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("  %s = %d", k, v))
	}
	sort.Strings(s)
	return strings.Join(s, "\n")
}

func dnsEqualUint(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// dnsWaitLookups polls the agent until its counts for services equal want.
func dnsWaitLookups(t *testing.T, agent *harness.Agent, services map[string]bool, want map[string]uint64) map[string]map[string]bool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, inst := dnsLookupCounts(dnsScrapeFamilies(t, agent.MetricsURL), services)
		if dnsEqualUint(got, want) {
			return inst
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent's lookups differ from the clients':\nagent:\n%s\nclients:\n%s\n%s", dnsCountsString(got), dnsCountsString(want), agent.LogTail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func dnsCheckInstances(t *testing.T, got map[string]map[string]bool, service string, pids ...int) {
	t.Helper()
	// Clients (processes that do not listen) of one service are one
	// instance on the host, whichever of the processes %v looked up.
	want := map[string]bool{hostname() + ":" + service: true}
	for id := range got[service] {
		if !want[id] {
			t.Errorf("%s: lookups of the client processes %v credited to instance %s, want %s:%s", service, pids, id, hostname(), service)
		}
	}
	if len(got[service]) == 0 {
		t.Errorf("%s: no lookups credited", service)
	}
}

// TestDNSClientsExact: dig (mixed types, existing and NXDOMAIN names), a
// Python client using getaddrinfo (glibc's resolver), a Go client with the
// pure-Go resolver, and dig over TCP: the agent's counts per service, name,
// type, response code and transport equal what the clients got, credited to
// the client processes.
//
// The same with the packet hook forced onto its fallback (the net
// tracepoints), where DNS over TCP is not seen.
func TestDNSClientsExact(t *testing.T) {
	for _, mode := range []string{"auto", "tracepoint"} {
		t.Run(mode, func(t *testing.T) { testDNSClientsExact(t, mode) })
	}
}

func testDNSClientsExact(t *testing.T, mode string) {
	dnsRequireTools(t, "python3")
	env := startDNSEnv(t, "dns")
	goclient := buildTool(t, "./e2e/testdata/dns/goclient")
	args := []string{"--collectors=dns"}
	if mode != "auto" {
		args = append(args, "--attach-mode="+mode, "--attach-mode.strict")
	}
	agent := harness.StartAgent(t, nil, args...)
	tcp := mode == "auto"

	want := map[string]uint64{}
	var digPids, digTCPPids []int
	digPlan := []struct {
		name, qtype string
		n           int
	}{
		{"web", "A", 3}, {"web", "AAAA", 2}, {"txt", "TXT", 2}, {"_sip._udp", "SRV", 2},
		{"alias", "CNAME", 1}, {"missing", "A", 3}, {"nx2", "MX", 1},
	}
	sawCodes := map[string]bool{}
	for _, p := range digPlan {
		name := p.name + "." + dnsDomain
		for range p.n {
			code, pid := dnsDig(t, env.pair.A, "dns-dig", "@"+env.server, "+tries=1", "+timeout=3", name, p.qtype)
			if code == "" {
				t.Fatalf("dig %s %s: no answer", name, p.qtype)
			}
			sawCodes[code] = true
			want[dnsOutcomeKey("dns-dig", name, p.qtype, code, "udp")]++
			digPids = append(digPids, pid)
		}
	}
	// PTR of the host record's address.
	for range 2 {
		code, pid := dnsDig(t, env.pair.A, "dns-dig", "@"+env.server, "+tries=1", "+timeout=3", "-x", "198.18.0.10")
		want[dnsOutcomeKey("dns-dig", "10.0.18.198.in-addr.arpa", "PTR", code, "udp")]++
		digPids = append(digPids, pid)
	}
	if !sawCodes["NOERROR"] || !sawCodes["NXDOMAIN"] {
		t.Fatalf("dnsmasq answered %v; the plan needs NOERROR and NXDOMAIN", sawCodes)
	}
	// DNS over TCP.
	for _, p := range []struct {
		name string
		n    int
	}{{"web", 3}, {"missing", 2}} {
		if !tcp {
			break
		}
		name := p.name + "." + dnsDomain
		for range p.n {
			code, pid := dnsDig(t, env.pair.A, "dns-dig-tcp", "@"+env.server, "+tcp", "+tries=1", "+timeout=3", name, "A")
			want[dnsOutcomeKey("dns-dig-tcp", name, "A", code, "tcp")]++
			digTCPPids = append(digTCPPids, pid)
		}
	}

	// Python: getaddrinfo (glibc) for IPv4 only, so one A query per call.
	py := `
import socket
for name, n in (("web.otelbee.test.", 4), ("missing.otelbee.test.", 2)):
    for _ in range(n):
        try:
            socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
            code = "NOERROR"
        except socket.gaierror as e:
            code = "NXDOMAIN" if e.errno == socket.EAI_NONAME else "ERROR " + str(e)
        print(name.rstrip("."), "A", code)
`
	out, pyPid := dnsRunClient(t, env.pair.A, "dns-python", "python3", "-c", py)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("python client: %q", line)
		}
		want[dnsOutcomeKey("dns-python", f[0], f[1], f[2], "udp")]++
	}

	// Go's own resolver.
	out, goPid := dnsRunClient(t, env.pair.A, "dns-go", goclient,
		"A:web.otelbee.test.:3", "TXT:txt.otelbee.test.:2", "SRV:_sip._udp.otelbee.test.:1", "A:missing.otelbee.test.:2")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("go client: %q", line)
		}
		want[dnsOutcomeKey("dns-go", f[0], f[1], f[2], "udp")]++
	}

	services := map[string]bool{"dns-dig": true, "dns-dig-tcp": true, "dns-python": true, "dns-go": true}
	inst := dnsWaitLookups(t, agent, services, want)
	dnsCheckInstances(t, inst, "dns-dig", digPids...)
	if tcp {
		dnsCheckInstances(t, inst, "dns-dig-tcp", digTCPPids...)
	}
	dnsCheckInstances(t, inst, "dns-python", pyPid)
	dnsCheckInstances(t, inst, "dns-go", goPid)
	mfs := dnsScrapeFamilies(t, agent.MetricsURL)
	for _, s := range []string{"dns-dig", "dns-python", "dns-go"} {
		if v := dnsFamilySum(mfs, "otelbee_dns_lookups_dropped_total", map[string]string{"job": s}); v != 0 {
			t.Errorf("%s: %v lookups dropped, want 0", s, v)
		}
	}
	t.Logf("agent counts equal the clients':\n%s", dnsCountsString(want))
}

// TestDNSTimeoutsFreeState: queries to a resolver address that never answers
// are counted as timeouts, and the pending state (kernel map and agent) is
// freed.
func TestDNSTimeoutsFreeState(t *testing.T) {
	env := startDNSEnv(t, "dnsto")
	agent := harness.StartAgent(t, nil, "--collectors=dns", "--dns.timeout=1s")
	const n = 4
	// 198.18.0.77 is on A's link but nobody has it: the query leaves, no
	// answer ever comes.
	for range n {
		if code, _ := dnsDig(t, env.pair.A, "dns-dig-timeout", "@198.18.0.77", "+tries=1", "+timeout=1", "web."+dnsDomain, "A"); code != "" {
			t.Fatalf("a query to an address nobody has was answered: %s", code)
		}
	}
	dnsWaitLookups(t, agent, map[string]bool{"dns-dig-timeout": true}, map[string]uint64{
		dnsOutcomeKey("dns-dig-timeout", "web."+dnsDomain, "A", "timeout", "udp"): n,
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		mfs := dnsScrapeFamilies(t, agent.MetricsURL)
		kernel := dnsFamilySum(mfs, "otelbee_dns_queries_pending", map[string]string{"location": "kernel"})
		agentSide := dnsFamilySum(mfs, "otelbee_dns_queries_pending", map[string]string{"location": "agent"})
		unanswered := dnsFamilySum(mfs, "otelbee_dns_queries_unanswered_total", nil)
		if kernel == 0 && agentSide == 0 && unanswered == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending: kernel %v, agent %v; unanswered %v (want 0, 0, %d)", kernel, agentSide, unanswered, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDNSMalformedBurst: malformed queries to port 53 are counted as
// unparseable, the agent keeps running, the next good lookup is seen.
func TestDNSMalformedBurst(t *testing.T) {
	dnsRequireTools(t, "python3")
	env := startDNSEnv(t, "dnsbad")
	agent := harness.StartAgent(t, nil, "--collectors=dns")
	// Every packet has QR=0 (a query) and is rejected by any DNS parser:
	// a truncated header, a name pointer to itself, two pointers in a
	// loop, a label running past the end, a header with no question.
	py := `
import socket, struct, sys
server = sys.argv[1]
hdr = lambda i, qd: struct.pack(">HHHHHH", i, 0x0100, qd, 0, 0, 0)
kinds = [
    lambda i: hdr(i, 1)[:3 + i % 9],
    lambda i: hdr(i, 1) + b"\xc0\x0c\x00\x01\x00\x01",
    lambda i: hdr(i, 1) + b"\x01a\xc0\x0e\x00\x01\x00\x01",
    lambda i: hdr(i, 1) + b"\x3fabc",
    lambda i: hdr(i, 0),
]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = 0
for i in range(200):
    s.sendto(kinds[i % len(kinds)](i + 1), (server, 53))
    n += 1
print(n)
`
	out, _ := dnsRunClient(t, env.pair.A, "dns-garbage", "python3", "-c", py, env.server)
	sent, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		mfs := dnsScrapeFamilies(t, agent.MetricsURL)
		bad := dnsFamilySum(mfs, "otelbee_dns_packets_total", map[string]string{"otelbee_dns_message_type": "query", "outcome": "unparseable"})
		if bad == float64(sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unparseable queries: %v, want %d", bad, sent)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if exited, err := agent.Exited(); exited {
		t.Fatalf("agent exited: %v\n%s", err, agent.LogTail(30))
	}
	code, pid := dnsDig(t, env.pair.A, "dns-after", "@"+env.server, "+tries=1", "+timeout=3", "web."+dnsDomain, "A")
	inst := dnsWaitLookups(t, agent, map[string]bool{"dns-after": true}, map[string]uint64{
		dnsOutcomeKey("dns-after", "web."+dnsDomain, "A", code, "udp"): 1,
	})
	dnsCheckInstances(t, inst, "dns-after", pid)
}

var dnsperfSent = regexp.MustCompile(`Queries sent:\s+(\d+)`)

// TestDNSOverloadNothingLostSilently: dnsperf at a fixed high rate for 10 s.
// Lookups the agent recorded (answered or timed out) plus lookups it counted
// as dropped equal the queries dnsperf sent, exactly. Once with a ring
// buffer too small for the rate (drops happen and are counted), once with
// the default (the CPU and BPF cost per lookup are logged for
// docs/benchmarks.md).
func TestDNSOverloadNothingLostSilently(t *testing.T) {
	dnsRequireTools(t, "dnsperf")
	for _, tc := range []struct {
		name    string
		ringBuf int
	}{{"small_ringbuf", 64 << 10}, {"default_ringbuf", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			env := startDNSEnv(t, "dnsperf")
			args := []string{"--collectors=dns", "--dns.timeout=2s", "--bpf.stats"}
			if tc.ringBuf > 0 {
				cfg := filepath.Join(t.TempDir(), "otelbee.yaml")
				os.WriteFile(cfg, []byte(fmt.Sprintf("dns:\n  ring_buffer_bytes: %d\n", tc.ringBuf)), 0o644)
				args = append(args, "--config="+cfg)
			}
			agent := harness.StartAgent(t, nil, args...)
			data := filepath.Join(t.TempDir(), "queries.txt")
			os.WriteFile(data, []byte("web.otelbee.test A\nmissing.otelbee.test A\ntxt.otelbee.test TXT\nweb.otelbee.test AAAA\n"), 0o644)
			before := dnsScrapeFamilies(t, agent.MetricsURL)
			cpuBefore := dnsFamilySum(before, "process_cpu_time_seconds_total", nil)

			const rate = 20000
			out, _ := dnsRunClient(t, env.pair.A, "dns-perf", "dnsperf", "-s", env.server, "-d", data,
				"-l", "10", "-Q", strconv.Itoa(rate), "-c", "4", "-q", "1000", "-t", "5")
			m := dnsperfSent.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("dnsperf output has no 'Queries sent':\n%s", out)
			}
			sent, _ := strconv.ParseFloat(m[1], 64)

			var recorded, dropped float64
			deadline := time.Now().Add(60 * time.Second)
			for {
				mfs := dnsScrapeFamilies(t, agent.MetricsURL)
				counts, _ := dnsLookupCounts(mfs, map[string]bool{"dns-perf": true})
				recorded = 0
				for _, v := range counts {
					recorded += float64(v)
				}
				dropped = dnsFamilySum(mfs, "otelbee_dns_lookups_dropped_total", map[string]string{"job": "dns-perf"})
				retrans := dnsFamilySum(mfs, "otelbee_dns_queries_retransmitted_total", nil)
				pending := dnsFamilySum(mfs, "otelbee_dns_queries_pending", nil)
				if recorded+dropped+retrans == sent && pending == 0 {
					cpu := dnsFamilySum(mfs, "process_cpu_time_seconds_total", nil) - cpuBefore
					t.Logf("dnsperf sent %.0f queries (%d/s for 10 s); agent recorded %.0f lookups, counted %.0f dropped, %.0f retransmitted",
						sent, rate, recorded, dropped, retrans)
					t.Logf("agent CPU %.3f s for %.0f lookups: %.2f µs per lookup", cpu, sent, cpu/sent*1e6)
					for _, prog := range []string{"dns_egress", "dns_ingress", "dns_connect4", "dns_sendmsg4", "dns_sock_release"} {
						sel := map[string]string{"collector": "dns", "program": prog}
						rt := dnsFamilySum(mfs, "otelbee_bpf_program_run_time_seconds_total", sel)
						rc := dnsFamilySum(mfs, "otelbee_bpf_program_run_count_total", sel)
						if rc > 0 {
							t.Logf("BPF %s: %.0f runs, %.3f s, %.0f ns per run", prog, rc, rt, rt/rc*1e9)
						}
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("recorded %v + dropped %v + retransmitted %v != sent %v (pending %v)\n%s",
						recorded, dropped, retrans, sent, pending, dnsCountsString(counts))
				}
				time.Sleep(250 * time.Millisecond)
			}
			if tc.ringBuf > 0 && dropped == 0 {
				t.Logf("note: no drops with a %d-byte ring buffer at %d/s (the agent kept up)", tc.ringBuf, rate)
			}
		})
	}
}

// dnsDurations sums dns_lookup_duration_seconds by service and outcome
// (error_type, or otelbee_dns_response_code for a lookup without error) for the
// services given: counts, sums in seconds, and the bucket bounds seen.
func dnsDurations(mfs map[string]*dto.MetricFamily, services map[string]bool) (map[string]uint64, map[string]float64, [][]float64) {
	counts, sums := map[string]uint64{}, map[string]float64{}
	var bounds [][]float64
	mf := mfs["dns_lookup_duration_seconds"]
	if mf == nil {
		return counts, sums, nil
	}
	for _, m := range mf.GetMetric() {
		l := dnsLabelsOf(m)
		if !services[l["job"]] {
			continue
		}
		outcome := l["error_type"]
		if outcome == "" {
			outcome = "ok:" + l["otelbee_dns_response_code"]
		}
		k := l["job"] + " " + outcome
		counts[k] += m.GetHistogram().GetSampleCount()
		sums[k] += m.GetHistogram().GetSampleSum()
		var b []float64
		for _, bk := range m.GetHistogram().GetBucket() {
			b = append(b, bk.GetUpperBound())
		}
		bounds = append(bounds, b)
	}
	return counts, sums, bounds
}

// dnsTimedDig runs dig and returns its output and how long it ran.
func dnsTimedDig(t *testing.T, ns, service string, args ...string) (string, time.Duration) {
	t.Helper()
	cmd := harness.Command(ns, append([]string{"dig"}, args...)...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+service)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	cmd.Run() // dig exits non-zero on a communications error
	return out.String(), time.Since(start)
}

// TestDNSRefusedAndClientTimeouts: a lookup refused by an ICMP port
// unreachable ends when the client's socket fails, with
// error.type=connection_refused, and a lookup the client gave up on ends when
// the client closed its socket, with error.type=timeout, both long before
// the agent's own timeout (5 s): the durations are what the clients saw.
// Clients: dig and Python sockets; the clients' own clocks bound each
// duration.
func TestDNSRefusedAndClientTimeouts(t *testing.T) {
	dnsRequireTools(t, "python3")
	env := startDNSEnv(t, "dnsref")
	agent := harness.StartAgent(t, nil, "--collectors=dns", "--dns.timeout=5s")
	const n = 3
	var digRefused, digGaveUp time.Duration
	for range n {
		// 127.0.0.66 is on A's loopback; nothing listens on its port 53.
		out, took := dnsTimedDig(t, env.pair.A, "dns-refused-dig", "+tries=1", "+timeout=3", "@127.0.0.66", "web."+dnsDomain, "A")
		if !strings.Contains(out, "connection refused") {
			t.Fatalf("dig to a closed port: %s", out)
		}
		digRefused += took
		// 198.18.0.77 is on A's link but nobody has it: no answer; dig
		// gives up after its 1 s timeout and exits.
		out, took = dnsTimedDig(t, env.pair.A, "dns-gaveup-dig", "+tries=1", "+timeout=1", "@198.18.0.77", "web."+dnsDomain, "A")
		if !strings.Contains(out, "timed out") {
			t.Fatalf("dig to an address nobody has: %s", out)
		}
		digGaveUp += took
	}
	// Python: a connected UDP socket each; it prints how long it waited
	// (from before the send to after the failed receive or the close).
	py := `
import socket, struct, sys, time
kind, server, n, wait = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def query(i):
    name = b"".join(bytes([len(l)]) + l for l in b"web.otelbee.test".split(b".")) + b"\0"
    return struct.pack(">HHHHHH", 0x4000 + i, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
total = 0.0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, 53))
    s.settimeout(wait)
    t0 = time.monotonic()
    s.send(query(i))
    try:
        s.recv(512)
        sys.exit("answered")
    except ConnectionRefusedError:
        assert kind == "refused"
    except socket.timeout:
        assert kind == "gaveup"
    s.close()
    total += time.monotonic() - t0
print(f"{total:.6f}")
`
	const pyN, pyWait = 4, 0.3
	pyTotal := func(kind, server, service string) float64 {
		out, _ := dnsRunClient(t, env.pair.A, service, "python3", "-c", py, kind, server, strconv.Itoa(pyN), fmt.Sprint(pyWait))
		v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			t.Fatalf("python %s: %q", kind, out)
		}
		return v
	}
	pyRefused := pyTotal("refused", "127.0.0.66", "dns-refused-py")
	pyGaveUp := pyTotal("gaveup", "198.18.0.77", "dns-gaveup-py")

	services := map[string]bool{"dns-refused-dig": true, "dns-gaveup-dig": true, "dns-refused-py": true, "dns-gaveup-py": true}
	want := map[string]uint64{
		"dns-refused-dig connection_refused": n, "dns-gaveup-dig timeout": n,
		"dns-refused-py connection_refused": pyN, "dns-gaveup-py timeout": pyN,
	}
	var (
		counts map[string]uint64
		sums   map[string]float64
	)
	deadline := time.Now().Add(60 * time.Second)
	for {
		counts, sums, _ = dnsDurations(dnsScrapeFamilies(t, agent.MetricsURL), services)
		if dnsEqualUint(counts, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent's lookups:\n%s\nwant:\n%s\n%s", dnsCountsString(counts), dnsCountsString(want), agent.LogTail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Each duration is at most what its client measured around it, and a
	// timeout at least the client's own wait.
	for _, c := range []struct {
		key      string
		min, max float64
	}{
		{"dns-refused-dig connection_refused", 0, digRefused.Seconds()},
		{"dns-refused-py connection_refused", 0, pyRefused},
		{"dns-gaveup-dig timeout", n * 1.0, digGaveUp.Seconds()},
		{"dns-gaveup-py timeout", pyN * pyWait, pyGaveUp},
	} {
		if got := sums[c.key]; got <= c.min || got > c.max {
			t.Errorf("%s: %.6f s in all, want within (%.6f, %.6f] s (the clients' own times)", c.key, got, c.min, c.max)
		} else {
			t.Logf("%s: agent %.6f s in all, clients %.6f s", c.key, got, c.max)
		}
	}
	mfs := dnsScrapeFamilies(t, agent.MetricsURL)
	if v := dnsFamilySum(mfs, "otelbee_dns_queries_unanswered_total", map[string]string{"reason": "client_closed"}); v < 2*n {
		// Other tests' clients may add to this host-wide counter, never less.
		t.Errorf("unanswered (client_closed): %v, want at least %d", v, 2*n)
	}
}

// TestDNSErrorTypes: dig against dnsmasq gets NOERROR, NXDOMAIN (a missing
// local name), SERVFAIL (dnsmasq forwards to an upstream that fails) and
// REFUSED (a name dnsmasq has no server for); the agent's counts per
// error.type equal dig's, the bounds are the conventions', the name is the
// one asked (case kept), and a name that is not UTF-8 reaches the real
// OpenTelemetry Collector escaped, without breaking the export.
func TestDNSErrorTypes(t *testing.T) {
	dnsRequireTools(t, "python3")
	env := startDNSEnv(t, "dnserr", "--server=/sf."+dnsDomain+"/127.0.0.1#5300")
	servfail := harness.StartProcess(t, "servfail", harness.Command(env.pair.B, "python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 5300))
print("ready", flush=True)
while True:
    b, a = s.recvfrom(512)
    r = bytearray(b)
    r[2], r[3] = 0x81, 0x82  # an answer, recursion available, SERVFAIL
    s.sendto(bytes(r), a)
`))
	for !strings.Contains(servfail.Log(), "ready") {
		if exited, err := servfail.Exited(); exited {
			t.Fatalf("servfail responder: %v\n%s", err, servfail.LogTail(10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	col := harness.StartCollector(t)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000"}, "--collectors=dns",
		"--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf")

	want := map[string]uint64{}
	for _, q := range []struct {
		name string
		n    int
	}{{"WeB.OtelBee.TEST", 2}, {"missing." + dnsDomain, 3}, {"x.sf." + dnsDomain, 2}, {"example.com", 2}, {"web." + dnsDomain, 1}} {
		for range q.n {
			code, _ := dnsDig(t, env.pair.A, "dns-errtypes", "@"+env.server, "+tries=1", "+timeout=3", q.name, "A")
			switch code {
			case "":
				t.Fatalf("dig %s: no answer", q.name)
			case "NOERROR":
				want["dns-errtypes ok:NOERROR"]++
			default:
				want["dns-errtypes "+code]++
			}
		}
	}
	if want["dns-errtypes NXDOMAIN"] != 3 || want["dns-errtypes SERVFAIL"] != 2 || want["dns-errtypes REFUSED"] != 2 {
		t.Fatalf("dnsmasq answered %v; the plan needs NXDOMAIN, SERVFAIL and REFUSED", want)
	}
	// A query whose name is not UTF-8 ("caf\xc3"), from Python.
	py := `
import socket, struct, sys
name = b"\x04caf\xc3\x07otelbee\x04test\x00"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], 53))
s.send(struct.pack(">HHHHHH", 0x7777, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1))
r = s.recv(512)
print(["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"][r[3] & 15])
`
	out, _ := dnsRunClient(t, env.pair.A, "dns-utf8", "python3", "-c", py, env.server)
	pyCode := strings.TrimSpace(out)

	var counts map[string]uint64
	var bounds [][]float64
	deadline := time.Now().Add(60 * time.Second)
	for {
		counts, _, bounds = dnsDurations(dnsScrapeFamilies(t, agent.MetricsURL), map[string]bool{"dns-errtypes": true})
		if dnsEqualUint(counts, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent's lookups by error.type:\n%s\ndig's:\n%s", dnsCountsString(counts), dnsCountsString(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
	conv := []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, math.Inf(1)}
	for _, b := range bounds {
		if !slices.Equal(b, conv) {
			t.Errorf("bucket bounds %v, want the conventions' %v", b, conv)
		}
	}
	// Over OTLP: the name as asked, the error types, and the escaped name.
	f := func(svc string, attrs map[string]string) harness.Filter {
		return harness.Filter{Resource: map[string]string{"service.name": svc}, Attributes: attrs}
	}
	eq := func(n float64) func(float64) bool { return func(v float64) bool { return v == n } }
	col.WaitForMetric(t, "dns.lookup.duration", f("dns-errtypes", map[string]string{"dns.question.name": "WeB.OtelBee.TEST"}), eq(2), 20*time.Second)
	col.WaitForMetric(t, "dns.lookup.duration", f("dns-errtypes", map[string]string{"error.type": "SERVFAIL", "otelbee.dns.response.code": "SERVFAIL"}), eq(2), 20*time.Second)
	utf8Attrs := map[string]string{"dns.question.name": `caf\195.otelbee.test`}
	if pyCode != "NOERROR" {
		utf8Attrs["error.type"] = pyCode
	}
	col.WaitForMetric(t, "dns.lookup.duration", f("dns-utf8", utf8Attrs), eq(1), 20*time.Second)
	// The export still works after it: a later lookup arrives too.
	code, _ := dnsDig(t, env.pair.A, "dns-after-utf8", "@"+env.server, "+tries=1", "+timeout=3", "web."+dnsDomain, "A")
	if code != "NOERROR" {
		t.Fatalf("dig after: %q", code)
	}
	col.WaitForMetric(t, "dns.lookup.duration", f("dns-after-utf8", nil), eq(1), 20*time.Second)
}

package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestPrometheusJobInstance: many services behind the agent's one endpoint,
// as the OpenTelemetry Collector's Prometheus exporter exposes them and a
// real Prometheus scrapes them with honor_labels: true. Two processes of one
// service (different environments in their own OTEL_RESOURCE_ATTRIBUTES)
// and a server: sum by (job) adds the processes up exactly; the join
// "* on (job, instance) group_left (...) target_info" is one-to-one and
// splits the counts by resource attribute; every series carries
// otel_scope_name and one otel_scope_version, the agent's, whether the SDK
// or a collector's own producer aggregated it.
func TestPrometheusJobInstance(t *testing.T) {
	harness.RequireRoot(t)
	agent := harness.StartAgent(t, nil, "--collectors=tcp")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)

	sfx := strconv.Itoa(rand.IntN(1 << 30))
	serverSvc, clientSvc := "job-server-"+sfx, "job-client-"+sfx
	addr, stopServer := tcpServer(t, "", "127.0.0.1:0", serverSvc)
	bin := buildTool(t, "./e2e/cmd/tcpload")
	var pids []int
	for _, c := range []struct {
		env string
		n   int
	}{{"prod", 3}, {"staging", 5}} {
		cmd := exec.Command(bin, "-client", "-addr", addr, "-n", strconv.Itoa(c.n), "-send", "100", "-recv", "100")
		cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+clientSvc, "OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name="+c.env)
		p := harness.StartProcess(t, clientSvc, cmd)
		if err := p.Wait(30 * time.Second); err != nil {
			t.Fatalf("tcpload client: %v", err)
		}
		pids = append(pids, p.Pid())
	}
	server := stopServer()
	if server.Connections != 8 {
		t.Fatalf("the server counted %d connections, want 8", server.Connections)
	}
	out := fmt.Sprintf(`otelbee_tcp_connection_opened_total{job=%q,otelbee_network_connection_direction="outbound"}`, clientSvc)

	// sum by (job): both processes, exactly.
	prom.WaitFor(t, fmt.Sprintf(`sum by (job) (%s)`, out), func(s []harness.Sample) bool {
		return len(s) == 1 && s[0].Value == 8 && s[0].Labels["job"] == clientSvc
	}, 30*time.Second)
	waitProm(t, prom, fmt.Sprintf(`sum by (job) (otelbee_tcp_connection_opened_total{job=%q})`, serverSvc), 8)
	// One target_info per (job, instance): two for the two client
	// processes, which declare different resources (a client's processes
	// that declare the same one are one instance).
	waitProm(t, prom, fmt.Sprintf(`count(target_info{job=%q})`, clientSvc), 2)
	for _, env := range []string{"prod", "staging"} {
		waitProm(t, prom, fmt.Sprintf(`count(target_info{job=%q,deployment_environment_name=%q})`, clientSvc, env), 1)
	}

	// The join is one-to-one and carries each process's own attributes.
	join := fmt.Sprintf(`sum by (job, deployment_environment_name) (%s * on (job, instance) group_left (deployment_environment_name) target_info)`, out)
	got := prom.WaitFor(t, join, func(s []harness.Sample) bool { return len(s) == 2 }, 30*time.Second)
	byEnv := map[string]float64{}
	for _, s := range got {
		byEnv[s.Labels["deployment_environment_name"]] = s.Value
	}
	if byEnv["prod"] != 3 || byEnv["staging"] != 5 {
		t.Errorf("%s = %v, want prod 3, staging 5", join, got)
	}
	waitProm(t, prom, fmt.Sprintf(`sum(%s * on (job, instance) group_left (process_executable_name) target_info{process_executable_name="tcpload"})`, out), 8)

	// Scope labels: the SDK's counters and the kernel-aggregated
	// histograms of the TCP collector share one scope name and version;
	// the agent's self-telemetry has the same version.
	scopes := prom.WaitFor(t, fmt.Sprintf(`count by (otel_scope_name, otel_scope_version) ({__name__=~"otelbee_tcp_connection_(opened_total|duration_seconds_count)",job=%q})`, clientSvc),
		func(s []harness.Sample) bool { return len(s) > 0 }, 30*time.Second)
	if len(scopes) != 1 || scopes[0].Labels["otel_scope_name"] != "github.com/otelbee/otelbee/collectors/tcp" || scopes[0].Labels["otel_scope_version"] == "" {
		t.Fatalf("TCP series scopes: %v, want one, github.com/otelbee/otelbee/collectors/tcp with a version", scopes)
	}
	version := scopes[0].Labels["otel_scope_version"]
	self := prom.WaitFor(t, fmt.Sprintf(`count by (otel_scope_version) ({__name__=~"otelbee_.+",job="otelbee",instance="%s:%d"})`, hostname(), agent.Pid()),
		func(s []harness.Sample) bool { return len(s) > 0 }, 30*time.Second)
	if len(self) != 1 || self[0].Labels["otel_scope_version"] != version {
		t.Errorf("self-telemetry scope versions %v, want only %q", self, version)
	}
	// No series without job, none with the old identity labels.
	for _, q := range []string{`{__name__=~"otelbee_tcp_.+",job=""}`, `{service_name!=""}`, `{service_instance_id!=""}`} {
		if s, err := prom.Query(t.Context(), q); err != nil || len(s) != 0 {
			t.Errorf("%s: %d series (err %v), want none: %v", q, len(s), err, strings.Join(sampleStrings(s), "; "))
		}
	}
}

func sampleStrings(ss []harness.Sample) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.String())
	}
	return out
}

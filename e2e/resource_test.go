package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestResourceAttributes: whose OTEL_RESOURCE_ATTRIBUTES describe whom.
// A program started with OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod,service.version=1.2
// is reported with prod and 1.2 (its own values win over the host-wide
// --resource.attributes), a program without any gets the host-wide ones,
// and neither gets what the agent's own OTEL_RESOURCE_ATTRIBUTES say
// (deployment.environment.name=staging, team=agents): those describe the
// agent, whose self-telemetry is one resource with them and a
// service.instance.id. Nothing claims telemetry.sdk.language for the
// observed programs; telemetry.distro.name=otelbee says who produced the
// data. Checked in the real OpenTelemetry Collector and the real Prometheus.
func TestResourceAttributes(t *testing.T) {
	harness.RequireRoot(t)
	col := harness.StartCollector(t)
	agent := harness.StartAgent(t, []string{"OTEL_METRIC_EXPORT_INTERVAL=1000",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=staging,team=agents"},
		"--collectors=tcp", "--otlp.endpoint=http://"+col.HTTPEndpoint, "--otlp.protocol=http/protobuf",
		"--resource.attributes=deployment.environment.name=hostwide,site=lab%201")
	prom := harness.StartPrometheus(t, []string{agent.PromAddr}, time.Second)

	sfx := strconv.Itoa(rand.IntN(1 << 30))
	serverSvc, clientSvc := "res-server-"+sfx, "res-client-"+sfx
	bin := buildTool(t, "./e2e/cmd/tcpload")
	ready := filepath.Join(t.TempDir(), "ready")
	srv := exec.Command(bin, "-server", "-addr", "127.0.0.1:0", "-ready-file", ready)
	srv.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+serverSvc,
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod,service.version=1.2")
	server := harness.StartProcess(t, serverSvc, srv)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
			addr = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatal("tcpload server did not become ready")
		}
	}
	cl := exec.Command(bin, "-client", "-addr", addr, "-n", "3", "-send", "100", "-recv", "100")
	cl.Env = append(os.Environ(), "OTEL_SERVICE_NAME="+clientSvc)
	client := harness.StartProcess(t, clientSvc, cl)
	if err := client.Wait(30 * time.Second); err != nil {
		t.Fatalf("tcpload client: %v", err)
	}

	serverRes := harness.Filter{Resource: map[string]string{"service.name": serverSvc}}
	clientRes := harness.Filter{Resource: map[string]string{"service.name": clientSvc}}
	col.WaitForMetric(t, "otelbee.tcp.connection.closed", serverRes, func(v float64) bool { return v == 3 }, 30*time.Second)
	col.WaitForMetric(t, "otelbee.tcp.connection.closed", clientRes, func(v float64) bool { return v == 3 }, 30*time.Second)

	rms, err := col.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		serverSvc: {"deployment.environment.name": "prod", "service.version": "1.2", "site": "lab 1",
			"process.pid": strconv.Itoa(server.Pid()), "telemetry.distro.name": "otelbee"},
		clientSvc: {"deployment.environment.name": "hostwide", "service.version": "", "site": "lab 1",
			// a client that does not listen is its service's folded
			// instance on this host, not a process (docs/metrics.md "Instances")
			"process.pid": "", "telemetry.distro.name": "otelbee"},
		"otelbee": {"deployment.environment.name": "staging", "team": "agents", "telemetry.sdk.language": "go",
			"telemetry.distro.name": "otelbee", "site": ""},
	}
	self := map[string]bool{} // distinct resources of the agent's own telemetry
	for _, rm := range rms {
		svc := rm.Resource["service.name"]
		if svc != serverSvc && svc != clientSvc {
			// Other tests' agents on this host are observed programs
			// named otelbee too; this agent is the one with its pid.
			if svc != "otelbee" || rm.Resource["process.pid"] != strconv.Itoa(agent.Pid()) {
				continue
			}
			self[fmt.Sprint(rm.Resource)] = true
		}
		for k, v := range want[svc] {
			if rm.Resource[k] != v {
				t.Errorf("%s resource: %s = %q, want %q (resource %v)", svc, k, rm.Resource[k], v, rm.Resource)
			}
		}
		if svc != "otelbee" {
			for _, k := range []string{"telemetry.sdk.language", "telemetry.sdk.name", "team", "otelbee.internal.resource"} {
				if v, ok := rm.Resource[k]; ok {
					t.Errorf("%s resource carries %s=%q, which is not about it", svc, k, v)
				}
			}
			if rm.Resource["telemetry.distro.version"] == "" {
				t.Errorf("%s resource has no telemetry.distro.version: %v", svc, rm.Resource)
			}
		}
		for _, m := range rm.Metrics {
			for _, p := range m.Points {
				if _, ok := p.Attributes["otelbee.internal.resource"]; ok {
					t.Fatalf("%s: a data point carries the internal resource attribute: %v", m.Name, p.Attributes)
				}
			}
		}
	}
	if len(self) != 1 {
		t.Errorf("the agent's own telemetry has %d distinct resources, want 1: %v", len(self), self)
	}
	for r := range self {
		if !strings.Contains(r, "service.instance.id:") {
			t.Errorf("the agent's resource has no service.instance.id: %s", r)
		}
	}

	// Prometheus: target_info carries the program's own resource attributes.
	waitProm(t, prom, fmt.Sprintf(`count(target_info{job=%q,deployment_environment_name="prod",service_version="1.2",site="lab 1"})`, serverSvc), 1)
	waitProm(t, prom, fmt.Sprintf(`count(target_info{job=%q,deployment_environment_name="hostwide"})`, clientSvc), 1)
	waitProm(t, prom, fmt.Sprintf(`count(target_info{job="otelbee",process_pid="%d",deployment_environment_name="staging"})`, agent.Pid()), 1)
	if s, err := prom.Query(context.Background(), `{otelbee_internal_resource!=""}`); err != nil || len(s) != 0 {
		t.Errorf("series with the internal resource label: %v (err %v)", s, err)
	}
}

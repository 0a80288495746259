package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestOTLPSenderToCollector: the agent's own OTLP sender (exporters/otlp,
// sender.go) delivers metrics and spans to the real OpenTelemetry
// Collector over OTLP/HTTP and OTLP/gRPC, gzip'd and with headers from
// OTEL_EXPORTER_OTLP_*: exactly one server span and one counted request per
// request the server served, no export failing, nothing dropped.
func TestOTLPSenderToCollector(t *testing.T) {
	harness.RequireRoot(t)
	for _, proto := range []string{"http/protobuf", "grpc"} {
		t.Run(strings.ReplaceAll(proto, "/", "_"), func(t *testing.T) {
			col := harness.StartCollector(t)
			endpoint := "http://" + col.HTTPEndpoint
			if proto == "grpc" {
				endpoint = "http://" + col.GRPCEndpoint
			}
			svc := fmt.Sprintf("sender-%d", rand.IntN(1<<30))
			comm := fmt.Sprintf("obsnd%06d", rand.IntN(1e6))
			agent := harness.StartAgent(t, []string{"OTEL_TRACES_SAMPLER=always_on", "OTEL_BSP_SCHEDULE_DELAY=200",
				"OTEL_METRIC_EXPORT_INTERVAL=500", "OTEL_EXPORTER_OTLP_COMPRESSION=gzip", "OTEL_EXPORTER_OTLP_HEADERS=x-otelbee-e2e=sender"},
				"--collectors=http", "--http.include-executables="+comm, "--otlp.endpoint="+endpoint, "--otlp.protocol="+proto)
			_, addr, stopServer := uniqueServerNamed(t, svc, comm)
			const n = 25
			for i := range n {
				resp, err := http.Get("http://" + addr + "/items/" + strconv.Itoa(i))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			srv := stopServer()
			served := 0
			for _, v := range srv.Counts {
				served += v
			}
			if served != n {
				t.Fatalf("the server served %d requests, want %d: %v", served, n, srv.Counts)
			}
			col.WaitForMetric(t, "http.server.request.duration", harness.Filter{Resource: map[string]string{"service.name": svc}},
				func(v float64) bool { return v == float64(served) }, 30*time.Second)
			servers := func(ss []harness.Span) int {
				k := 0
				for _, s := range ss {
					if s.Resource["service.name"] == svc && s.Kind == "Server" {
						k++
					}
				}
				return k
			}
			col.WaitForSpans(t, func(ss []harness.Span) bool { return servers(ss) >= served }, 30*time.Second)
			time.Sleep(time.Second) // a span sent twice would arrive by now
			spans, err := col.Spans()
			if err != nil {
				t.Fatal(err)
			}
			if got := servers(spans); got != served {
				t.Errorf("%d server spans of %s at the collector, want %d", got, svc, served)
			}
			for _, series := range []string{
				`otelbee_exporter_failures_total{exporter="otlp_metrics",job="otelbee"}`,
				`otelbee_exporter_failures_total{exporter="otlp_traces",job="otelbee"}`,
				`otelbee_exporter_metric_points_dropped_total{exporter="otlp_metrics",job="otelbee"}`,
				`otelbee_exporter_spans_dropped_total{exporter="otlp_traces",job="otelbee"}`,
			} {
				if v := scrapeValue(t, agent.MetricsURL, series); v != 0 {
					t.Errorf("%s = %v, want 0:\n%s", series, v, agent.LogTail(20))
				}
			}
			if v := scrapeValue(t, agent.MetricsURL, `otelbee_exporter_spans_exported_total{exporter="otlp_traces",job="otelbee"}`); v < float64(served) {
				t.Errorf("spans exported %v, want at least the %d server spans", v, served)
			}
		})
	}
}

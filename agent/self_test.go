package agent

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/collectors/hook"
	"github.com/otelbee/otelbee/process/identity"
)

func TestParseStat(t *testing.T) {
	// A real /proc/<pid>/stat line, with a command holding ") " to check
	// that fields are counted after the last parenthesis.
	line := "4242 (a) b) S 1 4242 4242 0 -1 4194560 2914 0 0 0 250 37 0 0 20 0 9 0 1234 1468006400 5120 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
	for _, tc := range []struct {
		name, line string
		want       usage
		wantErr    bool
	}{
		{"real", line, usage{user: 2.5, system: 0.37, rssBytes: 5120 * 4096}, false},
		{"no command", "4242 a S 1", usage{}, true},
		{"short", "4242 (a) S 1 2 3", usage{}, true},
		{"garbage utime", "4242 (a) S 1 4242 4242 0 -1 4194560 2914 0 0 0 x 37 0 0 20 0 9 0 1234 1468006400 5120 0", usage{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat(tc.line, 4096)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseStat = %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// The agent's process.* metrics are the conventions' instruments:
// process.cpu.time a counter by cpu.mode, process.memory.usage an up-down
// counter (a non-monotonic sum, not a gauge).
func TestSelfProcessMetrics(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	reg, err := registerSelfMetrics(mp.Meter("test"), selfSources{
		hooks:     hook.NewRegistry(),
		reporters: func() []reporter { return nil },
		processes: identity.NewResolver("/proc", "host"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case "process.cpu.time":
				s, ok := m.Data.(metricdata.Sum[float64])
				if !ok || !s.IsMonotonic || m.Unit != "s" {
					t.Errorf("process.cpu.time is %T (unit %q), want a monotonic float sum in s", m.Data, m.Unit)
					continue
				}
				modes := map[string]bool{}
				for _, dp := range s.DataPoints {
					v, _ := dp.Attributes.Value("cpu.mode")
					modes[v.AsString()] = true
				}
				if len(s.DataPoints) != 2 || !modes["user"] || !modes["system"] {
					t.Errorf("process.cpu.time points %+v, want one per cpu.mode user and system", s.DataPoints)
				}
			case "process.memory.usage":
				s, ok := m.Data.(metricdata.Sum[int64])
				if !ok || s.IsMonotonic || m.Unit != "By" || len(s.DataPoints) != 1 || s.DataPoints[0].Value <= 0 {
					t.Errorf("process.memory.usage is %#v (unit %q), want one non-monotonic int sum in By", m.Data, m.Unit)
				}
			default:
				continue
			}
			seen[m.Name] = true
		}
	}
	if !seen["process.cpu.time"] || !seen["process.memory.usage"] {
		t.Errorf("process metrics missing: %v", seen)
	}
}

package prometheus

import (
	"context"
	"strings"
	"testing"
)

// TestResourceLabels: resource attributes as labels only when asked for,
// besides job and instance; "*" copies them all.
func TestResourceLabels(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"default", nil, `tcp_connection_opened_total{instance="db-0",job="db"} 1`},
		{"service.name", []Option{WithResourceLabels("service.name", "absent.key")},
			`tcp_connection_opened_total{instance="db-0",job="db",service_name="db"} 1`},
		{"all", []Option{WithResourceLabels("*")},
			`tcp_connection_opened_total{container_id="c0ffee",host_name="node-1",instance="db-0",job="db",os_type="linux",process_pid="200",service_instance_id="db-0",service_name="db"} 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, mp := newProvider(t, append(tc.opts, WithoutScopeLabels())...)
			c, _ := mp.Meter(scope).Int64Counter("tcp.connection.opened")
			c.Add(context.Background(), 1, with(db()))
			body := scrape(t, e.Handler())
			if !strings.Contains(body, tc.want+"\n") {
				t.Errorf("missing\n  %s\nin:\n%s", tc.want, body)
			}
			// target_info is the same either way: one per (job, instance).
			if want := `target_info{container_id="c0ffee",host_name="node-1",instance="db-0",job="db",os_type="linux",process_pid="200"} 1`; !strings.Contains(body, want+"\n") {
				t.Errorf("missing\n  %s\nin:\n%s", want, body)
			}
		})
	}
}

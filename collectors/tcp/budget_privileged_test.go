package tcp

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/collectortest"
	"github.com/otelbee/otelbee/process/identity"
)

const budgetChildEnv = "OTELBEE_TEST_BUDGET_CHILD"

// refuseService is a series budget that refuses the series of one service
// (the agent-wide budget refuses whatever comes past its cap; which series
// that is depends on the host's other traffic).
type refuseService struct {
	processes *identity.Resolver
	svc       string
	refused   atomic.Int64
}

func (b *refuseService) Admit(_ string, owner uint32) bool {
	if b.processes.Lookup(owner).ServiceName == b.svc {
		b.refused.Add(1)
		return false
	}
	return true
}
func (b *refuseService) Release(string, uint32, int) {}

// TestPrivilegedSeriesBudget (issue 16): a series the agent-wide budget
// refuses is not kept; its connections, bytes and durations are counted
// in the collector's otel.metric.overflow series, exactly.
func TestPrivilegedSeriesBudget(t *testing.T) {
	if addr := os.Getenv(budgetChildEnv); addr != "" {
		exchange(t, "tcp4", addr, 5, 7)
		os.Exit(0)
	}
	const children = 10
	svc := fmt.Sprintf("budget-tcp-%d", os.Getpid())
	var b *refuseService
	cc, env := collectortest.Start(t, Name, func(d collectors.Deps) collectors.Collector {
		b = &refuseService{processes: d.Processes, svc: svc}
		d.SeriesBudget = b
		return New(d, DefaultConfig())
	}, collectortest.Options{FoldInstances: true})
	c, reader := cc.(*Collector), env.Reader
	ln := echoServer(t, "tcp4", "127.0.0.1:0", 5, 7)
	isChild := map[uint32]bool{}
	for range children {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPrivilegedSeriesBudget$")
		cmd.Env = append(os.Environ(), budgetChildEnv+"="+ln.Addr().String(), "OTEL_SERVICE_NAME="+svc)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c.deps.Processes.RefreshExec(uint32(cmd.Process.Pid), "", []byte("OTEL_SERVICE_NAME="+svc+"\x00"), 0)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("running the client: %v", err)
		}
		isChild[uint32(cmd.Process.Pid)] = true
	}
	waitFor(t, c, func(m map[tcpConnKey]tcpConnCounters) error {
		closed := 0
		for k, v := range m {
			if isChild[k.Tgid] {
				closed += int(v.Closed)
			}
		}
		if closed != children {
			return fmt.Errorf("%d of %d connections closed", closed, children)
		}
		return nil
	})
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	overflow, mine := map[string]int64{}, 0
	var durations uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if v, ok := p.Attributes.Value(attribute.Key("service.name")); ok && v.AsString() == svc {
						mine++
					}
					if p.Attributes.HasValue("otel.metric.overflow") {
						dir, _ := p.Attributes.Value(attribute.Key("network.io.direction"))
						overflow[m.Name+"/"+dir.AsString()] += p.Value
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if v, ok := p.Attributes.Value(attribute.Key("service.name")); ok && v.AsString() == svc {
						mine++
					}
					if p.Attributes.HasValue("otel.metric.overflow") && m.Name == "otelbee.tcp.connection.duration" {
						durations += p.Count
					}
				}
			}
		}
	}
	// Every kernel series of the clients maps to the overflow series,
	// and nothing else does.
	c.mu.Lock()
	for k, a := range c.series {
		if (a == c.overflow) != isChild[k.Tgid] {
			t.Errorf("kernel series %+v (a client's: %v) in the overflow series: %v", k, isChild[k.Tgid], a == c.overflow)
		}
	}
	c.mu.Unlock()
	if mine != 0 {
		t.Errorf("%d points of the refused service's series", mine)
	}
	// The echo server's side is admitted: only the clients' outbound
	// connections overflow. (The SDK folds the host's series past its
	// cardinality limit into the same {otel.metric.overflow=true} set, so
	// only the counters that carry a direction, and the kernel histograms,
	// are the budget's alone here.)
	for k, w := range map[string]int64{
		"otelbee.tcp.connection.io/transmit": 5 * children, "otelbee.tcp.connection.io/receive": 7 * children,
	} {
		if overflow[k] != w {
			t.Errorf("overflow %s = %d, want %d (%v)", k, overflow[k], w, overflow)
		}
	}
	if durations != children {
		t.Errorf("overflow durations: %d, want %d", durations, children)
	}
	if b.refused.Load() == 0 {
		t.Error("the budget was never asked")
	}
}

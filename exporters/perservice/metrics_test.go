package perservice

import (
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"go.opentelemetry.io/otel/sdk/resource"
)

var (
	t0 = time.Unix(1700000000, 0)
	t1 = t0.Add(time.Minute)

	scopeTCP  = instrumentation.Scope{Name: "otelbee/tcp", Version: "v1"}
	scopeSelf = instrumentation.Scope{Name: "otelbee/agent"}
)

// agentResource is what the agent's MeterProvider carries: its own service
// identity (to be dropped for observed services) and host facts (kept).
func agentResource() *resource.Resource {
	return resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0",
		attribute.String("service.name", "otelbee"),
		attribute.String("service.instance.id", "agent-1"),
		attribute.String("service.version", "0.1.0"),
		attribute.Int("process.pid", 1),
		attribute.String("k8s.pod.name", "otelbee-abcde"),
		attribute.String("k8s.node.name", "node-1"),
		attribute.String("host.name", "host-1"),
		attribute.String("os.type", "linux"),
		attribute.String("telemetry.sdk.language", "go"),
		// From the agent's own OTEL_RESOURCE_ATTRIBUTES: about the agent.
		attribute.String("deployment.environment.name", "staging"),
		attribute.String("team", "observability"),
	)
}

// serviceResource is the resource expected for an observed service: the
// agent's host attributes plus the identity; not the agent's SDK language
// nor what its own environment said.
func serviceResource(ident ...attribute.KeyValue) *resource.Resource {
	kvs := []attribute.KeyValue{
		attribute.String("k8s.node.name", "node-1"),
		attribute.String("host.name", "host-1"),
		attribute.String("os.type", "linux"),
	}
	return resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", append(kvs, ident...)...)
}

var (
	apiIdent = []attribute.KeyValue{
		attribute.String("service.name", "api"),
		attribute.Int("process.pid", 100),
		attribute.String("process.executable.name", "api"),
		attribute.String("k8s.pod.name", "api-1"),
		attribute.String("k8s.namespace.name", "shop"),
	}
	dbIdent = []attribute.KeyValue{
		attribute.String("service.name", "db"),
		attribute.Int("process.pid", 200),
		attribute.String("container.id", "c0ffee"),
	}
)

func attrs(ident []attribute.KeyValue, kvs ...attribute.KeyValue) attribute.Set {
	all := append(append([]attribute.KeyValue{}, ident...), kvs...)
	return attribute.NewSet(all...)
}

func dir(d string) attribute.KeyValue { return attribute.String("network.io.direction", d) }

func intPt(s attribute.Set, v int64) metricdata.DataPoint[int64] {
	return metricdata.DataPoint[int64]{Attributes: s, StartTime: t0, Time: t1, Value: v}
}

func floatPt(s attribute.Set, v float64) metricdata.DataPoint[float64] {
	return metricdata.DataPoint[float64]{Attributes: s, StartTime: t0, Time: t1, Value: v}
}

func histPt[N int64 | float64](s attribute.Set, sum N) metricdata.HistogramDataPoint[N] {
	return metricdata.HistogramDataPoint[N]{
		Attributes: s, StartTime: t0, Time: t1, Count: 3, Sum: sum,
		Bounds: []float64{1, 10}, BucketCounts: []uint64{1, 1, 1},
		Min: metricdata.NewExtrema[N](0), Max: metricdata.NewExtrema[N](20),
	}
}

func expPt[N int64 | float64](s attribute.Set) metricdata.ExponentialHistogramDataPoint[N] {
	return metricdata.ExponentialHistogramDataPoint[N]{
		Attributes: s, StartTime: t0, Time: t1, Count: 2, Sum: 3, Scale: 2,
		PositiveBucket: metricdata.ExponentialBucket{Offset: 1, Counts: []uint64{1, 1}},
	}
}

func counter(pts ...metricdata.DataPoint[int64]) metricdata.Metrics {
	return metricdata.Metrics{Name: "tcp.connection.opened", Unit: "{connection}", Description: "Connections opened.",
		Data: metricdata.Sum[int64]{DataPoints: pts, Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}}
}

func updown(pts ...metricdata.DataPoint[float64]) metricdata.Metrics {
	return metricdata.Metrics{Name: "tcp.connection.active", Unit: "{connection}",
		Data: metricdata.Sum[float64]{DataPoints: pts, Temporality: metricdata.DeltaTemporality}}
}

func gaugeI(pts ...metricdata.DataPoint[int64]) metricdata.Metrics {
	return metricdata.Metrics{Name: "g.int", Data: metricdata.Gauge[int64]{DataPoints: pts}}
}

func gaugeF(pts ...metricdata.DataPoint[float64]) metricdata.Metrics {
	return metricdata.Metrics{Name: "g.float", Unit: "1", Data: metricdata.Gauge[float64]{DataPoints: pts}}
}

func histF(pts ...metricdata.HistogramDataPoint[float64]) metricdata.Metrics {
	return metricdata.Metrics{Name: "tcp.connection.duration", Unit: "s", Description: "Duration.",
		Data: metricdata.Histogram[float64]{DataPoints: pts, Temporality: metricdata.CumulativeTemporality}}
}

func histI(pts ...metricdata.HistogramDataPoint[int64]) metricdata.Metrics {
	return metricdata.Metrics{Name: "h.int", Unit: "By",
		Data: metricdata.Histogram[int64]{DataPoints: pts, Temporality: metricdata.DeltaTemporality}}
}

func expF(pts ...metricdata.ExponentialHistogramDataPoint[float64]) metricdata.Metrics {
	return metricdata.Metrics{Name: "e.float", Unit: "ms",
		Data: metricdata.ExponentialHistogram[float64]{DataPoints: pts, Temporality: metricdata.CumulativeTemporality}}
}

func expI(pts ...metricdata.ExponentialHistogramDataPoint[int64]) metricdata.Metrics {
	return metricdata.Metrics{Name: "e.int",
		Data: metricdata.ExponentialHistogram[int64]{DataPoints: pts, Temporality: metricdata.CumulativeTemporality}}
}

func TestSplitMetrics(t *testing.T) {
	self := attribute.NewSet(attribute.String("collector", "tcp"))
	inKV, outKV := dir("receive"), dir("transmit")
	in, out := attribute.NewSet(inKV), attribute.NewSet(outKV)

	tests := []struct {
		name  string
		input func() *metricdata.ResourceMetrics
		want  []metricdata.ResourceMetrics
	}{
		{
			name: "no identity: returned as is",
			input: func() *metricdata.ResourceMetrics {
				return &metricdata.ResourceMetrics{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeSelf, Metrics: []metricdata.Metrics{counter(intPt(self, 5))}},
				}}
			},
			want: []metricdata.ResourceMetrics{{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
				{Scope: scopeSelf, Metrics: []metricdata.Metrics{counter(intPt(self, 5))}},
			}}},
		},
		{
			name: "empty",
			input: func() *metricdata.ResourceMetrics {
				return &metricdata.ResourceMetrics{Resource: agentResource()}
			},
			want: []metricdata.ResourceMetrics{{Resource: agentResource()}},
		},
		{
			name: "two services and self metrics in one sum",
			input: func() *metricdata.ResourceMetrics {
				return &metricdata.ResourceMetrics{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(
						intPt(attrs(dbIdent, inKV), 1),
						intPt(self, 2),
						intPt(attrs(apiIdent, inKV), 3),
						intPt(attrs(apiIdent, outKV), 4),
					)}},
				}}
			},
			want: []metricdata.ResourceMetrics{
				{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(self, 2))}},
				}},
				{Resource: serviceResource(apiIdent...), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(in, 3), intPt(out, 4))}},
				}},
				{Resource: serviceResource(dbIdent...), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(in, 1))}},
				}},
			},
		},
		{
			name: "all aggregation types, scopes and metric order kept",
			input: func() *metricdata.ResourceMetrics {
				return &metricdata.ResourceMetrics{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{
						updown(floatPt(attrs(apiIdent), 7)),
						gaugeI(intPt(attrs(dbIdent), 8)),
						gaugeF(floatPt(attrs(apiIdent), 0.5), floatPt(self, 0.25)),
						histF(histPt[float64](attrs(apiIdent, outKV), 12)),
					}},
					{Scope: scopeSelf, Metrics: []metricdata.Metrics{
						histI(histPt[int64](attrs(dbIdent), 13)),
						expF(expPt[float64](attrs(apiIdent))),
						expI(expPt[int64](attrs(dbIdent)), expPt[int64](self)),
					}},
				}}
			},
			want: []metricdata.ResourceMetrics{
				{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{gaugeF(floatPt(self, 0.25))}},
					{Scope: scopeSelf, Metrics: []metricdata.Metrics{expI(expPt[int64](self))}},
				}},
				{Resource: serviceResource(apiIdent...), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{
						updown(floatPt(attribute.NewSet(), 7)),
						gaugeF(floatPt(attribute.NewSet(), 0.5)),
						histF(histPt[float64](out, 12)),
					}},
					{Scope: scopeSelf, Metrics: []metricdata.Metrics{expF(expPt[float64](attribute.NewSet()))}},
				}},
				{Resource: serviceResource(dbIdent...), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{gaugeI(intPt(attribute.NewSet(), 8))}},
					{Scope: scopeSelf, Metrics: []metricdata.Metrics{
						histI(histPt[int64](attribute.NewSet(), 13)),
						expI(expPt[int64](attribute.NewSet())),
					}},
				}},
			},
		},
		{
			name: "k8s attributes outside the list and identity overriding the agent",
			input: func() *metricdata.ResourceMetrics {
				id := []attribute.KeyValue{
					attribute.String("service.name", "web"),
					attribute.String("k8s.statefulset.name", "web"),
					attribute.String("k8s.some.future.key", "x"),
					attribute.String("k8s.node.name", "node-2"), // wins over the agent's
				}
				return &metricdata.ResourceMetrics{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(attrs(id, inKV), 1))}},
				}}
			},
			want: []metricdata.ResourceMetrics{
				{Resource: resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0",
					attribute.String("host.name", "host-1"),
					attribute.String("os.type", "linux"),
					attribute.String("service.name", "web"),
					attribute.String("k8s.statefulset.name", "web"),
					attribute.String("k8s.some.future.key", "x"),
					attribute.String("k8s.node.name", "node-2"),
				), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(in, 1))}},
				}},
			},
		},
		{
			name: "identity keys without service.name stay on the agent",
			input: func() *metricdata.ResourceMetrics {
				s := attribute.NewSet(attribute.Int("process.pid", 5), dir("receive"))
				return &metricdata.ResourceMetrics{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(s, 1)), counter(intPt(attrs(dbIdent), 2))}},
				}}
			},
			want: []metricdata.ResourceMetrics{
				{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(attribute.NewSet(attribute.Int("process.pid", 5), dir("receive")), 1))}},
				}},
				{Resource: serviceResource(dbIdent...), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(attribute.NewSet(), 2))}},
				}},
			},
		},
		{
			name: "nil agent resource",
			input: func() *metricdata.ResourceMetrics {
				return &metricdata.ResourceMetrics{ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(attrs(dbIdent), 2))}},
				}}
			},
			want: []metricdata.ResourceMetrics{
				{Resource: resource.NewWithAttributes("", dbIdent...), ScopeMetrics: []metricdata.ScopeMetrics{
					{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(intPt(attribute.NewSet(), 2))}},
				}},
			},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := tt.input()
			got := SplitMetrics(input)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d ResourceMetrics, want %d:\n%s", len(got), len(tt.want), dump(got))
			}
			for i := range got {
				// metricdatatest ignores slice order, so check the order
				// of resources, scopes and metrics separately.
				if !got[i].Resource.Equal(tt.want[i].Resource) {
					t.Errorf("[%d] resource = %v, want %v", i, got[i].Resource, tt.want[i].Resource)
				}
				if g, w := layout(got[i]), layout(&tt.want[i]); g != w {
					t.Errorf("[%d] layout = %s, want %s", i, g, w)
				}
				metricdatatest.AssertEqual(t, tt.want[i], *got[i])
			}
			// The input must be exactly what it was.
			metricdatatest.AssertEqual(t, *tt.input(), *input)
			if g, w := layout(input), layout(tt.input()); g != w {
				t.Errorf("input layout changed: %s, want %s", g, w)
			}
		})
	}
}

func TestSplitMetricsDeterministic(t *testing.T) {
	mk := func(order []int) *metricdata.ResourceMetrics {
		var pts []metricdata.DataPoint[int64]
		for _, i := range order {
			pts = append(pts, intPt(attribute.NewSet(attribute.String("service.name", fmt.Sprintf("svc-%d", i%3)),
				attribute.Int("process.pid", i)), int64(i)))
		}
		return &metricdata.ResourceMetrics{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
			{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(pts...)}},
		}}
	}
	a := SplitMetrics(mk([]int{5, 4, 3, 2, 1, 0}))
	b := SplitMetrics(mk([]int{0, 1, 2, 3, 4, 5}))
	if len(a) != 6 || len(b) != 6 {
		t.Fatalf("want 6 groups, got %d and %d", len(a), len(b))
	}
	for i := range a {
		if !a[i].Resource.Equal(b[i].Resource) {
			t.Errorf("[%d] order depends on input order: %v vs %v", i, a[i].Resource, b[i].Resource)
		}
	}
	// Sorted by service.name first.
	if v, _ := a[0].Resource.Set().Value("service.name"); v.AsString() != "svc-0" {
		t.Errorf("first group is %v, want svc-0", a[0].Resource)
	}
}

func TestCountDataPoints(t *testing.T) {
	rm := &metricdata.ResourceMetrics{ScopeMetrics: []metricdata.ScopeMetrics{{Metrics: []metricdata.Metrics{
		counter(intPt(attribute.NewSet(), 1), intPt(attrs(dbIdent), 1)),
		histF(histPt[float64](attribute.NewSet(), 1)),
		{Name: "nil"},
	}}}}
	if n := CountDataPoints(rm); n != 3 {
		t.Errorf("CountDataPoints = %d, want 3", n)
	}
	var total int
	for _, g := range SplitMetrics(rm) {
		total += CountDataPoints(g)
	}
	if total != 3 {
		t.Errorf("points after split = %d, want 3", total)
	}
}

func TestIsResourceKey(t *testing.T) {
	for k, want := range map[attribute.Key]bool{
		"service.name":          true,
		"service.instance.id":   true,
		"process.pid":           true,
		"container.id":          true,
		"k8s.pod.uid":           true,
		"k8s.argorollout.name":  true,
		"network.io.direction":  false,
		"server.port":           false,
		"http.request.method":   false,
		"k8s":                   false,
		"processes.pid.nothing": false,
	} {
		if got := IsResourceKey(k); got != want {
			t.Errorf("IsResourceKey(%q) = %v, want %v", k, got, want)
		}
	}
	// The first-byte shortcut must not turn any listed key away.
	for _, k := range ResourceKeys {
		if !IsResourceKey(k) {
			t.Errorf("IsResourceKey(%q) = false for a key of ResourceKeys", k)
		}
	}
	if IsResourceKey("") {
		t.Error("the empty key is a resource key")
	}
}

// layout renders the structure (scopes, metric names, point counts) in order.
func layout(rm *metricdata.ResourceMetrics) string {
	s := ""
	for _, sm := range rm.ScopeMetrics {
		s += "[" + sm.Scope.Name
		for _, m := range sm.Metrics {
			s += fmt.Sprintf(" %s:%d", m.Name, DataPointCount(m.Data))
		}
		s += "]"
	}
	return s
}

func dump(rms []*metricdata.ResourceMetrics) string {
	s := ""
	for _, rm := range rms {
		s += fmt.Sprintf("%v %s\n", rm.Resource, layout(rm))
	}
	return s
}

// benchInput builds 1000 series: 100 services x 5 directions/ports x 2
// metrics, plus self metrics, like a busy node.
func benchInput() *metricdata.ResourceMetrics {
	var sum []metricdata.DataPoint[int64]
	var hist []metricdata.HistogramDataPoint[float64]
	for svc := range 100 {
		for port := range 5 {
			s := attribute.NewSet(
				attribute.String("service.name", fmt.Sprintf("svc-%03d", svc)),
				attribute.Int("process.pid", 1000+svc),
				attribute.String("process.executable.name", "svc"),
				attribute.String("k8s.namespace.name", "default"),
				attribute.String("k8s.pod.name", fmt.Sprintf("svc-%03d-abc", svc)),
				attribute.Int("server.port", 8000+port),
				dir("receive"),
			)
			sum = append(sum, intPt(s, int64(port)))
			hist = append(hist, histPt[float64](s, 1.5))
		}
	}
	return &metricdata.ResourceMetrics{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
		{Scope: scopeTCP, Metrics: []metricdata.Metrics{counter(sum...), histF(hist...)}},
		{Scope: scopeSelf, Metrics: []metricdata.Metrics{counter(intPt(attribute.NewSet(attribute.String("collector", "tcp")), 1))}},
	}}
}

func BenchmarkSplitMetrics1000Series(b *testing.B) {
	rm := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		if got := SplitMetrics(rm); len(got) != 101 {
			b.Fatalf("got %d groups", len(got))
		}
	}
}

func BenchmarkSplitMetricsNoIdentity(b *testing.B) {
	rm := &metricdata.ResourceMetrics{Resource: agentResource(), ScopeMetrics: []metricdata.ScopeMetrics{
		{Scope: scopeSelf, Metrics: []metricdata.Metrics{counter(intPt(attribute.NewSet(attribute.String("collector", "tcp")), 1))}},
	}}
	b.ReportAllocs()
	for b.Loop() {
		SplitMetrics(rm)
	}
}

// TestProgramResource: the program's resource attributes (ProgramResource)
// are expanded into its resource, over the agent's host attributes and what
// the agent found out (service.version from Kubernetes), under what it
// measures (service.name, service.instance.id, process.*); they are no data
// point attribute.
func TestProgramResource(t *testing.T) {
	prog := attribute.StringSlice(string(ProgramResource), []string{
		"deployment.environment.name=prod", "host.name=from-program", "service.name=ignored", "service.version=1.2", "note=a=b",
		"process.pid=7", "service.instance.id=ignored", "k8s.pod.name=from-program"})
	rm := &metricdata.ResourceMetrics{
		Resource: agentResource(),
		ScopeMetrics: []metricdata.ScopeMetrics{{Scope: scopeTCP, Metrics: []metricdata.Metrics{{
			Name: "m",
			Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true, DataPoints: []metricdata.DataPoint[int64]{
				{Attributes: attribute.NewSet(attribute.String("service.name", "api"), attribute.Int("process.pid", 100),
					attribute.String("service.version", "from-k8s"), attribute.String("k8s.pod.name", "api-1"), prog, attribute.String("peer", "x")), Value: 1},
			}},
		}}}},
	}
	got := SplitMetrics(rm)
	if len(got) != 1 {
		t.Fatalf("%d resources", len(got))
	}
	want := resource.NewWithAttributes(agentResource().SchemaURL(),
		attribute.String("k8s.node.name", "node-1"),
		attribute.String("host.name", "from-program"),
		attribute.String("os.type", "linux"),
		attribute.String("deployment.environment.name", "prod"),
		attribute.String("service.version", "1.2"),
		attribute.String("note", "a=b"),
		attribute.String("service.name", "api"),
		attribute.Int("process.pid", 100),
		attribute.String("k8s.pod.name", "from-program"),
	)
	if !got[0].Resource.Equal(want) {
		t.Fatalf("resource %s, want %s", got[0].Resource.Encoded(attribute.DefaultEncoder()), want.Encoded(attribute.DefaultEncoder()))
	}
	pt := got[0].ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64]).DataPoints[0]
	if pt.Attributes.Len() != 1 {
		t.Fatalf("data point attributes %v, want only peer", pt.Attributes.ToSlice())
	}
}

// TestAgentObservingItself: the agent's own process, seen by a collector
// (its export connections), is the agent, not another service named
// otelbee: its points get the agent's resource.
func TestAgentObservingItself(t *testing.T) {
	self := []attribute.KeyValue{attribute.String("service.name", "otelbee"), attribute.Int("process.pid", 1),
		attribute.StringSlice(string(ProgramResource), []string{"site=lab"})}
	rm := &metricdata.ResourceMetrics{
		Resource: agentResource(),
		ScopeMetrics: []metricdata.ScopeMetrics{{Scope: scopeTCP, Metrics: []metricdata.Metrics{{
			Name: "m",
			Data: metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true, DataPoints: []metricdata.DataPoint[int64]{
				{Attributes: attribute.NewSet(append(self, attribute.String("peer", "x"))...), Value: 1},
				{Attributes: attribute.NewSet(apiIdent...), Value: 2},
			}},
		}}}},
	}
	got := SplitMetrics(rm)
	if len(got) != 2 || got[1].Resource != rm.Resource {
		t.Fatalf("want the api service and the agent's own resource, got %d parts: %v", len(got), got)
	}
}

package otlp

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		env     map[string]string
		wantErr string
	}{
		{name: "zero"},
		{name: "grpc", cfg: Config{Protocol: "grpc"}},
		{name: "http", cfg: Config{Protocol: "http/protobuf", Endpoint: "https://collector:4318/otlp"}},
		{name: "upper case", cfg: Config{Protocol: "GRPC"}},
		{name: "bare host:port", cfg: Config{Endpoint: "collector:4317"}},
		{name: "unknown", cfg: Config{Protocol: "udp"}, wantErr: `otlp protocol "udp" is unknown: valid choices are "grpc" and "http/protobuf"`},
		{name: "json", cfg: Config{Protocol: "http/json"}, wantErr: `otlp protocol "http/json" is not supported by otelbee: valid choices are "grpc" and "http/protobuf"`},
		{name: "env generic", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
			wantErr: `OTEL_EXPORTER_OTLP_PROTOCOL "thrift" is unknown: valid choices are "grpc" and "http/protobuf"`},
		{name: "env traces", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "zipkin"},
			wantErr: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL "zipkin" is unknown`},
		{name: "flag wins over bad env", cfg: Config{Protocol: "grpc"}, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}},
		{name: "bad scheme", cfg: Config{Endpoint: "tcp://collector:4317"}, wantErr: `scheme "tcp" is not supported`},
		{name: "no host", cfg: Config{Endpoint: "http://"}, wantErr: "has no host"},
		{name: "unparsable", cfg: Config{Endpoint: "http://[::1"}, wantErr: `otlp endpoint "http://[::1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTLPEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigEnabled(t *testing.T) {
	tests := []struct {
		name                   string
		cfg                    Config
		env                    map[string]string
		any, metrics, tracesOn bool
	}{
		{name: "nothing"},
		{name: "flag", cfg: Config{Endpoint: "collector:4317"}, any: true, metrics: true, tracesOn: true},
		{name: "generic env", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, any: true, metrics: true, tracesOn: true},
		{name: "metrics env", env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}, any: true, metrics: true},
		{name: "traces env", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, any: true, tracesOn: true},
		{name: "blank env", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOTLPEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if got := tt.cfg.Enabled(); got != tt.any {
				t.Errorf("Enabled() = %v, want %v", got, tt.any)
			}
			if got := tt.cfg.MetricsEnabled(); got != tt.metrics {
				t.Errorf("MetricsEnabled() = %v, want %v", got, tt.metrics)
			}
			if got := tt.cfg.TracesEnabled(); got != tt.tracesOn {
				t.Errorf("TracesEnabled() = %v, want %v", got, tt.tracesOn)
			}
		})
	}
}

func TestEndpointURL(t *testing.T) {
	tests := []struct {
		endpoint, proto string
		sig             signal
		env             map[string]string
		want            string
	}{
		{endpoint: "collector:4317", proto: ProtocolGRPC, sig: metricsSignal, want: "http://collector:4317"},
		{endpoint: "collector:4317", proto: ProtocolGRPC, sig: metricsSignal,
			env: map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "false"}, want: "https://collector:4317"},
		{endpoint: "collector:4317", proto: ProtocolGRPC, sig: tracesSignal,
			env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "FALSE"}, want: "https://collector:4317"},
		{endpoint: "collector:4317", proto: ProtocolGRPC, sig: metricsSignal,
			env: map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true"}, want: "http://collector:4317"},
		{endpoint: "https://collector:4317", proto: ProtocolGRPC, sig: metricsSignal, want: "https://collector:4317"},
		{endpoint: "collector:4318", proto: ProtocolHTTPProtobuf, sig: metricsSignal, want: "http://collector:4318/v1/metrics"},
		{endpoint: "http://collector:4318/", proto: ProtocolHTTPProtobuf, sig: tracesSignal, want: "http://collector:4318/v1/traces"},
		{endpoint: "https://gw.example.com/otlp", proto: ProtocolHTTPProtobuf, sig: metricsSignal, want: "https://gw.example.com/otlp/v1/metrics"},
		{endpoint: "http://collector:4318/v1/metrics", proto: ProtocolHTTPProtobuf, sig: metricsSignal, want: "http://collector:4318/v1/metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint+" "+tt.proto+" "+tt.sig.name, func(t *testing.T) {
			clearOTLPEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := Config{Endpoint: tt.endpoint}.endpointURL(tt.sig, tt.proto)
			if err != nil || got != tt.want {
				t.Errorf("endpointURL = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// agentResource is the agent's own resource, as the MeterProvider has it.
func agentResource() *resource.Resource {
	return resource.NewSchemaless(
		attribute.String("service.name", "otelbee"),
		attribute.String("service.instance.id", "agent-1"),
		attribute.String("host.name", "node-1"),
		attribute.String("os.type", "linux"),
	)
}

func identity(name string, pid int) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("service.name", name),
		attribute.Int("process.pid", pid),
		attribute.String("process.executable.name", name),
	}
}

// collectMetrics records the way collectors do (identity on the data
// points) on a real MeterProvider and returns the collected data.
func collectMetrics(t *testing.T) *metricdata.ResourceMetrics {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(agentResource()), sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m := mp.Meter("github.com/otelbee/otelbee/collectors/tcp")
	opened, _ := m.Int64Counter("tcp.connection.opened", metric.WithUnit("{connection}"))
	dur, _ := m.Float64Histogram("tcp.connection.duration", metric.WithUnit("s"))
	events, _ := m.Int64Counter("otelbee.events.produced")

	ctx := context.Background()
	in := attribute.String("network.io.direction", "inbound")
	opened.Add(ctx, 3, metric.WithAttributes(append(identity("api", 100), in)...))
	opened.Add(ctx, 1, metric.WithAttributes(append(identity("db", 200), in)...))
	dur.Record(ctx, 0.25, metric.WithAttributes(append(identity("api", 100), in)...))
	events.Add(ctx, 42, metric.WithAttributes(attribute.String("collector", "tcp")))

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	return &rm
}

func TestMetricExporterSplitsPerService(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(proto, func(t *testing.T) {
			clearOTLPEnv(t)
			var endpoint string
			var r *receiver
			if proto == ProtocolGRPC {
				endpoint, r = startGRPC(t) // bare host:port: plaintext
			} else {
				endpoint, r = startHTTP(t) // base URL: /v1/metrics appended
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			exp, err := NewMetricExporter(ctx, Config{Endpoint: endpoint, Protocol: proto})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = exp.Shutdown(ctx) }()
			if exp.Protocol() != proto {
				t.Errorf("Protocol() = %q, want %q", exp.Protocol(), proto)
			}

			if err := exp.Export(ctx, collectMetrics(t)); err != nil {
				t.Fatalf("Export: %v", err)
			}

			r.mu.Lock()
			defer r.mu.Unlock()
			if r.requests != 1 || len(r.metrics) != 3 {
				t.Fatalf("got %d requests with %d ResourceMetrics, want one request holding 3", r.requests, len(r.metrics))
			}
			// Order: the agent's own resource, then services by name.
			want := []struct {
				res     map[string]string
				metrics map[string]int // name -> data points
			}{
				{
					res:     map[string]string{"service.name": "otelbee", "service.instance.id": "agent-1", "host.name": "node-1", "os.type": "linux"},
					metrics: map[string]int{"otelbee.events.produced": 1},
				},
				{
					res:     map[string]string{"service.name": "api", "process.pid": "100", "process.executable.name": "api", "host.name": "node-1", "os.type": "linux"},
					metrics: map[string]int{"tcp.connection.opened": 1, "tcp.connection.duration": 1},
				},
				{
					res:     map[string]string{"service.name": "db", "process.pid": "200", "process.executable.name": "db", "host.name": "node-1", "os.type": "linux"},
					metrics: map[string]int{"tcp.connection.opened": 1},
				},
			}
			for i, rm := range r.metrics {
				if got := attrMap(rm.GetResource().GetAttributes()); !reflect.DeepEqual(got, want[i].res) {
					t.Errorf("[%d] resource = %v, want %v", i, got, want[i].res)
				}
				got := map[string]int{}
				for _, sm := range rm.GetScopeMetrics() {
					for _, m := range sm.GetMetrics() {
						var pts []map[string]string
						for _, dp := range m.GetSum().GetDataPoints() {
							pts = append(pts, attrMap(dp.GetAttributes()))
						}
						for _, dp := range m.GetHistogram().GetDataPoints() {
							pts = append(pts, attrMap(dp.GetAttributes()))
						}
						for _, p := range pts {
							for k := range p {
								if k == "service.name" || strings.HasPrefix(k, "process.") {
									t.Errorf("[%d] %s: identity attribute %q left on the data point", i, m.GetName(), k)
								}
							}
						}
						got[m.GetName()] += len(pts)
					}
				}
				if !reflect.DeepEqual(got, want[i].metrics) {
					t.Errorf("[%d] metrics = %v, want %v", i, got, want[i].metrics)
				}
			}
			if proto == ProtocolHTTPProtobuf {
				for _, p := range r.paths {
					if p != "/v1/metrics" {
						t.Errorf("posted to %q, want /v1/metrics", p)
					}
				}
			}
			if exp.Exported() != 4 || exp.Failures() != 0 || exp.Dropped() != 0 {
				t.Errorf("Exported/Failures/Dropped = %d/%d/%d, want 4/0/0", exp.Exported(), exp.Failures(), exp.Dropped())
			}
		})
	}
}

func TestMetricExporterRefused(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(proto, func(t *testing.T) {
			clearOTLPEnv(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			exp, err := NewMetricExporter(ctx, Config{Endpoint: refusedAddr(t), Protocol: proto})
			if err != nil {
				t.Fatalf("a refused endpoint must not fail construction: %v", err)
			}
			defer func() { _ = exp.Shutdown(context.Background()) }()

			// Short per-request deadline: the exporters retry refused
			// connections until the context ends.
			ectx, ecancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer ecancel()
			err = exp.Export(ectx, collectMetrics(t))
			if err == nil {
				t.Fatal("Export to a refused endpoint returned nil")
			}
			if !strings.Contains(err.Error(), "exporting metrics over otlp "+proto) {
				t.Errorf("error %q does not say what failed", err)
			}
			if exp.Failures() != 1 || exp.Dropped() != 4 || exp.Exported() != 0 {
				t.Errorf("Failures/Dropped/Exported = %d/%d/%d, want 1/4/0 (one request)", exp.Failures(), exp.Dropped(), exp.Exported())
			}
		})
	}
}

func TestNewExporterRejectsBadConfig(t *testing.T) {
	clearOTLPEnv(t)
	ctx := context.Background()
	if _, err := NewMetricExporter(ctx, Config{Protocol: "udp"}); err == nil {
		t.Error("NewMetricExporter accepted protocol udp")
	}
	if _, err := NewTraceExporter(ctx, Config{Endpoint: "ftp://x:1"}); err == nil {
		t.Error("NewTraceExporter accepted an ftp endpoint")
	}
}

func TestMetricExporterTemporalityFromEnv(t *testing.T) {
	clearOTLPEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
	exp, err := NewMetricExporter(context.Background(), Config{Endpoint: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = exp.Shutdown(context.Background()) }()
	if got := exp.Temporality(sdkmetric.InstrumentKindCounter); got != metricdata.DeltaTemporality {
		t.Errorf("Temporality(counter) = %v, want delta (delegated to the OTLP exporter)", got)
	}
	if _, ok := exp.Aggregation(sdkmetric.InstrumentKindHistogram).(sdkmetric.AggregationExplicitBucketHistogram); !ok {
		t.Errorf("Aggregation(histogram) = %T, want explicit buckets", exp.Aggregation(sdkmetric.InstrumentKindHistogram))
	}
}

// endSpans produces spans as the HTTP collector would: on the agent's
// TracerProvider, identity as span attributes.
func endSpans(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(agentResource()), sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tp.Tracer("github.com/otelbee/otelbee/collectors/http")
	for _, id := range [][]attribute.KeyValue{identity("api", 100), identity("db", 200), identity("api", 100)} {
		_, sp := tr.Start(context.Background(), "GET", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(append(id, attribute.String("http.request.method", "GET"))...))
		sp.End()
	}
	return rec.Ended()
}

func TestTraceExporterSplitsPerService(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(proto, func(t *testing.T) {
			clearOTLPEnv(t)
			var endpoint string
			var r *receiver
			if proto == ProtocolGRPC {
				endpoint, r = startGRPC(t)
			} else {
				endpoint, r = startHTTP(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			exp, err := NewTraceExporter(ctx, Config{Endpoint: endpoint, Protocol: proto})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = exp.Shutdown(ctx) }()

			if err := exp.ExportSpans(ctx, endSpans(t)); err != nil {
				t.Fatalf("ExportSpans: %v", err)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.requests != 1 {
				t.Errorf("got %d requests, want 1", r.requests)
			}
			got := map[string]int{} // service.name -> spans
			for _, rs := range r.spans {
				res := attrMap(rs.GetResource().GetAttributes())
				if res["host.name"] != "node-1" || res["service.instance.id"] != "" {
					t.Errorf("resource %v: want the agent's host attributes without its instance id", res)
				}
				for _, ss := range rs.GetScopeSpans() {
					for _, sp := range ss.GetSpans() {
						attrs := attrMap(sp.GetAttributes())
						if _, ok := attrs["service.name"]; ok || attrs["http.request.method"] != "GET" {
							t.Errorf("span attributes = %v, want only http.request.method", attrs)
						}
						got[res["service.name"]+"/"+res["process.pid"]]++
					}
				}
			}
			if want := map[string]int{"api/100": 2, "db/200": 1}; !reflect.DeepEqual(got, want) || len(r.spans) != 2 {
				t.Errorf("spans per resource = %v in %d ResourceSpans, want %v in 2", got, len(r.spans), want)
			}
			if exp.Exported() != 3 || exp.Failures() != 0 {
				t.Errorf("Exported/Failures = %d/%d, want 3/0", exp.Exported(), exp.Failures())
			}
		})
	}
}

func TestTraceExporterRefused(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(proto, func(t *testing.T) {
			clearOTLPEnv(t)
			exp, err := NewTraceExporter(context.Background(), Config{Endpoint: refusedAddr(t), Protocol: proto})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = exp.Shutdown(context.Background()) }()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if err := exp.ExportSpans(ctx, endSpans(t)); err == nil {
				t.Fatal("ExportSpans to a refused endpoint returned nil")
			}
			if exp.Failures() != 1 || exp.Dropped() != 3 || exp.DroppedBy(ReasonExportFailed) != 3 {
				t.Errorf("Failures/Dropped/export_failed = %d/%d/%d, want 1/3/3", exp.Failures(), exp.Dropped(), exp.DroppedBy(ReasonExportFailed))
			}
			// Cut short by the shutdown deadline: counted as such.
			sctx, scancel := context.WithCancelCause(context.Background())
			scancel(errShutdown)
			if err := exp.ExportSpans(sctx, endSpans(t)); !errors.Is(err, ErrReported) {
				t.Fatalf("ExportSpans = %v, want an error wrapping ErrReported", err)
			}
			if exp.DroppedBy(ReasonShutdown) != 3 || exp.Dropped() != 6 {
				t.Errorf("shutdown/total dropped = %d/%d, want 3/6", exp.DroppedBy(ReasonShutdown), exp.Dropped())
			}
		})
	}
}

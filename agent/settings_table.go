package agent

import (
	"strings"

	"github.com/otelbee/otelbee/agent/settings"
	"github.com/otelbee/otelbee/collectors/budget"
	"github.com/otelbee/otelbee/collectors/dns"
	httpc "github.com/otelbee/otelbee/collectors/http"
	"github.com/otelbee/otelbee/collectors/l7/http2"
	"github.com/otelbee/otelbee/collectors/l7/kafka"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
	"github.com/otelbee/otelbee/collectors/tcp"
	tlsc "github.com/otelbee/otelbee/collectors/tls"
	"github.com/otelbee/otelbee/k8smeta"
)

// Settings is every option of the agent, bound to c: the one declaration
// that the command line, the environment, the --config file, --help and
// the README's table are all read from. A collector or protocol declares
// its own in its package (func Settings(*Config) []settings.Setting) and
// is listed here once.
func (c *Config) Settings() []settings.Setting {
	var all []settings.Setting
	for _, group := range [][]settings.Setting{
		c.agentSettings(),
		tcp.Settings(&c.TCP),
		budget.Settings(&c.Series),
		dns.Settings(&c.DNS),
		httpc.Settings(&c.HTTP),
		http2.Settings(&c.HTTP2),
		kafka.Settings(&c.Kafka),
		sqlsummary.Settings(&c.DB),
		tlsc.Settings(&c.TLS),
		k8smeta.Settings(&c.Kubernetes),
	} {
		all = append(all, group...)
	}
	return all
}

// agentSettings are the agent's own options: files, exporters, attach
// modes, process identity.
func (c *Config) agentSettings() []settings.Setting {
	return []settings.Setting{
		{Flag: "config", Env: []string{"OTELBEE_CONFIG"}, Value: settings.String(&c.ConfigFile),
			Help: "YAML file whose keys are the file key column (an example: [docs/config.example.yaml](docs/config.example.yaml))"},
		{Flag: "collectors", Env: []string{"OTELBEE_COLLECTORS"}, Key: "collectors", Value: settings.List(&c.Collectors),
			Help: "comma list of `" + strings.Join(CollectorNames(), "`, `") + "`, or `all`"},
		{Flag: "prometheus.listen", Env: []string{"OTELBEE_PROMETHEUS_LISTEN"}, Key: "prometheus.listen", Value: settings.String(&c.Prometheus.Listen),
			Help: "`/metrics` endpoint; empty string turns it off; an address on every interface (`:9464`, `0.0.0.0:9464`) is logged as such. At most 64 connections (at the cap the oldest idle one is closed), 4 scrapes collecting at once; the answer is streamed in 32 kB chunks, each to be taken by the client within 5 s (protobuf: rendered into memory first), so a client that does not read holds no slot; timeouts: 5 s for the request header, 30 s to write the answer, 90 s idle"},
		{Flag: "prometheus.resource-labels", Env: []string{"OTELBEE_PROMETHEUS_RESOURCE_LABELS"}, Key: "prometheus.resource_labels", Value: settings.List(&c.Prometheus.ResourceLabels),
			Help: "resource attributes copied as labels onto every series besides `job`/`instance` (e.g. `service.name` → `service_name`), `*` for all; default: on `target_info` only"},
		{Flag: "otlp.endpoint", Env: []string{"OTELBEE_OTLP_ENDPOINT"}, OtherEnv: []string{"OTEL_EXPORTER_OTLP_(METRICS_|TRACES_)ENDPOINT"},
			Key: "otlp.endpoint", Value: settings.String(&c.OTLP.Endpoint), Default: "unset: no OTLP",
			Help: "OTLP base URL or host:port"},
		{Flag: "otlp.protocol", OtherEnv: []string{"OTEL_EXPORTER_OTLP_(METRICS_|TRACES_)PROTOCOL"},
			Key: "otlp.protocol", Value: settings.String(&c.OTLP.Protocol), Default: "`http/protobuf`",
			Help: "`grpc` or `http/protobuf`"},
		{Flag: "otlp.traces-sampler", Env: []string{"OTEL_TRACES_SAMPLER"}, Key: "otlp.traces_sampler", Value: settings.String(&c.OTLP.TracesSampler),
			Default: "`parentbased_always_on`",
			Help:    "trace sampler: `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio`; another value is an error"},
		{Flag: "otlp.traces-sampler-arg", Env: []string{"OTEL_TRACES_SAMPLER_ARG"}, Key: "otlp.traces_sampler_arg", Value: settings.String(&c.OTLP.TracesSamplerArg),
			Default: "`1`", Help: "the ratio of the `*traceidratio` samplers (0 to 1)"},
		// Read by the OTLP exporter itself; listed here so the table is whole.
		{OtherEnv: []string{"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"}, Default: "`cumulative`",
			Help: "`cumulative`, `delta` or `lowmemory`, for every metric exported over OTLP, histograms included ([docs/metrics.md](docs/metrics.md#temporality-and-histogram-aggregation-otlp)); Prometheus stays cumulative"},
		{OtherEnv: []string{"OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"}, Default: "`explicit_bucket_histogram`",
			Help: "`base2_exponential_bucket_histogram`: HTTP and DNS histograms go out over OTLP as exponential histograms (kernel-bucketed TCP histograms stay explicit, logged)"},
		{Flag: "attach-mode", Env: []string{"OTELBEE_ATTACH_MODE"}, Key: "attach_mode", Value: settings.String(&c.AttachMode),
			Help: "try this attach mode first on every hook that declares it, then the rest of the chain: `auto`, `tp_btf`, `fentry`, `kprobe`, `tracepoint` (troubleshooting)"},
		{Flag: "attach-mode.strict", Env: []string{"OTELBEE_ATTACH_MODE_STRICT"}, Key: "attach_mode_strict", Value: settings.Bool(&c.AttachModeStrict),
			Help: "with `--attach-mode`: no fallback; a hook whose forced mode fails stays detached"},
		{Flag: "bpf.stats", Env: []string{"OTELBEE_BPF_STATS"}, Key: "bpf_stats", Value: settings.Bool(&c.BPFStats),
			Help: "enable kernel BPF run-time statistics and export them per program"},
		{Flag: "resource.attributes", Env: []string{"OTELBEE_RESOURCE_ATTRIBUTES"}, Key: "resource_attributes", Value: settings.String(&c.ResourceAttributes),
			Help: "resource attributes of every observed service, `key=value,...` as in `OTEL_RESOURCE_ATTRIBUTES` (values percent-encoded); a program's own `OTEL_RESOURCE_ATTRIBUTES` win. The agent's own `OTEL_RESOURCE_ATTRIBUTES` / `OTEL_SERVICE_NAME` describe only the agent's self-telemetry"},
		{Flag: "run-without-collectors", Env: []string{"OTELBEE_RUN_WITHOUT_COLLECTORS"}, Key: "run_without_collectors", Value: settings.Bool(&c.RunWithoutCollectors),
			Help: "keep running (self-telemetry only) when no collector can be loaded; otherwise `run` exits with status 1 and names what is missing (capabilities from the effective set, an unreadable tracefs). `otelbee doctor` exits with status 1 when no collector can run"},
		{Flag: "log.level", Env: []string{"OTELBEE_LOG_LEVEL"}, OtherEnv: []string{"OTEL_LOG_LEVEL"}, Key: "log_level", Value: settings.String(&c.LogLevel),
			Help: "`debug`, `info`, `warn`, `error`"},
		{Flag: "shutdown-timeout", Key: "shutdown_timeout", Value: settings.Duration(&c.ShutdownTimeout),
			Help: "the whole shutdown: final metric and span export, then detaching the programs (200 ms + 15 ms per program are kept for that); what is still unsent then is counted `reason=\"shutdown\"`"},
		{Flag: "process.retention", Env: []string{"OTELBEE_PROCESS_RETENTION"}, Key: "process.retention", Value: settings.Duration(&c.Process.Retention),
			Help: "how long the identity of an exited process is kept for the series it left (at least `1s`)"},
		{Flag: "process.instance", Env: []string{"OTELBEE_PROCESS_INSTANCE"}, Key: "process.instance", Value: settings.String(&c.Process.Instance),
			Help: "what one service instance (`service.instance.id`) is in the metrics: `service`, a server with its worker pool (`<host>:<server pid>`) and the processes of a service that do not listen one per host or container (`<host>:<service.name>`); `pid`, every process (`<host>:<pid>`, a copy of every series per process). Spans keep the process (docs/metrics.md)"},
		{Flag: "state-dir", Env: []string{"OTELBEE_STATE_DIR"}, Key: "state_dir", Value: settings.String(&c.StateDir),
			Help: "what must survive a restart: service names learned at exec (nginx keeps its `OTEL_SERVICE_NAME` across agent upgrades); empty string keeps nothing; unwritable: logged, nothing kept"},
	}
}

// SettingsMarkdown is the README's settings table, defaults included.
func SettingsMarkdown() string {
	cfg := DefaultConfig()
	return settings.Markdown(cfg.Settings())
}

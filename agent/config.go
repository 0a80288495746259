package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/agent/settings"
	"github.com/otelbee/otelbee/collectors/budget"
	"github.com/otelbee/otelbee/collectors/dns"
	"github.com/otelbee/otelbee/collectors/hook"
	httpc "github.com/otelbee/otelbee/collectors/http"
	"github.com/otelbee/otelbee/collectors/l7/http2"
	"github.com/otelbee/otelbee/collectors/l7/kafka"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/collectors/tcp"
	tlsc "github.com/otelbee/otelbee/collectors/tls"
	"github.com/otelbee/otelbee/exporters/otlp"
	"github.com/otelbee/otelbee/k8smeta"
	"github.com/otelbee/otelbee/process/identity"
)

// Config is the agent's whole configuration. Precedence, highest first:
// command-line flags, environment (OTELBEE_* and the standard OTEL_*), the
// YAML file named by --config, defaults. Every field is filled by a setting
// declared in Settings (settings_table.go); TestSettingsDeclared holds it.
type Config struct {
	// ConfigFile is the YAML file read (--config).
	ConfigFile string
	// Deprecated are the deprecated setting names given, one message each
	// (Run logs them as warnings).
	Deprecated []string
	Collectors []string
	Prometheus PrometheusConfig
	OTLP       OTLPConfig
	// AttachMode is tried first on every hook that declares it: auto,
	// tp_btf, fentry, kprobe, tracepoint. For troubleshooting.
	AttachMode string
	// AttachModeStrict removes the fallback for AttachMode.
	AttachModeStrict bool
	LogLevel         string
	BPFStats         bool
	ShutdownTimeout  time.Duration
	// RunWithoutCollectors keeps the agent running (self-telemetry only)
	// when no collector can be loaded; otherwise run exits with status 1.
	RunWithoutCollectors bool
	// Export is where telemetry goes, from the standard OTEL_SDK_DISABLED,
	// OTEL_METRICS_EXPORTER and OTEL_TRACES_EXPORTER (see resolveExport).
	Export ExportConfig
	TCP    tcp.Config
	// Series is the agent-wide series budget (package budget).
	Series budget.Config
	DNS    dns.Config
	HTTP   httpc.Config
	HTTP2  http2.Config
	Kafka  kafka.Config
	// DB is the SQL protocols' (postgresql, mysql).
	DB sqlsummary.Config
	// TLS is the L7 capture's HTTPS plaintext source (uprobes).
	TLS tlsc.Config
	// Process is the process identity cache.
	Process ProcessConfig
	// StateDir keeps what the agent learned that a restart could not learn
	// again (process identities read at exec); empty keeps nothing.
	StateDir string

	// ResourceAttributes go on the resource of every observed service, in
	// the OTEL_RESOURCE_ATTRIBUTES format (key=value,...); a program's own
	// OTEL_RESOURCE_ATTRIBUTES win over them. The agent's own
	// OTEL_RESOURCE_ATTRIBUTES describe the agent only.
	ResourceAttributes string
	// Kubernetes adds pod metadata to every identity (package k8smeta).
	Kubernetes k8smeta.Config
}

// ProcessConfig is the process identity cache.
type ProcessConfig struct {
	// Retention is how long the identity of an exited process is kept,
	// for the series it left behind.
	Retention time.Duration
	// Instance is what one service instance is in the metrics: service
	// (a server with its workers; the other processes of a service, one
	// per host or container) or pid (every process).
	Instance string
}

// ExportConfig is the resolved choice of exporters per signal.
type ExportConfig struct {
	// Disabled is OTEL_SDK_DISABLED=true: nothing is collected or exported.
	Disabled                      bool
	OTLPMetrics, OTLPTraces       bool
	ConsoleMetrics, ConsoleTraces bool
}

// PrometheusConfig is the /metrics endpoint.
type PrometheusConfig struct {
	// Listen is host:port; empty turns the endpoint off.
	Listen string
	// ResourceLabels are resource attributes copied as labels onto every
	// series besides job and instance (e.g. service.name → service_name);
	// "*" copies all. Default none: they are on target_info.
	ResourceLabels []string
}

// OTLPConfig selects the OTLP exporter. The rest of its settings (headers,
// timeout, TLS, interval) come from the standard OTEL_* variables.
type OTLPConfig struct {
	Endpoint string
	Protocol string
	// TracesSampler and TracesSamplerArg are OTEL_TRACES_SAMPLER and
	// OTEL_TRACES_SAMPLER_ARG: the agent builds the sampler itself, so that
	// collectors can take the decision before they start a span.
	TracesSampler    string
	TracesSamplerArg string
	// SpanQueue is OTEL_BSP_*, bounded (see bspVars).
	SpanQueue otlp.QueueSettings
}

func (c OTLPConfig) exporterConfig() otlp.Config {
	return otlp.Config{Endpoint: c.Endpoint, Protocol: c.Protocol}
}

// DefaultConfig is what runs with no flags, no environment and no file.
func DefaultConfig() Config {
	return Config{
		Collectors:      []string{"tcp"},
		Prometheus:      PrometheusConfig{Listen: "127.0.0.1:9464"},
		AttachMode:      "auto",
		LogLevel:        "info",
		ShutdownTimeout: 5 * time.Second,
		TCP:             tcp.DefaultConfig(),
		Series:          budget.DefaultConfig(),
		DNS:             dns.DefaultConfig(),
		HTTP:            httpc.DefaultConfig(),
		HTTP2:           http2.DefaultConfig(),
		Kafka:           kafka.DefaultConfig(),
		DB:              sqlsummary.DefaultConfig(),
		Process:         ProcessConfig{Retention: 5 * time.Minute, Instance: "service"},
		TLS:             tlsc.DefaultConfig(),
		StateDir:        "/var/lib/otelbee",
	}
}

// UsageError is a configuration mistake: main prints it and exits with 2.
type UsageError struct{ Err error }

// Error is bounded: a value quoted in it may be huge (a 100 MB variable).
func (e *UsageError) Error() string { return truncate(e.Err.Error(), maxMessage) }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// LoadConfig builds the configuration from args (without the program name
// and subcommand) and the environment, as the declarations in Settings say.
func LoadConfig(args []string, getenv func(string) (string, bool), stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	table := cfg.Settings()
	given, rest, err := settings.Parse(table, args, getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "usage: otelbee [run|doctor|version] [flags]\n\nFlags, their environment variables and file keys (precedence: flags > environment > file > defaults):\n")
			settings.WriteHelp(stderr, table)
			return Config{}, err
		}
		return Config{}, &UsageError{Err: err}
	}
	if len(rest) > 0 {
		return Config{}, usageErrorf("unexpected argument %s (commands: run, doctor, version)", quote(rest[0]))
	}
	if cfg.OTLP.SpanQueue, err = bspSettings(getenv); err != nil {
		return Config{}, err
	}
	if err := checkSDKDurations(getenv); err != nil {
		return Config{}, err
	}
	// The file's path is itself a setting: apply the command line and the
	// environment once to learn it, read the file over the defaults, then
	// apply them again over the file.
	if err := settings.ApplyGiven(table, given); err != nil {
		return Config{}, &UsageError{Err: err}
	}
	if path := cfg.ConfigFile; path != "" {
		if err := readConfigFile(path, table); err != nil {
			return Config{}, err
		}
		if err := settings.ApplyGiven(table, given); err != nil {
			return Config{}, &UsageError{Err: err}
		}
		cfg.ConfigFile = path
	}
	set := map[string]bool{}
	for i := range given {
		set[table[i].Flag] = true
	}
	if err := resolveExport(&cfg, set, getenv); err != nil {
		return Config{}, err
	}
	if err := settings.RunChecks(table); err != nil {
		return Config{}, &UsageError{Err: err}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	cfg.Deprecated = settings.Deprecations(table)
	return cfg, nil
}

// resolveExport applies the standard variables that choose exporters and
// the log level, below the agent's own flags and OTELBEE_* variables:
//
//   - OTEL_SDK_DISABLED=true: no collector is loaded, nothing exported.
//   - OTEL_TRACES_EXPORTER: otlp, console, none (comma list). Unset: otlp
//     when an endpoint is configured. otlp without an endpoint uses the
//     specification's default (localhost:4318, or :4317 for grpc).
//   - OTEL_METRICS_EXPORTER: otlp, prometheus, console, none. Unset:
//     prometheus (--prometheus.listen), and otlp when an endpoint is
//     configured. Set without prometheus: no /metrics endpoint unless
//     --prometheus.listen or OTELBEE_PROMETHEUS_LISTEN asks for one.
//   - OTEL_EXPORTER_PROMETHEUS_HOST / _PORT: the /metrics address unless
//     --prometheus.listen or OTELBEE_PROMETHEUS_LISTEN gives one.
//   - OTEL_LOG_LEVEL: debug, info, warn, error, unless --log.level or
//     OTELBEE_LOG_LEVEL gives one.
//
// Other values are refused: none of these is ignored.
func resolveExport(cfg *Config, set map[string]bool, getenv func(string) (string, bool)) error {
	env := func(name string) (string, bool) {
		v, ok := getenv(name)
		v = strings.TrimSpace(v)
		return v, ok && v != ""
	}
	if v, ok := env("OTEL_SDK_DISABLED"); ok {
		switch strings.ToLower(v) {
		case "true":
			cfg.Export.Disabled = true
		case "false":
		default:
			return usageErrorf("invalid OTEL_SDK_DISABLED=%s: want true or false", quote(v))
		}
	}
	if v, ok := env("OTEL_LOG_LEVEL"); ok {
		if !set["log.level"] {
			cfg.LogLevel = strings.ToLower(v)
			if cfg.LogLevel == "warning" {
				cfg.LogLevel = "warn"
			}
			switch cfg.LogLevel {
			case "debug", "info", "warn", "error":
			default:
				return usageErrorf("invalid OTEL_LOG_LEVEL=%s (valid: debug, info, warn, error)", quote(v))
			}
		}
	}
	oc := cfg.OTLP.exporterConfig()
	cfg.Export.OTLPTraces, cfg.Export.OTLPMetrics = oc.TracesEnabled(), oc.MetricsEnabled()
	if v, ok := env("OTEL_TRACES_EXPORTER"); ok {
		names, err := exporterList("OTEL_TRACES_EXPORTER", v, "otlp", "console")
		if err != nil {
			return err
		}
		cfg.Export.OTLPTraces, cfg.Export.ConsoleTraces = names["otlp"], names["console"]
	}
	ownListen := set["prometheus.listen"]
	if !ownListen {
		host, hostSet := env("OTEL_EXPORTER_PROMETHEUS_HOST")
		port, portSet := env("OTEL_EXPORTER_PROMETHEUS_PORT")
		if hostSet || portSet {
			if !hostSet {
				host = "localhost"
			}
			if !portSet {
				port = "9464"
			}
			cfg.Prometheus.Listen = net.JoinHostPort(host, port)
		}
	}
	if v, ok := env("OTEL_METRICS_EXPORTER"); ok {
		names, err := exporterList("OTEL_METRICS_EXPORTER", v, "otlp", "prometheus", "console")
		if err != nil {
			return err
		}
		cfg.Export.OTLPMetrics, cfg.Export.ConsoleMetrics = names["otlp"], names["console"]
		if !names["prometheus"] && !ownListen {
			cfg.Prometheus.Listen = ""
		}
		if names["prometheus"] && cfg.Prometheus.Listen == "" && !ownListen {
			cfg.Prometheus.Listen = "localhost:9464"
		}
	}
	if cfg.Export.Disabled {
		cfg.Export = ExportConfig{Disabled: true}
		cfg.Prometheus.Listen = ""
	}
	return nil
}

// exporterList parses an OTEL_*_EXPORTER list: valid names, or none alone.
func exporterList(name, v string, valid ...string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, e := range splitList(strings.ToLower(v)) {
		switch {
		case e == "none":
			out["none"] = true
		case slices.Contains(valid, e):
			out[e] = true
		default:
			return nil, usageErrorf("unsupported %s value %s (valid: %s, none)", name, quote(e), strings.Join(valid, ", "))
		}
	}
	if out["none"] && len(out) > 1 {
		return nil, usageErrorf("%s=%s: none cannot be combined with another exporter", name, quote(v))
	}
	return out, nil
}

// maxConfigFile bounds the configuration file: a real one is a few kB.
const maxConfigFile = 1 << 20

func readConfigFile(path string, table []settings.Setting) error {
	b, err := readBoundedFile(path, maxConfigFile)
	if err != nil {
		return usageErrorf("reading config file %s: %v", quote(path), err)
	}
	if err := settings.DecodeYAML(b, table); err != nil {
		return usageErrorf("parsing config file %s: %s", quote(path), oneLine(err))
	}
	return nil
}

// oneLine joins a multi-line error (yaml lists one problem per line).
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// readBoundedFile reads a regular file of at most limit bytes. Devices
// (/dev/zero, /dev/urandom) never end and a FIFO blocks until someone
// writes: both are refused before reading. O_NONBLOCK keeps the open of a
// FIFO from blocking; the type is checked on the opened descriptor, so a
// rename in between cannot swap it.
func readBoundedFile(path string, limit int64) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%d bytes is larger than the %d allowed", st.Size(), limit)
	}
	// The file may grow after Stat: read one byte past the limit to know.
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than the %d bytes allowed", limit)
	}
	return b, nil
}

// maxMessage bounds an error message.
const maxMessage = 1024

// quote renders a user's value for an error message: quoted, one line,
// cut to a prefix.
func quote(v string) string { return settings.Quote(v) }

func truncate(s string, n int) string { return settings.Truncate(s, n) }

// bspVars are the span queue's OTEL_BSP_* variables with their bounds.
// Values out of bounds are refused, not clamped: the queue is allocated up
// front, and 2,000,000,000 slots would exhaust memory at start.
var bspVars = []struct {
	name     string
	min, max int
	set      func(*otlp.QueueSettings, int)
}{
	{"OTEL_BSP_MAX_QUEUE_SIZE", 1, 1 << 20, func(q *otlp.QueueSettings, v int) { q.MaxQueueSize = v }},
	{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, 1 << 16, func(q *otlp.QueueSettings, v int) { q.MaxExportBatchSize = v }},
	{"OTEL_BSP_SCHEDULE_DELAY", 1, 3_600_000, func(q *otlp.QueueSettings, v int) { q.ScheduleDelay = time.Duration(v) * time.Millisecond }},
	{"OTEL_BSP_EXPORT_TIMEOUT", 1, 3_600_000, func(q *otlp.QueueSettings, v int) { q.ExportTimeout = time.Duration(v) * time.Millisecond }},
}

// sdkDurationVars are millisecond settings the OpenTelemetry SDK reads
// itself and, when they do not parse, replaces with its default after a
// log line nobody reads: the agent checks them first.
var sdkDurationVars = []struct {
	name     string
	min, max int
}{
	{"OTEL_METRIC_EXPORT_INTERVAL", 1, 86_400_000},
	{"OTEL_METRIC_EXPORT_TIMEOUT", 1, 3_600_000},
	{"OTEL_EXPORTER_OTLP_TIMEOUT", 1, 3_600_000},
	{"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", 1, 3_600_000},
	{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 1, 3_600_000},
}

func checkSDKDurations(getenv func(string) (string, bool)) error {
	for _, d := range sdkDurationVars {
		v, ok := getenv(d.name)
		if v = strings.TrimSpace(v); !ok || v == "" {
			continue
		}
		if n, err := strconv.Atoi(v); err != nil || n < d.min || n > d.max {
			return usageErrorf("invalid %s=%s: want milliseconds from %d to %d", d.name, quote(v), d.min, d.max)
		}
	}
	return nil
}

func bspSettings(getenv func(string) (string, bool)) (otlp.QueueSettings, error) {
	q := otlp.DefaultQueueSettings()
	for _, b := range bspVars {
		v, ok := getenv(b.name)
		if v = strings.TrimSpace(v); !ok || v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < b.min || n > b.max {
			return q, usageErrorf("invalid %s=%s: want an integer from %d to %d", b.name, quote(v), b.min, b.max)
		}
		b.set(&q, n)
	}
	if q.MaxExportBatchSize > q.MaxQueueSize {
		return q, usageErrorf("OTEL_BSP_MAX_EXPORT_BATCH_SIZE (%d) must not exceed OTEL_BSP_MAX_QUEUE_SIZE (%d)", q.MaxExportBatchSize, q.MaxQueueSize)
	}
	return q, nil
}

func splitList(s string) []string { return settings.SplitList(s) }

// maxPeersPerProcess bounds tcp.max_peers_per_process: each peer is a
// series per process.
const maxPeersPerProcess = 100_000

// Validate checks every field and expands "all".
func (c *Config) Validate() error {
	valid := CollectorNames()
	if len(c.Collectors) == 0 {
		return usageErrorf("no collectors enabled (valid: %s, all)", strings.Join(valid, ", "))
	}
	var expanded []string
	for _, name := range c.Collectors {
		if name == "all" {
			expanded = append(expanded, valid...)
			continue
		}
		if !slices.Contains(valid, name) {
			return usageErrorf("unknown collector %s (valid: %s, all)", quote(name), strings.Join(valid, ", "))
		}
		expanded = append(expanded, name)
	}
	sort.Strings(expanded)
	c.Collectors = slices.Compact(expanded)
	if c.Kubernetes.Enabled && c.Kubernetes.NodeName == "" {
		return usageErrorf("kubernetes metadata needs the node name (--kubernetes.node-name, or OTELBEE_KUBERNETES_NODE_NAME from the downward API's spec.nodeName)")
	}
	if c.Prometheus.Listen != "" {
		if err := validateListen(c.Prometheus.Listen); err != nil {
			return usageErrorf("invalid prometheus.listen %s: %v (want host:port, or empty to turn it off)", quote(c.Prometheus.Listen), err)
		}
	}
	// The OTLP package also checks OTEL_EXPORTER_OTLP_*PROTOCOL and endpoints.
	if err := c.OTLP.exporterConfig().Validate(); err != nil {
		return &UsageError{Err: err}
	}
	if _, err := sampling.Parse(c.OTLP.TracesSampler, c.OTLP.TracesSamplerArg); err != nil {
		return &UsageError{Err: err}
	}
	// ParseFloat accepts NaN and ±Inf, which compare false against the
	// bounds (NaN would sample everything).
	if r, err := strconv.ParseFloat(strings.TrimSpace(c.OTLP.TracesSamplerArg), 64); err == nil && (math.IsNaN(r) || math.IsInf(r, 0)) {
		return usageErrorf("invalid OTEL_TRACES_SAMPLER_ARG %s: want a ratio from 0 to 1", quote(c.OTLP.TracesSamplerArg))
	}
	if _, err := hook.ParseMode(c.AttachMode); err != nil {
		return &UsageError{Err: err}
	}
	if _, err := identity.ParseResourceAttributes(c.ResourceAttributes); err != nil {
		return usageErrorf("invalid resource.attributes: %v (want key=value,... with values percent-encoded, as OTEL_RESOURCE_ATTRIBUTES)", err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return usageErrorf("unknown log.level %s (valid: debug, info, warn, error)", quote(c.LogLevel))
	}
	if c.ShutdownTimeout <= 0 {
		return usageErrorf("shutdown-timeout must be positive, got %s", c.ShutdownTimeout)
	}
	if _, err := identity.ParseInstanceMode(c.Process.Instance); err != nil {
		return usageErrorf("%v", err)
	}
	if c.Process.Retention < time.Second {
		return usageErrorf("process.retention must be at least 1s, got %s", c.Process.Retention)
	}
	if c.TCP.MaxPeersPerProcess > maxPeersPerProcess {
		return usageErrorf("tcp.max_peers_per_process must be at most %d, got %d", maxPeersPerProcess, c.TCP.MaxPeersPerProcess)
	}
	if err := c.Series.Validate(); err != nil {
		return usageErrorf("%w", err)
	}
	if err := c.TCP.Validate(); err != nil {
		return &UsageError{Err: err}
	}
	if err := c.DNS.Validate(); err != nil {
		return &UsageError{Err: err}
	}
	if err := c.HTTP.Validate(); err != nil {
		return &UsageError{Err: err}
	}
	if err := c.TLS.Validate(); err != nil {
		return &UsageError{Err: err}
	}
	return nil
}

func validateListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("host %s is not an IP address", quote(host))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %s is not a number from 0 to 65535", quote(port))
	}
	return nil
}

// LogLevel maps a validated log.level to slog's.
func LogLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

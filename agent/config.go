package agent

import (
	"bytes"
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
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/otelbee/otelbee/collectors/dns"
	"github.com/otelbee/otelbee/collectors/hook"
	httpc "github.com/otelbee/otelbee/collectors/http"
	"github.com/otelbee/otelbee/collectors/sampling"
	"github.com/otelbee/otelbee/collectors/tcp"
	"github.com/otelbee/otelbee/exporters/otlp"
	"github.com/otelbee/otelbee/k8smeta"
	"github.com/otelbee/otelbee/process/identity"
)

// Config is the agent's whole configuration. Precedence, highest first:
// command-line flags, environment (OTELBEE_* and the standard OTEL_*), the
// YAML file named by --config, defaults.
type Config struct {
	Collectors []string         `yaml:"collectors"`
	Prometheus PrometheusConfig `yaml:"prometheus"`
	OTLP       OTLPConfig       `yaml:"otlp"`
	// AttachMode is tried first on every hook that declares it: auto,
	// tp_btf, fentry, kprobe, tracepoint. For troubleshooting.
	AttachMode string `yaml:"attach_mode"`
	// AttachModeStrict removes the fallback for AttachMode.
	AttachModeStrict bool          `yaml:"attach_mode_strict"`
	LogLevel         string        `yaml:"log_level"`
	BPFStats         bool          `yaml:"bpf_stats"`
	ShutdownTimeout  time.Duration `yaml:"shutdown_timeout"`
	// RunWithoutCollectors keeps the agent running (self-telemetry only)
	// when no collector can be loaded; otherwise run exits with status 1.
	RunWithoutCollectors bool `yaml:"run_without_collectors"`
	// Export is where telemetry goes, from the standard OTEL_SDK_DISABLED,
	// OTEL_METRICS_EXPORTER and OTEL_TRACES_EXPORTER (see resolveExport).
	Export ExportConfig `yaml:"-"`
	TCP    tcp.Config   `yaml:"tcp"`
	DNS    dns.Config   `yaml:"dns"`
	HTTP   httpc.Config `yaml:"http"`
	// Process is the process identity cache.
	Process ProcessConfig `yaml:"process"`
	// StateDir keeps what the agent learned that a restart could not learn
	// again (process identities read at exec); empty keeps nothing.
	StateDir string `yaml:"state_dir"`

	// ResourceAttributes go on the resource of every observed service, in
	// the OTEL_RESOURCE_ATTRIBUTES format (key=value,...); a program's own
	// OTEL_RESOURCE_ATTRIBUTES win over them. The agent's own
	// OTEL_RESOURCE_ATTRIBUTES describe the agent only.
	ResourceAttributes string `yaml:"resource_attributes"`
	// Kubernetes adds pod metadata to every identity (package k8smeta).
	Kubernetes k8smeta.Config `yaml:"kubernetes"`
}

// ProcessConfig is the process identity cache.
type ProcessConfig struct {
	// Retention is how long the identity of an exited process is kept,
	// for the series it left behind.
	Retention time.Duration `yaml:"retention"`
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
	Listen string `yaml:"listen"`
	// ResourceLabels are resource attributes copied as labels onto every
	// series besides job and instance (e.g. service.name → service_name);
	// "*" copies all. Default none: they are on target_info.
	ResourceLabels []string `yaml:"resource_labels"`
}

// OTLPConfig selects the OTLP exporter. The rest of its settings (headers,
// timeout, TLS, interval) come from the standard OTEL_* variables.
type OTLPConfig struct {
	Endpoint string `yaml:"endpoint"`
	Protocol string `yaml:"protocol"`
	// TracesSampler and TracesSamplerArg are OTEL_TRACES_SAMPLER and
	// OTEL_TRACES_SAMPLER_ARG: the agent builds the sampler itself, so that
	// collectors can take the decision before they start a span.
	TracesSampler    string `yaml:"traces_sampler"`
	TracesSamplerArg string `yaml:"traces_sampler_arg"`
	// SpanQueue is OTEL_BSP_*, bounded (see bspVars).
	SpanQueue otlp.QueueSettings `yaml:"-"`
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
		DNS:             dns.DefaultConfig(),
		HTTP:            httpc.DefaultConfig(),
		Process:         ProcessConfig{Retention: 5 * time.Minute},
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

// envVars maps OTELBEE_* variables to flag names.
var envVars = map[string]string{
	"OTELBEE_CONFIG":                 "config",
	"OTELBEE_COLLECTORS":             "collectors",
	"OTELBEE_PROMETHEUS_LISTEN":      "prometheus.listen",
	"OTELBEE_OTLP_ENDPOINT":          "otlp.endpoint",
	"OTEL_TRACES_SAMPLER":            "otlp.traces-sampler",
	"OTEL_TRACES_SAMPLER_ARG":        "otlp.traces-sampler-arg",
	"OTELBEE_ATTACH_MODE":            "attach-mode",
	"OTELBEE_ATTACH_MODE_STRICT":     "attach-mode.strict",
	"OTELBEE_LOG_LEVEL":              "log.level",
	"OTELBEE_BPF_STATS":              "bpf.stats",
	"OTELBEE_RUN_WITHOUT_COLLECTORS": "run-without-collectors",
	"OTELBEE_DNS_PORTS":              "dns.ports",
	"OTELBEE_DNS_TIMEOUT":            "dns.timeout",
	"OTELBEE_DNS_SPANS":              "dns.spans",
	"OTELBEE_HTTP_CAPTURE_BYTES":     "http.capture-bytes",
	"OTELBEE_HTTP_ROUTES":            "http.routes",
	"OTELBEE_PROCESS_RETENTION":      "process.retention",
	"OTELBEE_STATE_DIR":              "state-dir",
	"OTELBEE_HTTP_BODY_SIZES":        "http.body-sizes",
	"OTELBEE_HTTP_ROUTE_HEURISTIC":   "http.route-heuristic",
	"OTELBEE_HTTP_CLIENT_URL_SCHEME": "http.client-url-scheme",
	"OTELBEE_HTTP_URL_QUERY":         "http.url-query",

	// The observed services' resource, not the agent's (OTEL_RESOURCE_ATTRIBUTES).
	"OTELBEE_RESOURCE_ATTRIBUTES": "resource.attributes",

	"OTELBEE_PROMETHEUS_RESOURCE_LABELS": "prometheus.resource-labels",

	"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "http.known-methods",
}

// LoadConfig builds the configuration from args (without the program name
// and subcommand) and the environment.
func LoadConfig(args []string, getenv func(string) (string, bool), stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("otelbee", flag.ContinueOnError)
	// A mistake is one line (main prints the error); -h prints the flags.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	// Values are read back through Visit: only flags the user set override.
	fs.String("config", "", "YAML configuration file")
	fs.String("collectors", "", "comma-separated collectors to enable, or all (valid: "+strings.Join(CollectorNames(), ", ")+")")
	fs.String("prometheus.listen", "", "host:port of the Prometheus /metrics endpoint; empty string turns it off (default 127.0.0.1:9464)")
	fs.String("prometheus.resource-labels", "", "comma-separated resource attributes copied as labels onto every Prometheus series, e.g. service.name (as service_name); * for all (default none: join target_info on job, instance)")
	fs.String("otlp.endpoint", "", "OTLP endpoint (default from OTEL_EXPORTER_OTLP_ENDPOINT; unset: no OTLP export)")
	fs.String("otlp.protocol", "", "OTLP protocol: grpc or http/protobuf (default from OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)")
	fs.String("otlp.traces-sampler", "", "trace sampler as in OTEL_TRACES_SAMPLER: parentbased_always_on (default), parentbased_traceidratio, traceidratio, always_on, always_off, parentbased_always_off")
	fs.String("otlp.traces-sampler-arg", "", "the sampler's argument as in OTEL_TRACES_SAMPLER_ARG: the ratio for *traceidratio (default 1)")
	fs.String("attach-mode", "", "try this attach mode first on every hook that declares it, then the rest of the chain: auto, tp_btf, fentry, kprobe, tracepoint")
	fs.Bool("attach-mode.strict", false, "with --attach-mode: no fallback; a hook whose forced mode fails stays detached")
	fs.String("log.level", "", "debug, info, warn or error")
	fs.String("resource.attributes", "", "resource attributes of every observed service, as in OTEL_RESOURCE_ATTRIBUTES (key=value,...); a program's own OTEL_RESOURCE_ATTRIBUTES win")
	fs.Bool("bpf.stats", false, "enable kernel BPF run-time statistics and export them per program")
	fs.Bool("run-without-collectors", false, "keep running, serving self-telemetry, when no collector can be loaded (default: exit with status 1)")
	fs.Duration("shutdown-timeout", 0, "how long the whole shutdown may take: final export, then detaching programs (default 5s)")
	fs.Uint("tcp.max-connections", 0, "connections the TCP collector tracks at once")
	fs.Uint("tcp.max-peers", 0, "distinct peer addresses per process in TCP series; more fold into network.peer.address=_OTHER (default 100)")
	fs.Uint("tcp.max-series", 0, "distinct TCP series (process, peer, port, direction) kept in the kernel")
	fs.String("dns.ports", "", "comma-separated DNS server ports the DNS collector watches over UDP and TCP (default 53)")
	fs.Duration("dns.timeout", 0, "how long a DNS query waits for its answer before it counts as a timeout (default 5s)")
	fs.Uint("dns.max-names", 0, "distinct dns.question.name values kept per service; the rest fold into _OTHER (default 100)")
	fs.Uint("dns.max-pending", 0, "DNS queries waiting for an answer tracked at once (default 16384)")
	fs.Bool("dns.spans", false, "emit one client span per DNS lookup (needs an OTLP endpoint)")
	fs.Uint("http.capture-bytes", 0, "bytes of each read/write the HTTP collector copies from the kernel (64-4096, default 1024)")
	fs.String("http.routes", "", "comma-separated http.route templates tried before the heuristic, e.g. /users/{id},/static/*")
	fs.Bool("http.route-heuristic", false, "put the path-folding heuristic's templates into http.route, for backends that group server requests only by http.route (default: http.route only from --http.routes, the heuristic's template as url.template)")
	fs.Bool("http.body-sizes", false, "export the opt-in http.{server,client}.{request,response}.body.size histograms and body sizes on spans")
	fs.Bool("http.client-url-scheme", false, "put the opt-in url.scheme on HTTP client metrics and spans (the server side always has it)")
	fs.Bool("http.url-query", false, "put the request's query on HTTP spans (server url.query, client url.full), every parameter value replaced by REDACTED")
	fs.String("http.known-methods", "", "comma-separated request methods reported as themselves, as OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS (case-sensitive; others are _OTHER with http.request.method_original on the span; default: the RFC 9110 methods and PATCH)")
	fs.String("http.include-executables", "", "comma-separated executable names the HTTP collector observes (default: all)")
	fs.String("http.exclude-executables", "", "comma-separated executable names the HTTP collector ignores")
	fs.Bool("kubernetes", false, "add Kubernetes pod metadata (k8s.*, service.* from pod annotations) to every series and span")
	fs.String("kubernetes.node-name", "", "the node whose pods are watched (the chart sets it from the downward API)")
	fs.String("kubernetes.kubeconfig", "", "kubeconfig file for the API server (default: the in-cluster service account)")
	fs.Bool("kubernetes.app-labels", false, "also take service.name and service.version from app.kubernetes.io/* pod labels")
	fs.Duration("process.retention", 0, "how long the identity of an exited process is kept for the series it left (default 5m, at least 1s)")
	fs.String("state-dir", "", "directory for what must survive a restart (identities learned at exec); empty string keeps nothing (default /var/lib/otelbee)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintf(stderr, "usage: otelbee [run|doctor|version] [flags]\n")
			fs.PrintDefaults()
			return Config{}, err
		}
		return Config{}, &UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return Config{}, usageErrorf("unexpected argument %s (commands: run, doctor, version)", quote(fs.Arg(0)))
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
	// Environment fills in what flags did not set.
	for env, name := range envVars {
		if v, ok := getenv(env); ok {
			if _, done := set[name]; !done {
				set[name] = v
			}
		}
	}
	cfg := DefaultConfig()
	var err error
	if cfg.OTLP.SpanQueue, err = bspSettings(getenv); err != nil {
		return Config{}, err
	}
	if err := checkSDKDurations(getenv); err != nil {
		return Config{}, err
	}
	if path, ok := set["config"]; ok && path != "" {
		if err := readConfigFile(path, &cfg); err != nil {
			return Config{}, err
		}
	}
	for name, v := range set {
		var err error
		switch name {
		case "collectors":
			cfg.Collectors = splitList(v)
		case "prometheus.resource-labels":
			cfg.Prometheus.ResourceLabels = splitList(v)
		case "prometheus.listen":
			cfg.Prometheus.Listen = v
		case "otlp.endpoint":
			cfg.OTLP.Endpoint = v
		case "otlp.protocol":
			cfg.OTLP.Protocol = v
		case "otlp.traces-sampler":
			cfg.OTLP.TracesSampler = v
		case "otlp.traces-sampler-arg":
			cfg.OTLP.TracesSamplerArg = v
		case "attach-mode":
			cfg.AttachMode = v
		case "attach-mode.strict":
			cfg.AttachModeStrict, err = strconv.ParseBool(v)
		case "resource.attributes":
			cfg.ResourceAttributes = v
		case "log.level":
			cfg.LogLevel = v
		case "bpf.stats":
			cfg.BPFStats, err = strconv.ParseBool(v)
		case "run-without-collectors":
			cfg.RunWithoutCollectors, err = strconv.ParseBool(v)
		case "shutdown-timeout":
			cfg.ShutdownTimeout, err = time.ParseDuration(v)
		case "tcp.max-connections":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			cfg.TCP.MaxConnections = uint32(n)
		case "http.capture-bytes":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			cfg.HTTP.CaptureBytes = uint32(n)
		case "http.routes":
			cfg.HTTP.Routes = splitList(v)
		case "http.known-methods":
			cfg.HTTP.KnownMethods = splitList(v)
		case "http.route-heuristic":
			cfg.HTTP.RouteHeuristic, err = strconv.ParseBool(v)
		case "http.body-sizes":
			cfg.HTTP.BodySizes, err = strconv.ParseBool(v)
		case "http.client-url-scheme":
			cfg.HTTP.ClientURLScheme, err = strconv.ParseBool(v)
		case "http.url-query":
			cfg.HTTP.URLQuery, err = strconv.ParseBool(v)
		case "http.include-executables":
			cfg.HTTP.Include.Executables = splitList(v)
		case "http.exclude-executables":
			cfg.HTTP.Exclude.Executables = splitList(v)
		case "dns.ports":
			cfg.DNS.Ports, err = parsePorts(v)
		case "dns.timeout":
			cfg.DNS.Timeout, err = time.ParseDuration(v)
		case "dns.max-names":
			cfg.DNS.MaxNamesPerService, err = strconv.Atoi(v)
		case "dns.max-pending":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			cfg.DNS.MaxPending = uint32(n)
		case "dns.spans":
			cfg.DNS.Spans, err = strconv.ParseBool(v)
		case "tcp.max-peers":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 31)
			cfg.TCP.MaxPeersPerProcess = int(n)
		case "kubernetes":
			cfg.Kubernetes.Enabled, err = strconv.ParseBool(v)
		case "kubernetes.node-name":
			cfg.Kubernetes.NodeName = v
		case "kubernetes.kubeconfig":
			cfg.Kubernetes.Kubeconfig = v
		case "kubernetes.app-labels":
			cfg.Kubernetes.AppLabels, err = strconv.ParseBool(v)
		case "state-dir":
			cfg.StateDir = v
		case "process.retention":
			cfg.Process.Retention, err = time.ParseDuration(v)
		case "tcp.max-series":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			cfg.TCP.MaxSeries = uint32(n)
		}
		if err != nil {
			return Config{}, usageErrorf("invalid value %s for %s: %v", quote(v), name, err)
		}
	}
	if err := resolveExport(&cfg, set, getenv); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
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
func resolveExport(cfg *Config, set map[string]string, getenv func(string) (string, bool)) error {
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
		if _, own := set["log.level"]; !own {
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
	_, ownListen := set["prometheus.listen"]
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

func readConfigFile(path string, cfg *Config) error {
	b, err := readBoundedFile(path, maxConfigFile)
	if err != nil {
		return usageErrorf("reading config file %s: %v", quote(path), err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return usageErrorf("parsing config file %s: %s", quote(path), oneLine(err))
	}
	// A second document would be ignored by Decode: refuse it rather than
	// run with half the file.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err == nil {
			return usageErrorf("parsing config file %s: it holds more than one YAML document (a second \"---\"); put everything in one", quote(path))
		}
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

// maxQuoted bounds a value quoted in an error message; maxMessage the
// whole message.
const (
	maxQuoted  = 128
	maxMessage = 1024
)

// quote renders a user's value for an error message: Go-quoted (control
// characters escaped, so one value is one line) and cut to a prefix.
func quote(v string) string {
	if len(v) <= maxQuoted {
		return strconv.Quote(v)
	}
	return strconv.Quote(truncate(v, maxQuoted)) + fmt.Sprintf(" (%d bytes)", len(v))
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

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

// parsePorts parses a comma-separated list of ports (1-65535).
func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, p := range splitList(s) {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%s is not a port from 1 to 65535", quote(p))
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

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
	if c.Process.Retention < time.Second {
		return usageErrorf("process.retention must be at least 1s, got %s", c.Process.Retention)
	}
	if c.TCP.MaxPeersPerProcess > maxPeersPerProcess {
		return usageErrorf("tcp.max_peers_per_process must be at most %d, got %d", maxPeersPerProcess, c.TCP.MaxPeersPerProcess)
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

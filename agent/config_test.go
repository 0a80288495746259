package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "otelbee.yaml")
	os.WriteFile(file, []byte("collectors: [tcp]\nprometheus:\n  listen: 127.0.0.1:1111\nlog_level: warn\nshutdown_timeout: 9s\ntcp:\n  max_series: 100\n"), 0o600)

	cfg, err := LoadConfig([]string{"--config", file}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Prometheus.Listen != "127.0.0.1:1111" || cfg.LogLevel != "warn" || cfg.TCP.MaxSeries != 100 ||
		cfg.ShutdownTimeout != 9*time.Second || cfg.TCP.MaxConnections != 65536 {
		t.Fatalf("file not applied over defaults: %+v", cfg)
	}
	cfg, err = LoadConfig([]string{"--config", file}, env(map[string]string{"OTELBEE_PROMETHEUS_LISTEN": "127.0.0.1:2222"}), io.Discard)
	if err != nil || cfg.Prometheus.Listen != "127.0.0.1:2222" || cfg.LogLevel != "warn" {
		t.Fatalf("env must override the file: %+v, %v", cfg, err)
	}
	cfg, err = LoadConfig([]string{"--prometheus.listen", "127.0.0.1:3333"},
		env(map[string]string{"OTELBEE_CONFIG": file, "OTELBEE_PROMETHEUS_LISTEN": "127.0.0.1:2222"}), io.Discard)
	if err != nil || cfg.Prometheus.Listen != "127.0.0.1:3333" || cfg.TCP.MaxSeries != 100 {
		t.Fatalf("flags must override env and file: %+v, %v", cfg, err)
	}
	cfg, err = LoadConfig([]string{"--prometheus.listen="}, env(nil), io.Discard)
	if err != nil || cfg.Prometheus.Listen != "" {
		t.Fatalf("empty --prometheus.listen turns the endpoint off: %+v, %v", cfg, err)
	}
	cfg, err = LoadConfig([]string{"--collectors=all"}, env(nil), io.Discard)
	if err != nil || strings.Join(cfg.Collectors, ",") != strings.Join(CollectorNames(), ",") {
		t.Fatalf("all: %v, %v", cfg.Collectors, err)
	}
}

func TestConfigHTTP(t *testing.T) {
	cfg, err := LoadConfig([]string{"--collectors=http", "--http.routes=/users/{id},/static/*", "--http.exclude-executables=sshd"},
		env(map[string]string{"OTELBEE_HTTP_CAPTURE_BYTES": "512"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.CaptureBytes != 512 || len(cfg.HTTP.Routes) != 2 || cfg.HTTP.Exclude.Executables[0] != "sshd" || cfg.HTTP.MaxRoutes != 200 {
		t.Fatalf("http config: %+v", cfg.HTTP)
	}
}

func TestConfigDNS(t *testing.T) {
	cfg, err := LoadConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.DNS.Ports) != 1 || cfg.DNS.Ports[0] != 53 || cfg.DNS.Timeout != 5*time.Second ||
		cfg.DNS.MaxNamesPerService != 100 || cfg.DNS.Spans {
		t.Fatalf("dns defaults: %+v", cfg.DNS)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "dns.yaml")
	os.WriteFile(file, []byte("dns:\n  ports: [53, 5353]\n  timeout: 2s\n  max_names_per_service: 7\n"), 0o600)
	cfg, err = LoadConfig([]string{"--config", file, "--collectors=dns", "--dns.timeout=1500ms"},
		env(map[string]string{"OTELBEE_DNS_SPANS": "true"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.DNS.Ports) != 2 || cfg.DNS.Ports[1] != 5353 || cfg.DNS.Timeout != 1500*time.Millisecond ||
		cfg.DNS.MaxNamesPerService != 7 || !cfg.DNS.Spans {
		t.Fatalf("dns file, flag and env: %+v", cfg.DNS)
	}
	cfg, err = LoadConfig([]string{"--dns.ports=53,5300", "--dns.max-names=3"}, env(map[string]string{"OTELBEE_DNS_PORTS": "9"}), io.Discard)
	if err != nil || len(cfg.DNS.Ports) != 2 || cfg.DNS.Ports[1] != 5300 || cfg.DNS.MaxNamesPerService != 3 {
		t.Fatalf("dns flags over env: %+v, %v", cfg.DNS, err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("prometheus: [this is not a map\n"), 0o600)
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("colectors: [tcp]\n"), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	large := filepath.Join(dir, "large.yaml")
	os.WriteFile(large, []byte("# "+strings.Repeat("x", 1<<20)+"\n"), 0o600)
	twoDocs := filepath.Join(dir, "two.yaml")
	os.WriteFile(twoDocs, []byte("collectors: [tcp]\n---\ncollectors: [http]\n"), 0o600)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown collector", []string{"--collectors=tcp,bogus"}, nil, `unknown collector "bogus" (valid: ` + strings.Join(CollectorNames(), ", ") + ", all)"},
		{"no collector", []string{"--collectors="}, nil, "no collectors enabled"},
		{"bad listen", []string{"--prometheus.listen=nohostport"}, nil, `invalid prometheus.listen "nohostport"`},
		{"bad port", []string{"--prometheus.listen=127.0.0.1:99999"}, nil, "not a number from 0 to 65535"},
		{"bad host", []string{"--prometheus.listen=not_a_host:80"}, nil, "is not an IP address"},
		{"unknown flag", []string{"--no-such-flag"}, nil, "flag provided but not defined: -no-such-flag"},
		{"stray argument", []string{"extra"}, nil, `unexpected argument "extra"`},
		{"bad protocol", []string{"--otlp.protocol=udp"}, nil, "udp"},
		{"bad env protocol", nil, map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "thrift"},
		{"bad env sampler", nil, map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, `unknown OTEL_TRACES_SAMPLER "jaeger_remote"`},
		{"bad sampler ratio", nil, map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, `invalid OTEL_TRACES_SAMPLER_ARG "2"`},
		{"bad attach mode", []string{"--attach-mode=uprobez"}, nil, `unknown attach mode "uprobez" (valid: auto,`},
		{"bad log level", []string{"--log.level=loud"}, nil, `unknown log.level "loud"`},
		{"bad env bool", nil, map[string]string{"OTELBEE_BPF_STATS": "perhaps"}, `invalid value "perhaps" for bpf.stats`},
		{"malformed file", []string{"--config", bad}, nil, `parsing config file "` + bad + `"`},
		{"unknown key in file", []string{"--config", unknown}, nil, "field colectors not found"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, nil, "reading config file"},
		{"tcp bounds", []string{"--tcp.max-connections=1"}, nil, "tcp.max_connections must be between"},
		{"dns bad port", []string{"--dns.ports=53,70000"}, nil, `invalid value "53,70000" for dns.ports: "70000" is not a port from 1 to 65535`},
		{"dns zero port", []string{"--dns.ports=0"}, nil, `"0" is not a port`},
		{"dns timeout bounds", []string{"--dns.timeout=1ms"}, nil, "dns.timeout must be between 10ms and 10m"},
		{"dns names bounds", []string{"--dns.max-names=0"}, nil, "dns.max_names_per_service must be between 1 and 100000"},
		{"dns env timeout", nil, map[string]string{"OTELBEE_DNS_TIMEOUT": "soon"}, `invalid value "soon" for dns.timeout`},
		{"http capture bounds", []string{"--http.capture-bytes=8"}, nil, "l7.capture_bytes must be between 64 and 4096"},
		{"http env capture", nil, map[string]string{"OTELBEE_HTTP_CAPTURE_BYTES": "100000"}, "l7.capture_bytes must be between"},
		{"http bad route", []string{"--http.routes=users/{id}"}, nil, `route pattern "users/{id}" must start with /`},
		// Settings that used to hang, crash or lie (issue 17, item 7).
		{"config is a device", []string{"--config=/dev/zero"}, nil, "not a regular file (Dc"},
		{"config is urandom", []string{"--config=/dev/urandom"}, nil, "not a regular file"},
		{"config is a FIFO", []string{"--config", fifo}, nil, "not a regular file (p"},
		{"config too large", []string{"--config", large}, nil, "is larger than the 1048576 allowed"},
		{"second YAML document", []string{"--config", twoDocs}, nil, "more than one YAML document"},
		{"huge value quoted as a prefix", []string{"--log.level=" + strings.Repeat("v", 100<<20)}, nil, `"` + strings.Repeat("v", 128) + `…" (104857600 bytes)`},
		{"bsp queue size bounded", nil, map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "2000000000"}, `invalid OTEL_BSP_MAX_QUEUE_SIZE="2000000000": want an integer from 1 to 1048576`},
		{"bsp batch bounded", nil, map[string]string{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1000000"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"},
		{"bsp batch over queue", nil, map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "200"}, "must not exceed OTEL_BSP_MAX_QUEUE_SIZE (100)"},
		{"bsp delay not a number", nil, map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "5s"}, `invalid OTEL_BSP_SCHEDULE_DELAY="5s"`},
		{"bsp timeout negative", nil, map[string]string{"OTEL_BSP_EXPORT_TIMEOUT": "-1"}, "OTEL_BSP_EXPORT_TIMEOUT"},
		{"metric interval not a number", nil, map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "10s"}, `invalid OTEL_METRIC_EXPORT_INTERVAL="10s": want milliseconds from 1 to 86400000`},
		{"otlp timeout zero", nil, map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "0"}, "invalid OTEL_EXPORTER_OTLP_TIMEOUT"},
		{"traces timeout huge", nil, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "99999999999"}, "invalid OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"},
		{"tcp peers bounded", []string{"--tcp.max-peers=2000000000"}, nil, "tcp.max_peers_per_process must be at most 100000"},
		{"tcp series bounded", []string{"--tcp.max-series=2000000000"}, nil, "tcp.max_series must be between"},
		{"dns pending bounded", []string{"--dns.max-pending=4000000000"}, nil, "dns.max_pending must be between"},
		{"dns names bounded", []string{"--dns.max-names=2000000000"}, nil, "dns.max_names_per_service must be between"},
		{"process instance choices", []string{"--process.instance=host"}, nil, "process.instance must be service or pid"},
		{"endpoint env unparsable", nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"}, `OTEL_EXPORTER_OTLP_ENDPOINT "http://[::1": missing ']' in host`},
		{"traces endpoint env bad scheme", nil, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://c:4318"}, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT "ftp://c:4318": scheme "ftp"`},
		{"metrics endpoint env bad port", nil, map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:99999"}, "port \"99999\""},
		{"endpoint flag unparsable", []string{"--otlp.endpoint=http://[::1"}, nil, `otlp endpoint "http://[::1"`},
		{"sampler ratio NaN", nil, map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "NaN"}, `invalid OTEL_TRACES_SAMPLER_ARG "NaN"`},
		{"sampler ratio Inf", nil, map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "+Inf"}, `invalid OTEL_TRACES_SAMPLER_ARG "+Inf"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v) // the OTLP exporters read OTEL_* themselves
			}
			_, err := LoadConfig(tt.args, env(tt.env), io.Discard)
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a UsageError", truncate(fmt.Sprint(err), 300))
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Fatalf("got %q, want it to contain %q", truncate(msg, 300), truncate(tt.want, 300))
			}
			if len(msg) > maxMessage+8 || strings.Contains(msg, "\n") {
				t.Fatalf("message is %d bytes / not one line: %q", len(msg), truncate(msg, 300))
			}
		})
	}
}

// TestExampleConfig keeps docs/config.example.yaml loadable: it lists every key.
func TestExampleConfig(t *testing.T) {
	if _, err := LoadConfig([]string{"--config", "../docs/config.example.yaml"}, env(nil), io.Discard); err != nil {
		t.Fatalf("docs/config.example.yaml: %v", err)
	}
}

// TestConfigStandardEnv: the standard variables that choose exporters and
// the log level are honoured or refused, never ignored (issue 10, item 10).
func TestConfigStandardEnv(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		listen string
		export ExportConfig
		level  string
	}{
		{name: "defaults", listen: "127.0.0.1:9464", level: "info"},
		{name: "endpoint: otlp for both", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			listen: "127.0.0.1:9464", export: ExportConfig{OTLPMetrics: true, OTLPTraces: true}, level: "info"},
		{name: "sdk disabled", env: map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			export: ExportConfig{Disabled: true}, level: "info"},
		{name: "sdk not disabled", env: map[string]string{"OTEL_SDK_DISABLED": "false"}, listen: "127.0.0.1:9464", level: "info"},
		{name: "traces none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			listen: "127.0.0.1:9464", export: ExportConfig{OTLPMetrics: true}, level: "info"},
		{name: "traces otlp without endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"},
			listen: "127.0.0.1:9464", export: ExportConfig{OTLPTraces: true}, level: "info"},
		{name: "traces console", env: map[string]string{"OTEL_TRACES_EXPORTER": "console,otlp"},
			listen: "127.0.0.1:9464", export: ExportConfig{OTLPTraces: true, ConsoleTraces: true}, level: "info"},
		{name: "metrics otlp only: no /metrics", env: map[string]string{"OTEL_METRICS_EXPORTER": "otlp"},
			export: ExportConfig{OTLPMetrics: true}, level: "info"},
		{name: "metrics otlp, own listen kept", args: []string{"--prometheus.listen=127.0.0.1:1234"}, env: map[string]string{"OTEL_METRICS_EXPORTER": "otlp"},
			listen: "127.0.0.1:1234", export: ExportConfig{OTLPMetrics: true}, level: "info"},
		{name: "metrics none", env: map[string]string{"OTEL_METRICS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			export: ExportConfig{OTLPTraces: true}, level: "info"},
		{name: "metrics prometheus host and port", env: map[string]string{"OTEL_METRICS_EXPORTER": "prometheus,console", "OTEL_EXPORTER_PROMETHEUS_HOST": "::1", "OTEL_EXPORTER_PROMETHEUS_PORT": "9999"},
			listen: "[::1]:9999", export: ExportConfig{ConsoleMetrics: true}, level: "info"},
		{name: "prometheus port alone", env: map[string]string{"OTEL_EXPORTER_PROMETHEUS_PORT": "9998"}, listen: "localhost:9998", level: "info"},
		{name: "own listen over prometheus port", env: map[string]string{"OTELBEE_PROMETHEUS_LISTEN": "127.0.0.1:7", "OTEL_EXPORTER_PROMETHEUS_PORT": "9998"}, listen: "127.0.0.1:7", level: "info"},
		{name: "log level", env: map[string]string{"OTEL_LOG_LEVEL": "DEBUG"}, listen: "127.0.0.1:9464", level: "debug"},
		{name: "own log level wins", env: map[string]string{"OTEL_LOG_LEVEL": "debug", "OTELBEE_LOG_LEVEL": "error"}, listen: "127.0.0.1:9464", level: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v) // the OTLP config reads the endpoint variables itself
			}
			cfg, err := LoadConfig(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Prometheus.Listen != tt.listen || cfg.Export != tt.export || cfg.LogLevel != tt.level {
				t.Errorf("listen %q, export %+v, log level %q; want %q, %+v, %q", cfg.Prometheus.Listen, cfg.Export, cfg.LogLevel, tt.listen, tt.export, tt.level)
			}
		})
	}
	refused := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_SDK_DISABLED": "yes"}, `invalid OTEL_SDK_DISABLED="yes": want true or false`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, `unsupported OTEL_TRACES_EXPORTER value "zipkin" (valid: otlp, console, none)`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "prometheus"}, `unsupported OTEL_TRACES_EXPORTER value "prometheus"`},
		{map[string]string{"OTEL_METRICS_EXPORTER": "none,otlp"}, "none cannot be combined"},
		{map[string]string{"OTEL_METRICS_EXPORTER": "statsd"}, `unsupported OTEL_METRICS_EXPORTER value "statsd" (valid: otlp, prometheus, console, none)`},
		{map[string]string{"OTEL_LOG_LEVEL": "trace"}, `invalid OTEL_LOG_LEVEL="trace"`},
		{map[string]string{"OTEL_EXPORTER_PROMETHEUS_PORT": "http"}, "invalid prometheus.listen"},
	}
	for _, tt := range refused {
		t.Run(tt.want, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := LoadConfig(nil, env(tt.env), io.Discard)
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a UsageError containing %q", err, tt.want)
			}
		})
	}
}

// The conventions' opt-in HTTP attributes and metrics are off by default,
// on by flag, environment or file.
func TestConfigHTTPOptIn(t *testing.T) {
	cfg, err := LoadConfig(nil, env(nil), io.Discard)
	if err != nil || cfg.HTTP.BodySizes || cfg.HTTP.ClientURLScheme {
		t.Fatalf("defaults: body sizes %v, client url.scheme %v, %v", cfg.HTTP.BodySizes, cfg.HTTP.ClientURLScheme, err)
	}
	if cfg.HTTP.RouteHeuristic {
		t.Fatal("the route heuristic fills http.route by default")
	}
	cfg, err = LoadConfig([]string{"--http.body-sizes"}, env(map[string]string{"OTELBEE_HTTP_CLIENT_URL_SCHEME": "true", "OTELBEE_HTTP_ROUTE_HEURISTIC": "1"}), io.Discard)
	if err != nil || !cfg.HTTP.BodySizes || !cfg.HTTP.ClientURLScheme || !cfg.HTTP.RouteHeuristic {
		t.Fatalf("flag and env: body sizes %v, client url.scheme %v, %v", cfg.HTTP.BodySizes, cfg.HTTP.ClientURLScheme, err)
	}
	file := filepath.Join(t.TempDir(), "http.yaml")
	os.WriteFile(file, []byte("http:\n  body_sizes: true\n  client_url_scheme: true\n"), 0o600)
	cfg, err = LoadConfig([]string{"--config", file, "--http.client-url-scheme=false"}, env(nil), io.Discard)
	if err != nil || !cfg.HTTP.BodySizes || cfg.HTTP.ClientURLScheme {
		t.Fatalf("file and flag: body sizes %v, client url.scheme %v, %v", cfg.HTTP.BodySizes, cfg.HTTP.ClientURLScheme, err)
	}
	if _, err := LoadConfig([]string{"--http.body-sizes=maybe"}, env(nil), io.Discard); err == nil {
		t.Fatal("--http.body-sizes=maybe accepted")
	}
}

package agent

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		{"malformed file", []string{"--config", bad}, nil, "parsing config file " + bad},
		{"unknown key in file", []string{"--config", unknown}, nil, "field colectors not found"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, nil, "reading config file"},
		{"tcp bounds", []string{"--tcp.max-connections=1"}, nil, "tcp.max_connections must be between"},
		{"dns bad port", []string{"--dns.ports=53,70000"}, nil, `invalid value "53,70000" for dns.ports: "70000" is not a port from 1 to 65535`},
		{"dns zero port", []string{"--dns.ports=0"}, nil, `"0" is not a port`},
		{"dns timeout bounds", []string{"--dns.timeout=1ms"}, nil, "dns.timeout must be between 10ms and 10m"},
		{"dns names bounds", []string{"--dns.max-names=0"}, nil, "dns.max_names_per_service must be between 1 and 100000"},
		{"dns env timeout", nil, map[string]string{"OTELBEE_DNS_TIMEOUT": "soon"}, `invalid value "soon" for dns.timeout`},
		{"http capture bounds", []string{"--http.capture-bytes=8"}, nil, "http.capture_bytes must be between 64 and 4096"},
		{"http env capture", nil, map[string]string{"OTELBEE_HTTP_CAPTURE_BYTES": "100000"}, "http.capture_bytes must be between"},
		{"http bad route", []string{"--http.routes=users/{id}"}, nil, `route pattern "users/{id}" must start with /`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v) // the OTLP exporters read OTEL_* themselves
			}
			_, err := LoadConfig(tt.args, env(tt.env), io.Discard)
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a UsageError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to contain %q", err, tt.want)
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

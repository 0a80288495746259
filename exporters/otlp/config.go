// Package otlp builds the agent's OTLP metric and trace exporters.
//
// The agent's single-resource telemetry leaves as one resource per
// observed service (see package perservice), every service in one request
// per export, encoded by this module (metricenc.go; spans come encoded from
// package spans) and sent by its own sender (sender.go) over OTLP/gRPC or
// OTLP/HTTP with the standard OTEL_EXPORTER_OTLP_* settings (endpoint,
// headers, timeout, compression, TLS), the specification's retries and
// partial success; every failed export is counted for the agent's
// self-telemetry. The OpenTelemetry SDK's OTLP exporters remain for what
// they read from the environment (_METRICS_TEMPORALITY_PREFERENCE and
// _METRICS_DEFAULT_HISTOGRAM_AGGREGATION, applied to the metrics that do not
// come from SDK instruments too: temporality.go) and for the SDK's spans
// when the console takes them too. This package adds the protocol choice
// and the agent's endpoint flag.
package otlp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Protocols accepted in Config.Protocol and OTEL_EXPORTER_OTLP_*PROTOCOL.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// defaultProtocol is the OpenTelemetry specification's default for
// OTEL_EXPORTER_OTLP_PROTOCOL.
const defaultProtocol = ProtocolHTTPProtobuf

// Config selects where and how OTLP data is sent. The zero value takes
// everything from the standard OTEL_EXPORTER_OTLP_* environment variables.
type Config struct {
	// Endpoint overrides the environment (it comes from a command-line
	// flag). It is a base URL like OTEL_EXPORTER_OTLP_ENDPOINT:
	// "http://collector:4318" or "https://collector:4317"; for HTTP the
	// signal path (/v1/metrics, /v1/traces) is appended unless the path
	// already ends with it. A bare "host:port" means plaintext (http://)
	// unless OTEL_EXPORTER_OTLP_INSECURE (or the signal-specific variant)
	// is "false". Empty: OTEL_EXPORTER_OTLP_(METRICS_|TRACES_)ENDPOINT.
	Endpoint string
	// Protocol is "grpc" or "http/protobuf". Empty:
	// OTEL_EXPORTER_OTLP_(METRICS_|TRACES_)PROTOCOL, else "http/protobuf".
	Protocol string
	// Logger receives the exporters' failure reports (at most one line per
	// minute while export keeps failing). Nil discards them.
	Logger *slog.Logger
}

// signal names one OTLP signal and its environment variables.
type signal struct {
	name      string // "metrics" / "traces": the HTTP path suffix
	envPrefix string // "OTEL_EXPORTER_OTLP_METRICS_"
}

var (
	metricsSignal = signal{name: "metrics", envPrefix: "OTEL_EXPORTER_OTLP_METRICS_"}
	tracesSignal  = signal{name: "traces", envPrefix: "OTEL_EXPORTER_OTLP_TRACES_"}
)

// env returns the signal-specific variable if set, else the generic one,
// and the name of the variable it came from (for error messages).
func (s signal) env(suffix string) (value, name string) {
	if v := strings.TrimSpace(os.Getenv(s.envPrefix + suffix)); v != "" {
		return v, s.envPrefix + suffix
	}
	name = "OTEL_EXPORTER_OTLP_" + suffix
	return strings.TrimSpace(os.Getenv(name)), name
}

// Validate reports a protocol that is not supported (from the config or the
// environment, for either signal) and an endpoint that cannot be used.
func (c Config) Validate() error {
	for _, s := range []signal{metricsSignal, tracesSignal} {
		if _, err := c.protocol(s); err != nil {
			return err
		}
	}
	if err := validateMetricsEnv(); err != nil {
		return err
	}
	if c.Endpoint != "" {
		// The signal and protocol do not change whether it parses.
		if _, err := c.endpointURL(metricsSignal, ProtocolGRPC); err != nil {
			return err
		}
		return nil
	}
	// The OTLP exporters fall back to localhost when an endpoint variable
	// does not parse: refuse it instead of exporting somewhere else.
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", metricsSignal.envPrefix + "ENDPOINT", tracesSignal.envPrefix + "ENDPOINT"} {
		if v := strings.TrimSpace(os.Getenv(name)); v != "" {
			if err := checkEndpointURL(v); err != nil {
				return fmt.Errorf("%s %s: %w", name, quote(v), err)
			}
		}
	}
	return nil
}

// checkEndpointURL accepts what the OTLP exporters can use from an
// endpoint variable: an http or https URL with a host.
func checkEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.Unwrap(err) // url.Error repeats the URL
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %s is not supported: use http:// or https://", quote(u.Scheme))
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %s is not a number from 1 to 65535", quote(p))
		}
	}
	return nil
}

// quote renders a value for an error message, cut to a bounded prefix.
func quote(v string) string {
	if len(v) > 128 {
		return strconv.Quote(truncate(v, 128)) + fmt.Sprintf(" (%d bytes)", len(v))
	}
	return strconv.Quote(v)
}

// Enabled reports whether an OTLP endpoint is configured for any signal:
// by Config.Endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or a signal-specific
// endpoint variable. Use MetricsEnabled / TracesEnabled to decide per signal.
func (c Config) Enabled() bool {
	return c.MetricsEnabled() || c.TracesEnabled()
}

// MetricsEnabled reports whether an endpoint is configured for metrics: by
// Config.Endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT.
func (c Config) MetricsEnabled() bool { return c.enabled(metricsSignal) }

// TracesEnabled reports whether an endpoint is configured for traces: by
// Config.Endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
func (c Config) TracesEnabled() bool { return c.enabled(tracesSignal) }

func (c Config) enabled(s signal) bool {
	if strings.TrimSpace(c.Endpoint) != "" {
		return true
	}
	v, _ := s.env("ENDPOINT")
	return v != ""
}

// protocol resolves the protocol for s: config, then environment, then the
// specification's default.
func (c Config) protocol(s signal) (string, error) {
	p, source := strings.ToLower(strings.TrimSpace(c.Protocol)), "otlp protocol"
	if p == "" {
		var name string
		p, name = s.env("PROTOCOL")
		p = strings.ToLower(p)
		source = name
	}
	switch p {
	case "":
		return defaultProtocol, nil
	case ProtocolGRPC, ProtocolHTTPProtobuf:
		return p, nil
	case "http/json":
		return "", fmt.Errorf("%s %s is not supported by otelbee: valid choices are %q and %q",
			source, quote(p), ProtocolGRPC, ProtocolHTTPProtobuf)
	default:
		return "", fmt.Errorf("%s %s is unknown: valid choices are %q and %q",
			source, quote(p), ProtocolGRPC, ProtocolHTTPProtobuf)
	}
}

// endpointURL turns Config.Endpoint into the URL handed to the exporter's
// WithEndpointURL option for signal s over protocol proto.
func (c Config) endpointURL(s signal, proto string) (string, error) {
	raw := strings.TrimSpace(c.Endpoint)
	if !strings.Contains(raw, "://") {
		// A bare host:port. WithEndpointURL needs a scheme, and the scheme
		// decides TLS; keep plaintext (the common in-cluster collector)
		// unless the user explicitly asked for TLS via INSECURE=false,
		// which is what that variable means for scheme-less endpoints.
		scheme := "http"
		if v, _ := s.env("INSECURE"); strings.EqualFold(v, "false") {
			scheme = "https"
		}
		raw = scheme + "://" + raw
	}
	if err := checkEndpointURL(raw); err != nil {
		return "", fmt.Errorf("otlp endpoint %s: %w", quote(c.Endpoint), err)
	}
	u, _ := url.Parse(raw)
	if proto == ProtocolHTTPProtobuf {
		// Same rule as OTEL_EXPORTER_OTLP_ENDPOINT: a base URL gets the
		// signal path appended. Without this, WithEndpointURL would post
		// to "/" and a collector would answer 404.
		suffix := "/v1/" + s.name
		if !strings.HasSuffix(u.Path, suffix) {
			u.Path = strings.TrimSuffix(u.Path, "/") + suffix
		}
	}
	return u.String(), nil
}

package otlp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// The exporters send one request per export carrying every service's
// ResourceMetrics or ResourceSpans, encoded by this module (metricenc.go,
// package spans), through a sender (sender.go) configured here from the
// signal's variables (OTEL_EXPORTER_OTLP_METRICS_* or _TRACES_*, then
// OTEL_EXPORTER_OTLP_*), as the specification defines them.

const (
	traceExportMethod   = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	metricsExportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
)

// transportSettings are a signal's OTLP variables other than the endpoint
// and the protocol.
type transportSettings struct {
	headers map[string]string
	timeout time.Duration
	gzip    bool
	tls     *tls.Config // nil: the system's roots, no client certificate
}

// readTransportSettings reads s's variables as the specification defines
// them: HEADERS a list of key=value (URL-encoded), TIMEOUT in
// milliseconds (default 10 s), COMPRESSION gzip or none, CERTIFICATE the
// roots to trust, CLIENT_CERTIFICATE and CLIENT_KEY a client certificate.
func readTransportSettings(s signal) (transportSettings, error) {
	ts := transportSettings{timeout: 10 * time.Second, headers: map[string]string{}}
	if v, name := s.env("HEADERS"); v != "" {
		for _, pair := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(pair, "=")
			if !ok {
				return ts, fmt.Errorf("%s: %s is not key=value", name, quote(pair))
			}
			k, err1 := url.PathUnescape(strings.TrimSpace(k))
			val, err2 := url.PathUnescape(strings.TrimSpace(val))
			if err := errors.Join(err1, err2); err != nil || k == "" {
				return ts, fmt.Errorf("%s: header %s: not a valid URL-encoded key=value", name, quote(pair))
			}
			ts.headers[k] = val
		}
	}
	if v, name := s.env("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			return ts, fmt.Errorf("%s %s: want milliseconds", name, quote(v))
		}
		ts.timeout = time.Duration(ms) * time.Millisecond
	}
	if v, name := s.env("COMPRESSION"); v != "" {
		switch strings.ToLower(v) {
		case "gzip":
			ts.gzip = true
		case "none":
		default:
			return ts, fmt.Errorf("%s %s: want gzip or none", name, quote(v))
		}
	}
	ca, caName := s.env("CERTIFICATE")
	cert, certName := s.env("CLIENT_CERTIFICATE")
	key, keyName := s.env("CLIENT_KEY")
	if ca == "" && cert == "" && key == "" {
		return ts, nil
	}
	ts.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return ts, fmt.Errorf("reading %s: %w", caName, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return ts, fmt.Errorf("%s %s: no PEM certificate in it", caName, quote(ca))
		}
		ts.tls.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return ts, fmt.Errorf("%s and %s go together", certName, keyName)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return ts, fmt.Errorf("loading %s and %s: %w", certName, keyName, err)
		}
		ts.tls.Certificates = []tls.Certificate{pair}
	}
	return ts, nil
}

// signalEndpointURL is the URL signal s goes to: Config.Endpoint, else
// the signal's variable (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) as it is, else
// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/<signal> appended (HTTP), else the
// specification's localhost default.
func (c Config) signalEndpointURL(s signal, proto string) (string, error) {
	if c.Endpoint != "" {
		return c.endpointURL(s, proto)
	}
	if v := strings.TrimSpace(os.Getenv(s.envPrefix + "ENDPOINT")); v != "" {
		if err := checkEndpointURL(v); err != nil {
			return "", fmt.Errorf("%sENDPOINT %s: %w", s.envPrefix, quote(v), err)
		}
		return v, nil
	}
	v := strings.TrimSpace(os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	if v == "" {
		v = "http://localhost:4318"
		if proto == ProtocolGRPC {
			v = "http://localhost:4317"
		}
	}
	if err := checkEndpointURL(v); err != nil {
		return "", fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %s: %w", quote(v), err)
	}
	if proto == ProtocolHTTPProtobuf {
		u, _ := url.Parse(v)
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/" + s.name
		v = u.String()
	}
	return v, nil
}

package otlp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// The metric exporter sends one request per export carrying every
// service's ResourceMetrics. The SDK's metric exporters cannot (they take
// one ResourceMetrics per call) and do not expose their client; their trace
// counterparts do (otlptrace.Client), with the same retries, timeout,
// compression, headers and TLS. An ExportTraceServiceRequest and an
// ExportMetricsServiceRequest are the same on the wire (field 1 repeated,
// each element an encoded message; the responses likewise: field 1 a
// partial success whose fields 1 and 2 are a count and a message), so a
// trace client posting to the metrics path (HTTP) or calling the metrics
// service's method (gRPC) is a metrics client, configured here from the
// metrics variables (OTEL_EXPORTER_OTLP_METRICS_*, then OTEL_EXPORTER_OTLP_*)
// rather than the traces ones it would read by itself.

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

// metricsEndpointURL is the URL metrics go to: Config.Endpoint, else
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT as it is, else
// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/metrics appended (HTTP).
func (c Config) metricsEndpointURL(proto string) (string, error) {
	if c.Endpoint != "" {
		return c.endpointURL(metricsSignal, proto)
	}
	if v := strings.TrimSpace(os.Getenv(metricsSignal.envPrefix + "ENDPOINT")); v != "" {
		return v, checkEndpointURL(v)
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
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/metrics"
		v = u.String()
	}
	return v, nil
}

// newMetricsClient returns a client sending ExportMetricsServiceRequest
// bytes (see above) with the metrics variables' settings.
func newMetricsClient(cfg Config, proto string) (otlptrace.Client, error) {
	endpoint, err := cfg.metricsEndpointURL(proto)
	if err != nil {
		return nil, err
	}
	ts, err := readTransportSettings(metricsSignal)
	if err != nil {
		return nil, err
	}
	https := strings.HasPrefix(strings.ToLower(endpoint), "https://")
	if proto == ProtocolGRPC {
		opts := []otlptracegrpc.Option{
			otlptracegrpc.WithEndpointURL(endpoint),
			otlptracegrpc.WithHeaders(ts.headers),
			otlptracegrpc.WithTimeout(ts.timeout),
			otlptracegrpc.WithDialOption(grpc.WithChainUnaryInterceptor(toMetricsService)),
		}
		if ts.gzip {
			opts = append(opts, otlptracegrpc.WithCompressor("gzip"))
		}
		if https {
			tc := ts.tls
			if tc == nil {
				tc = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tc)))
		} else {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.NewClient(opts...), nil
	}
	opts := []otlptracehttp.Option{
		otlptracehttp.WithEndpointURL(endpoint),
		otlptracehttp.WithHeaders(ts.headers),
		otlptracehttp.WithTimeout(ts.timeout),
		otlptracehttp.WithCompression(otlptracehttp.NoCompression),
	}
	if ts.gzip {
		opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	}
	if https {
		tc := ts.tls
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		opts = append(opts, otlptracehttp.WithTLSClientConfig(tc))
	} else {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	return otlptracehttp.NewClient(opts...), nil
}

// toMetricsService sends the trace client's call to the metrics service.
func toMetricsService(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == traceExportMethod {
		method = metricsExportMethod
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

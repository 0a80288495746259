package httpc

import (
	"fmt"
	"strings"

	"github.com/otelbee/otelbee/collectors/l7/capture"
)

// Config is the HTTP collector's section of the agent configuration.
type Config struct {
	// CaptureBytes is how much of each read or write the kernel copies: the
	// request line and the headers the parser needs must fit (64-4096).
	CaptureBytes uint32 `yaml:"capture_bytes"`
	// MaxConnections bounds the connections tracked at once (kernel map and
	// parser state).
	MaxConnections uint32 `yaml:"max_connections"`
	// RingBufferBytes sizes the kernel-to-agent ring buffer (a power of two,
	// at least 64 KiB).
	RingBufferBytes uint32 `yaml:"ring_buffer_bytes"`
	// Routes are http.route templates tried before the heuristic, e.g.
	// "/users/{id}/orders" or "/static/*".
	Routes []string `yaml:"routes"`
	// MaxRoutes caps distinct routes per service; the rest are "_OTHER".
	MaxRoutes int `yaml:"max_routes"`
	// MaxSeries caps the metric series (process, side, method, status,
	// route or server address and port, version) the collector keeps; the
	// requests of series beyond it are recorded in one overflow series per
	// side, marked otel.metric.overflow=true as the SDK does. Client calls
	// to ever new servers would otherwise grow the series without bound.
	MaxSeries int `yaml:"max_series"`
	// Include and Exclude select the processes observed, in the kernel.
	// Empty Include: every process not excluded.
	Include Filter `yaml:"include"`
	Exclude Filter `yaml:"exclude"`
	// Spans turns the span per request on (when an OTLP trace endpoint is
	// set); SpanQueue bounds the requests waiting to become spans.
	Spans     bool `yaml:"spans"`
	SpanQueue int  `yaml:"span_queue"`
	// KnownMethods are the request methods reported as themselves
	// (OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS, case-sensitive); the rest
	// are _OTHER with http.request.method_original on the span. Empty: the
	// RFC 9110 methods and PATCH.
	KnownMethods []string `yaml:"known_methods"`
	// RouteHeuristic puts the folding heuristic's templates into http.route
	// (for backends that group server requests only by http.route). Off:
	// http.route is set only from Routes, as the conventions require (a
	// route must be known, not guessed), and the heuristic's template is
	// url.template.
	RouteHeuristic bool `yaml:"route_heuristic"`
	// BodySizes turns on what the conventions make opt-in about bodies:
	// the four http.*.body.size histograms and http.request.body.size /
	// http.response.body.size on spans. Off by default.
	BodySizes bool `yaml:"body_sizes"`
	// ClientURLScheme puts url.scheme (opt-in for clients) on client
	// metrics and spans. Off by default.
	ClientURLScheme bool `yaml:"client_url_scheme"`
	// URLQuery puts the request's query on spans (server url.query, client
	// url.full), every parameter's value replaced by REDACTED. Off by
	// default: a query often carries tokens.
	URLQuery bool `yaml:"url_query"`
	// PickUpExisting parses the TCP connections that exist when the agent
	// starts, from the next request that starts on them.
	PickUpExisting bool `yaml:"pick_up_existing"`
}

// Filter names processes by executable (the kernel's 15-byte comm), the
// connection's server port, or cgroup v2 path: the L7 capture's.
type Filter = capture.Filter

// DefaultConfig is what runs without configuration.
func DefaultConfig() Config {
	return Config{
		CaptureBytes:    1024,
		MaxConnections:  65536,
		RingBufferBytes: 4 << 20, // docs/benchmarks.md "Second pass": 8 MiB cost 16 MiB of RSS
		MaxRoutes:       200,
		MaxSeries:       20000,
		Spans:           true,
		SpanQueue:       8192,
		PickUpExisting:  true,
	}
}

// Validate reports a setting that cannot work.
func (c Config) Validate() error {
	if c.CaptureBytes < 64 || c.CaptureBytes > 4096 {
		return fmt.Errorf("l7.capture_bytes must be between 64 and 4096, got %d", c.CaptureBytes)
	}
	if c.MaxConnections < 64 || c.MaxConnections > 1<<22 {
		return fmt.Errorf("l7.max_connections must be between 64 and 4194304, got %d", c.MaxConnections)
	}
	if r := c.RingBufferBytes; r < 64<<10 || r > 1<<30 || r&(r-1) != 0 {
		return fmt.Errorf("l7.ring_buffer_bytes must be a power of two between 65536 and 1073741824, got %d", r)
	}
	if c.MaxRoutes < 1 || c.MaxRoutes > 100000 {
		return fmt.Errorf("http.max_routes must be between 1 and 100000, got %d", c.MaxRoutes)
	}
	if c.MaxSeries < 1 || c.MaxSeries > 1<<20 {
		return fmt.Errorf("http.max_series must be between 1 and 1048576, got %d", c.MaxSeries)
	}
	if c.SpanQueue < 1 || c.SpanQueue > 1<<20 {
		return fmt.Errorf("http.span_queue must be between 1 and 1048576, got %d", c.SpanQueue)
	}
	if len(c.KnownMethods) > maxMethods-int(methodCount) {
		return fmt.Errorf("http.known_methods: at most %d methods, got %d", maxMethods-int(methodCount), len(c.KnownMethods))
	}
	for _, m := range c.KnownMethods {
		if len(m) > maxMethod || !isToken([]byte(m)) {
			return fmt.Errorf("http.known_methods: %q is not an HTTP method token of at most %d bytes", m, maxMethod)
		}
	}
	for _, p := range c.Routes {
		if err := validatePattern(p); err != nil {
			return fmt.Errorf("http.routes: %w", err)
		}
	}
	for _, f := range []Filter{c.Include, c.Exclude} {
		for _, e := range f.Executables {
			if e == "" || strings.ContainsRune(e, '/') {
				return fmt.Errorf("http filter: executable %q must be a bare name", e)
			}
		}
		for _, p := range f.Ports {
			if p < 1 || p > 65535 {
				return fmt.Errorf("http filter: port %d out of range", p)
			}
		}
		for _, cg := range f.Cgroups {
			if cg == "" {
				return fmt.Errorf("http filter: empty cgroup path")
			}
		}
	}
	return nil
}

// cgroupID is the id the kernel reports for a cgroup v2 directory.
func cgroupID(path string) (uint64, error) { return capture.CgroupID(path) }

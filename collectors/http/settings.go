package httpc

import "github.com/otelbee/otelbee/agent/settings"

// Settings declares the HTTP collector's options, bound to c, after the
// L7 layer's capture options (CaptureSettings); bounds are checked by
// Validate.
func Settings(c *Config) []settings.Setting {
	return append(CaptureSettings(c), []settings.Setting{
		{Flag: "http.routes", Env: []string{"OTELBEE_HTTP_ROUTES"}, Key: "http.routes", Value: settings.List(&c.Routes),
			Help: "the service's routes, e.g. `/users/{id}`: the only source of `http.route` (server spans `{method} {http.route}`); other paths are folded by a heuristic into `url.template` (server spans then `{method}`)"},
		{Flag: "http.route-heuristic", Env: []string{"OTELBEE_HTTP_ROUTE_HEURISTIC"}, Key: "http.route_heuristic", Value: settings.Bool(&c.RouteHeuristic),
			Help: "put the heuristic's templates into `http.route`, for backends that group server requests only by `http.route`"},
		{Flag: "http.body-sizes", Env: []string{"OTELBEE_HTTP_BODY_SIZES"}, Key: "http.body_sizes", Value: settings.Bool(&c.BodySizes),
			Help: "the conventions' opt-in body sizes: the four `http.{server,client}.{request,response}.body.size` histograms and `http.{request,response}.body.size` on spans"},
		{Flag: "http.client-url-scheme", Env: []string{"OTELBEE_HTTP_CLIENT_URL_SCHEME"}, Key: "http.client_url_scheme", Value: settings.Bool(&c.ClientURLScheme),
			Help: "the opt-in `url.scheme` on client metrics and spans (server series always carry it: required there)"},
		{Flag: "http.url-query", Env: []string{"OTELBEE_HTTP_URL_QUERY"}, Key: "http.url_query", Value: settings.Bool(&c.URLQuery),
			Help: "the request's query on spans (server `url.query`, client `url.full`), every value replaced by `REDACTED` (`a=REDACTED&b=REDACTED`); never the raw values"},
		{Flag: "http.known-methods", Env: []string{"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"}, Key: "http.known_methods", Value: settings.List(&c.KnownMethods),
			Default: "RFC 9110 methods and PATCH",
			Help:    "request methods reported as themselves (case-sensitive); any other token is `_OTHER` with `http.request.method_original` on the span"},
		{Key: "http.max_routes", Value: settings.Int(&c.MaxRoutes),
			Help: "distinct routes per service; the rest are `_OTHER`"},
		{Key: "http.max_series", Value: settings.Int(&c.MaxSeries),
			Help: "all HTTP series; requests past it are recorded in one overflow series per side marked `otel.metric.overflow=true`"},
		{Key: "http.spans", Value: settings.Bool(&c.Spans),
			Help: "a span per request (when an OTLP trace endpoint is set)"},
		{Key: "http.span_queue", Value: settings.Int(&c.SpanQueue),
			Help: "requests waiting to become spans"},
	}...)
}

// CaptureSettings are the L7 layer's capture options, under l7.*: every
// L7 protocol's connections are captured by them (one kernel capture), not
// only HTTP's. They fill this Config because the agent's capture is made
// from the HTTP collector's (CaptureConfig). Their old names under http.*
// still work, deprecated (declared first, so the new name wins where both
// are given the same way).
func CaptureSettings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Flag: "http.capture-bytes", Env: []string{"OTELBEE_HTTP_CAPTURE_BYTES"}, Key: "http.capture_bytes", Value: settings.Uint32(&c.CaptureBytes), Deprecated: "l7.capture-bytes"},
		{Flag: "http.include-executables", Key: "http.include.executables", Value: settings.List(&c.Include.Executables), Deprecated: "l7.include-executables"},
		{Flag: "http.exclude-executables", Key: "http.exclude.executables", Value: settings.List(&c.Exclude.Executables), Deprecated: "l7.exclude-executables"},
		{Key: "http.include.ports", Value: settings.Ints(&c.Include.Ports), Deprecated: "l7.include.ports"},
		{Key: "http.exclude.ports", Value: settings.Ints(&c.Exclude.Ports), Deprecated: "l7.exclude.ports"},
		{Key: "http.include.cgroups", Value: settings.List(&c.Include.Cgroups), Deprecated: "l7.include.cgroups"},
		{Key: "http.exclude.cgroups", Value: settings.List(&c.Exclude.Cgroups), Deprecated: "l7.exclude.cgroups"},
		{Key: "http.max_connections", Value: settings.Uint32(&c.MaxConnections), Deprecated: "l7.max_connections"},
		{Key: "http.ring_buffer_bytes", Value: settings.Uint32(&c.RingBufferBytes), Deprecated: "l7.ring_buffer_bytes"},
		{Key: "http.pick_up_existing", Value: settings.Bool(&c.PickUpExisting), Deprecated: "l7.pick_up_existing"},

		{Flag: "l7.capture-bytes", Env: []string{"OTELBEE_L7_CAPTURE_BYTES"}, Key: "l7.capture_bytes", Value: settings.Uint32(&c.CaptureBytes),
			Help: "bytes of each read/write copied from the kernel on every L7 connection (64 to 4096): HTTP/1's whole capture, the prefix of the protocols whose capture policy takes a prefix"},
		{Flag: "l7.include-executables", Env: []string{"OTELBEE_L7_INCLUDE_EXECUTABLES"}, Key: "l7.include.executables", Value: settings.List(&c.Include.Executables),
			Default: "all", Help: "executable names (the kernel's 15-byte comm) the L7 collectors observe, filtered in the kernel"},
		{Flag: "l7.exclude-executables", Env: []string{"OTELBEE_L7_EXCLUDE_EXECUTABLES"}, Key: "l7.exclude.executables", Value: settings.List(&c.Exclude.Executables),
			Help: "executable names the L7 collectors ignore"},
		{Key: "l7.include.ports", Value: settings.Ints(&c.Include.Ports), Help: "server ports whose connections are observed"},
		{Key: "l7.exclude.ports", Value: settings.Ints(&c.Exclude.Ports), Help: "server ports whose connections are ignored"},
		{Key: "l7.include.cgroups", Value: settings.List(&c.Include.Cgroups), Help: "cgroup v2 paths whose processes are observed"},
		{Key: "l7.exclude.cgroups", Value: settings.List(&c.Exclude.Cgroups), Help: "cgroup v2 paths whose processes are ignored"},
		{Key: "l7.max_connections", Value: settings.Uint32(&c.MaxConnections),
			Help: "connections of every L7 protocol tracked at once (kernel map and parser state)"},
		{Key: "l7.ring_buffer_bytes", Value: settings.Uint32(&c.RingBufferBytes),
			Help: "the L7 capture's kernel-to-agent ring buffer (a power of two, at least 64 KiB)"},
		{Key: "l7.pick_up_existing", Value: settings.Bool(&c.PickUpExisting),
			Help: "parse the TCP connections that exist when the agent starts, from the next request that starts on them"},
	}
}

package http2

import "github.com/otelbee/otelbee/agent/settings"

// Config is the protocol's part of the agent's configuration. Routes, the
// route caps and the client url.scheme are the HTTP collector's options
// (http.routes, http.max_routes, http.route-heuristic,
// http.client-url-scheme): both versions of HTTP name routes alike.
type Config struct {
	MaxStreams     int
	MaxHeaderTable uint32
	MaxMethods     int
	MaxHosts       int
}

// DefaultConfig is the configuration before any option is applied.
func DefaultConfig() Config {
	return Config{
		MaxStreams:     defaultMaxStreams,
		MaxHeaderTable: defaultMaxHeaderTable,
		MaxMethods:     defaultMaxMethods,
		MaxHosts:       defaultMaxHosts,
	}
}

// Settings declares the protocol's options.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Key: "http2.max_streams", Value: settings.Int(&c.MaxStreams), Check: settings.Between(&c.MaxStreams, 1, 4096),
			Help: "HTTP/2 streams tracked at once per connection; a stream opened past it is dropped (`reason=overflow`)"},
		{Key: "http2.max_header_table", Value: settings.Uint32(&c.MaxHeaderTable), Check: settings.Between(&c.MaxHeaderTable, 4096, 1<<20),
			Help: "bytes of each HPACK dynamic table kept per connection and direction, whatever the peer's SETTINGS_HEADER_TABLE_SIZE allows (a table past it makes its streams undecodable)"},
		{Key: "http2.max_methods", Value: settings.Int(&c.MaxMethods), Check: settings.Between(&c.MaxMethods, 1, 100000),
			Help: "distinct gRPC `rpc.method` values per process; the rest are `_OTHER`"},
		{Key: "http2.max_hosts", Value: settings.Int(&c.MaxHosts), Check: settings.Between(&c.MaxHosts, 1, 100000),
			Help: "distinct `server.address` values (from `:authority`) per client process; the rest are `_OTHER`"},
	}
}

// Options are the protocol's options from c and the HTTP collector's
// route table and switches.
func (c Config) Options(routes Router, routeHeuristic, clientURLScheme bool) Options {
	return Options{
		Limits:          Limits{MaxStreams: c.MaxStreams, MaxHeaderTable: c.MaxHeaderTable},
		Routes:          routes,
		RouteHeuristic:  routeHeuristic,
		MaxMethods:      c.MaxMethods,
		MaxHosts:        c.MaxHosts,
		ClientURLScheme: clientURLScheme,
	}
}

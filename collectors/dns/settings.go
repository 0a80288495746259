package dns

import "github.com/otelbee/otelbee/agent/settings"

// Settings declares the DNS collector's options, bound to c; bounds are
// checked by Validate.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Flag: "dns.ports", Env: []string{"OTELBEE_DNS_PORTS"}, Key: "dns.ports", Value: settings.Ports(&c.Ports),
			Help: "DNS server ports watched (UDP and TCP)"},
		{Flag: "dns.timeout", Env: []string{"OTELBEE_DNS_TIMEOUT"}, Key: "dns.timeout", Value: settings.Duration(&c.Timeout),
			Help: "a query without an answer by then counts as a timeout (10ms to 10m)"},
		{Flag: "dns.max-names", Key: "dns.max_names_per_service", Value: settings.Int(&c.MaxNamesPerService),
			Help: "distinct question names per service; the rest fold into `_OTHER`"},
		{Flag: "dns.max-pending", Key: "dns.max_pending", Value: settings.Uint32(&c.MaxPending),
			Help: "queries awaiting an answer tracked at once (kernel map size)"},
		{Flag: "dns.spans", Env: []string{"OTELBEE_DNS_SPANS"}, Key: "dns.spans", Value: settings.Bool(&c.Spans),
			Help: "one client span per lookup (needs an OTLP endpoint)"},
		{Key: "dns.max_series", Value: settings.Int(&c.MaxSeries),
			Help: "all DNS series; lookups past it are recorded in one series marked `otel.metric.overflow=true`"},
		{Key: "dns.ring_buffer_bytes", Value: settings.Uint32(&c.RingBufferBytes),
			Help: "the kernel-to-agent ring buffer (a power of two)"},
		{Key: "dns.retire_after", Value: settings.Duration(&c.RetireAfter),
			Help: "how long the series of an exited process keep being reported"},
		{Key: "dns.duration_buckets", Value: settings.Floats(&c.DurationBuckets),
			Help: "`dns.lookup.duration` bucket bounds in seconds (1 to 64, increasing; default: the conventions' advice)"},
	}
}

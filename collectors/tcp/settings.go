package tcp

import "github.com/otelbee/otelbee/agent/settings"

// Settings declares the TCP collector's options, bound to c; bounds are
// checked by Validate.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Flag: "tcp.max-connections", Key: "tcp.max_connections", Value: settings.Uint32(&c.MaxConnections),
			Help: "connections tracked at once (kernel map size)"},
		{Flag: "tcp.max-series", Key: "tcp.max_series", Value: settings.Uint32(&c.MaxSeries),
			Help: "distinct TCP series (process, peer, port, direction) kept in the kernel"},
		{Flag: "tcp.max-peers", Key: "tcp.max_peers_per_process", Value: settings.Int(&c.MaxPeersPerProcess),
			Help: "distinct peer addresses per process; more fold into `network.peer.address=\"_OTHER\"`, in the kernel, so one process cannot fill `--tcp.max-series`"},
		{Flag: "tcp.peer-histograms", Env: []string{"OTELBEE_TCP_PEER_HISTOGRAMS"}, Key: "tcp.peer_histograms", Value: settings.Bool(&c.PeerHistograms),
			Help: "keep the connection duration and RTT histograms per peer address and server port, as the counters (43 buckets more per peer in every scrape); by default they are per instance and direction"},
		{Key: "tcp.retire_after", Value: settings.Duration(&c.RetireAfter),
			Help: "how long the series of an exited process keep being reported before they are dropped from the kernel map"},
	}
}

package kafka

import "github.com/otelbee/otelbee/agent/settings"

// Config is the Kafka protocol's part of the agent's configuration.
type Config struct {
	// MaxTopics caps the topic names kept per process (Options.MaxTopics).
	MaxTopics int
	// CaptureBytes is the prefix of each call the kernel keeps for Kafka
	// (Options.CaptureBytes).
	CaptureBytes int
}

// DefaultConfig is the configuration without any setting.
func DefaultConfig() Config { return Config{MaxTopics: 100, CaptureBytes: 4096} }

// Settings declares the Kafka protocol's options, bound to c.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Key: "kafka.max_topics", Value: settings.Int(&c.MaxTopics), Check: settings.Between(&c.MaxTopics, 1, 100000),
			Help: "distinct `messaging.destination.name` values per process; the rest are `_OTHER`, counted on `otelbee.kafka.destination.overflow`"},
		{Flag: "kafka.capture-bytes", Env: []string{"OTELBEE_KAFKA_CAPTURE_BYTES"}, Key: "kafka.capture_bytes", Value: settings.Int(&c.CaptureBytes),
			Check: settings.Between(&c.CaptureBytes, 64, 4096),
			Help:  "bytes of each read/write of a Kafka connection copied from the kernel (64 to 4096; Kafka's own, not `l7.capture_bytes`): Produce and Fetch message counts need the record batch headers within it"},
	}
}

// Options are the protocol's options from c.
func (c Config) Options() Options {
	return Options{MaxTopics: c.MaxTopics, CaptureBytes: c.CaptureBytes}
}

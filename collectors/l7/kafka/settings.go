package kafka

import "github.com/otelbee/otelbee/agent/settings"

// Config is the Kafka protocol's part of the agent's configuration.
type Config struct {
	// MaxTopics caps the topic names kept per process (Options.MaxTopics).
	MaxTopics int
}

// DefaultConfig is the configuration without any setting.
func DefaultConfig() Config { return Config{MaxTopics: 100} }

// Settings declares the Kafka protocol's options, bound to c.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Key: "kafka.max_topics", Value: settings.Int(&c.MaxTopics), Check: settings.Between(&c.MaxTopics, 1, 100000),
			Help: "distinct `messaging.destination.name` values per process; the rest are `_OTHER`, counted on `otelbee.kafka.destination.overflow`"},
	}
}

// Options are the protocol's options from c.
func (c Config) Options() Options { return Options{MaxTopics: c.MaxTopics} }

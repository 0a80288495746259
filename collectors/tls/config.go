package tls

import (
	"fmt"

	"github.com/otelbee/otelbee/agent/settings"
)

// Config is the TLS data source's part of the agent's configuration.
type Config struct {
	// Enabled attaches the uprobes (with the http collector, whose capture
	// the plaintext feeds).
	Enabled   bool `yaml:"enabled"`
	MaxFiles  int  `yaml:"max_files"`
	MaxProbes int  `yaml:"max_probes"`
}

// DefaultConfig is on, with the attacher's default bounds.
func DefaultConfig() Config {
	d := DefaultAttachConfig()
	return Config{Enabled: true, MaxFiles: d.MaxFiles, MaxProbes: d.MaxProbes}
}

// Validate checks the bounds.
func (c *Config) Validate() error {
	if c.MaxFiles < 1 || c.MaxFiles > 4096 {
		return fmt.Errorf("tls.max_files %d: want 1 to 4096", c.MaxFiles)
	}
	if c.MaxProbes < 1 || c.MaxProbes > 65536 {
		return fmt.Errorf("tls.max_probes %d: want 1 to 65536", c.MaxProbes)
	}
	return nil
}

// AttachConfig is the attacher's configuration for c.
func (c *Config) AttachConfig() AttachConfig {
	a := DefaultAttachConfig()
	a.MaxFiles, a.MaxProbes = c.MaxFiles, c.MaxProbes
	return a
}

// Settings declares the TLS options, bound to c.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Flag: "tls", Env: []string{"OTELBEE_TLS"}, Key: "tls.enabled", Value: settings.Bool(&c.Enabled),
			Help: "HTTPS in plaintext: uprobes on OpenSSL (`libssl`, or built into an executable such as node) and Go `crypto/tls`, one set per file, feeding the http collector (docs/tls.md)"},
		{Key: "tls.max_files", Value: settings.Int(&c.MaxFiles),
			Help: "libraries and executables instrumented at once; past it a process's TLS is counted unobserved (`reason=limit`)"},
		{Key: "tls.max_probes", Value: settings.Int(&c.MaxProbes),
			Help: "uprobes attached at once, over all files"},
	}
}

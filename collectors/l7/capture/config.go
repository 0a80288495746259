package capture

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	tlsc "github.com/otelbee/otelbee/collectors/tls"
)

// Config is the kernel capture's configuration, shared by every L7
// protocol (one set of programs, one connection table).
type Config struct {
	// CaptureBytes is how much of each read or write the kernel copies for
	// HTTP/1 and the head-and-tail protocols (64-4096); HTTP/2 always gets
	// whole calls up to 4096 bytes.
	CaptureBytes uint32 `yaml:"capture_bytes"`
	// MaxConnections bounds the connections tracked at once (kernel map and
	// user-space table).
	MaxConnections uint32 `yaml:"max_connections"`
	// RingBufferBytes sizes the kernel-to-agent ring buffer (a power of
	// two, at least 64 KiB).
	RingBufferBytes uint32 `yaml:"ring_buffer_bytes"`
	// Include and Exclude select the processes observed, in the kernel.
	Include Filter `yaml:"include"`
	Exclude Filter `yaml:"exclude"`
	// PickUpExisting parses the TCP connections that exist when the agent
	// starts, from the next message that starts on them.
	PickUpExisting bool `yaml:"pick_up_existing"`
	// MaxSeries caps the series each protocol's sink keeps; the rest go to
	// one overflow series per metric.
	MaxSeries int `yaml:"max_series"`
	// Spans turns spans on (when an OTLP trace endpoint is set).
	Spans bool `yaml:"spans"`
	// ObserveSelf (tests) observes the agent's own process.
	ObserveSelf bool `yaml:"-"`
	// TLS is the HTTPS plaintext source (collectors/tls uprobes, tls.go);
	// the zero value is off.
	TLS tlsc.Config `yaml:"-"`
}

// DefaultConfig is what runs without configuration.
func DefaultConfig() Config {
	return Config{
		CaptureBytes:    1024,
		MaxConnections:  65536,
		RingBufferBytes: 4 << 20, // docs/benchmarks.md "Second pass": 8 MiB cost 16 MiB of RSS
		PickUpExisting:  true,
		MaxSeries:       20000,
		Spans:           true,
	}
}

// Filter names processes by executable (the kernel's 15-byte comm), the
// connection's server port, or cgroup v2 path.
type Filter struct {
	Executables []string `yaml:"executables"`
	Ports       []int    `yaml:"ports"`
	Cgroups     []string `yaml:"cgroups"`
}

// Empty reports whether the filter names nothing.
func (f Filter) Empty() bool {
	return len(f.Executables) == 0 && len(f.Ports) == 0 && len(f.Cgroups) == 0
}

// CgroupID is the id the kernel reports for a cgroup v2 directory: its
// inode number. Relative paths are under /sys/fs/cgroup.
func CgroupID(path string) (uint64, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join("/sys/fs/cgroup", path)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		return 0, fmt.Errorf("cgroup %s is not a directory", path)
	}
	return st.Ino, nil
}

// commKey is an executable name as the kernel's comm: at most 15 bytes.
func commKey(name string) l7CommKey {
	var k l7CommKey
	for i := 0; i < len(name) && i < 15; i++ {
		k.Comm[i] = int8(name[i])
	}
	return k
}

package agent

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestCaptureSettingsNamedForTheLayer: the L7 capture's options are under
// l7.*, their old http.* names still work, each use of an old name is
// reported (Run logs it) naming the new one in the same form, and the new
// name wins where both are given the same way.
func TestCaptureSettingsNamedForTheLayer(t *testing.T) {
	file := filepath.Join(t.TempDir(), "otelbee.yaml")
	os.WriteFile(file, []byte("l7:\n  ring_buffer_bytes: 131072\nhttp:\n  max_connections: 1024\n  include: {ports: [8080]}\n"), 0o600)
	for _, tc := range []struct {
		name       string
		args       []string
		env        map[string]string
		capture    uint32
		deprecated []string
	}{
		{"new flag", []string{"--l7.capture-bytes=512"}, nil, 512, nil},
		{"new variable", nil, map[string]string{"OTELBEE_L7_CAPTURE_BYTES": "256"}, 256, nil},
		{"old flag", []string{"--http.capture-bytes=512"}, nil, 512,
			[]string{"--http.capture-bytes is deprecated: use --l7.capture-bytes"}},
		{"old variable", nil, map[string]string{"OTELBEE_HTTP_CAPTURE_BYTES": "128"}, 128,
			[]string{"OTELBEE_HTTP_CAPTURE_BYTES is deprecated: use OTELBEE_L7_CAPTURE_BYTES"}},
		{"both flags: the new one wins", []string{"--l7.capture-bytes=2048", "--http.capture-bytes=512"}, nil, 2048,
			[]string{"--http.capture-bytes is deprecated: use --l7.capture-bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadConfig(append([]string{"--config=" + file}, tc.args...), env(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.HTTP.CaptureBytes != tc.capture {
				t.Errorf("capture bytes %d, want %d", cfg.HTTP.CaptureBytes, tc.capture)
			}
			// the file's old keys, every time
			want := append(slices.Clone(tc.deprecated),
				"file key http.include.ports is deprecated: use file key l7.include.ports",
				"file key http.max_connections is deprecated: use file key l7.max_connections")
			slices.Sort(want)
			got := slices.Sorted(slices.Values(cfg.Deprecated))
			if !slices.Equal(got, want) {
				t.Errorf("deprecations %q, want %q", got, want)
			}
			cc := cfg.HTTP
			if cc.RingBufferBytes != 131072 || cc.MaxConnections != 1024 || len(cc.Include.Ports) != 1 || cc.Include.Ports[0] != 8080 {
				t.Errorf("file: ring %d, connections %d, ports %v", cc.RingBufferBytes, cc.MaxConnections, cc.Include.Ports)
			}
		})
	}
}

package tls

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzInspect feeds corrupted real binaries to discovery: it must return a
// Target, never panic or hang.
func FuzzInspect(f *testing.F) {
	for _, p := range []string{"/usr/bin/true", libssl3} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b[:min(len(b), 64<<10)])
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "libssl.so.3") // takes the OpenSSL path, the widest
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if tg := Inspect(path); tg == nil {
			t.Fatal("nil target")
		}
	})
}

package vmtest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeQEMU points qemuBinary at a script whose boots print, in turn, the
// consoles given (one per boot, the last repeated).
func fakeQEMU(t *testing.T, consoles ...string) (boots func() int) {
	t.Helper()
	dir := t.TempDir()
	count := filepath.Join(dir, "boots")
	script := "#!/bin/sh\nn=$(cat " + count + " 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > " + count + "\n"
	for i, c := range consoles {
		f := filepath.Join(dir, "console"+strconv.Itoa(i))
		if err := os.WriteFile(f, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		if i < len(consoles)-1 {
			script += "if [ $n -eq " + strconv.Itoa(i+1) + " ]; then cat " + f + "; exit 0; fi\n"
		} else {
			script += "cat " + f + "\n"
		}
	}
	bin := filepath.Join(dir, "qemu")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	old := qemuBinary
	qemuBinary = bin
	t.Cleanup(func() { qemuBinary = old })
	return func() int {
		b, _ := os.ReadFile(count)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
}

const (
	consoleNoRunner = "Booting from ROM...\n[    2.2] Initramfs unpacking failed: write error\n[    6.3] reboot: Power down\n"
	consoleDone     = "=== VMTEST KERNEL 5.10.0-test\n=== VMTEST DONE\n[    4.4] reboot: Power down\n"
	consoleCrashed  = "=== VMTEST KERNEL 5.10.0-test\n=== VMTEST BEGIN j\n[    3.0] Kernel panic - not syncing\n"
)

// TestBootRetry: a guest that never reached the job runner is booted once
// more (its first console kept aside, a warning in the report); one that
// reached it and then failed is not, nor one that fails twice to boot.
func TestBootRetry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		consoles []string
		boots    int
		ok       bool
	}{
		{"boots the second time", []string{consoleNoRunner, consoleDone}, 2, true},
		{"never boots", []string{consoleNoRunner}, 2, false},
		{"boots, then crashes", []string{consoleCrashed}, 1, false},
		{"boots", []string{consoleDone}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boots := fakeQEMU(t, tc.consoles...)
			res := &KernelResult{Label: "5.10", LogPath: filepath.Join(t.TempDir(), "5.10.log")}
			k := &Kernel{Label: "5.10", Vmlinuz: "/nonexistent/vmlinuz"}
			opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Accel: "tcg", MemoryMB: 256, VMTimeout: 20 * time.Second}
			runVM(context.Background(), k, "/nonexistent/initrd", 0, nil, res, opts)
			if n := boots(); n != tc.boots {
				t.Errorf("%d boots, want %d", n, tc.boots)
			}
			if (res.Err == nil) != tc.ok {
				t.Errorf("err %v, want ok=%v", res.Err, tc.ok)
			}
			retried := len(res.Warnings) > 0 && strings.Contains(res.Warnings[len(res.Warnings)-1], "booted again")
			if retried != (tc.boots == 2) {
				t.Errorf("warnings %q", res.Warnings)
			}
			if tc.boots == 2 {
				if _, err := os.Stat(res.LogPath + ".boot1"); err != nil {
					t.Errorf("the first boot's console: %v", err)
				}
			}
		})
	}
}

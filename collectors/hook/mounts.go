package hook

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// EnsureMounts mounts the pseudo file systems the loader and the probes read
// (tracefs for tracepoints, securityfs for the lockdown mode) where the host
// has not. It is best effort: what cannot be mounted is reported, and the
// affected modes then fail their probes with a clear reason.
func EnsureMounts() error {
	var errs []error
	mounts := []struct{ fstype, target, probe string }{
		{"tracefs", "/sys/kernel/tracing", "/sys/kernel/tracing/events"},
		{"securityfs", "/sys/kernel/security", "/sys/kernel/security/lsm"},
	}
	for _, m := range mounts {
		if _, err := os.Stat(m.probe); err == nil {
			continue
		}
		if m.fstype == "tracefs" {
			if _, err := os.Stat("/sys/kernel/debug/tracing/events"); err == nil {
				continue
			}
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

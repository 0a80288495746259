package tls

import (
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Inspect reads one executable or library. It never fails: a file without
// TLS gives Stack none, one that cannot be read or instrumented gives a
// Reason.
func Inspect(path string) *Target {
	return inspect(path, path, func(p string) (*elf.File, error) { return elf.Open(p) })
}

// inspect reads the file at open path (which may go through /proc/<pid>/root)
// and reports it under name.
func inspect(open, name string, openELF func(string) (*elf.File, error)) (t *Target) {
	t = &Target{Path: name}
	defer func() {
		// debug/elf, debug/dwarf and the pclntab reader trust their input; a corrupt file must
		// cost one target, never the agent.
		if r := recover(); r != nil {
			*t = Target{Path: name, ID: t.ID, Reason: ReasonUnreadable, Detail: fmt.Sprintf("malformed file: %v", r)}
		}
	}()
	if st, ok := stat(open); ok {
		t.ID = FileID{Dev: st.Dev, Ino: st.Ino}
	}
	if s := libraryStack(name); s != StackNone && s != StackOpenSSL {
		// Recognised by name alone: nothing inside needs reading.
		t.Stack, t.Reason, t.Detail = s, ReasonUnsupportedStack, string(s)+" is not supported"
		return t
	}
	file, err := os.Open(open)
	if err != nil {
		t.Reason, t.Detail = ReasonUnreadable, err.Error()
		return t
	}
	defer file.Close()
	f, err := elf.NewFile(file)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			t.Reason, t.Detail = ReasonNotELF, err.Error()
		} else {
			t.Reason, t.Detail = ReasonUnreadable, err.Error()
		}
		return t
	}
	arch, archOK := archOf(f)
	t.Arch = arch
	if bi, err := buildinfo.Read(file); err == nil {
		if !archOK {
			// Only known Go TLS is worth a reason on a foreign arch.
			if inspectGoBuildOnly(f) {
				t.Stack, t.Version, t.Reason = StackGo, bi.GoVersion, ReasonUnsupportedArch
			}
			return t
		}
		if !inspectGo(file, f, bi.GoVersion, t) {
			*t = Target{Path: t.Path, ID: t.ID, Arch: t.Arch}
		}
		return t
	}
	if !inspectOpenSSL(f, t, func(p string) (*elf.File, error) {
		// libcrypto beside libssl, reached the same way libssl was.
		return openELF(filepath.Join(filepath.Dir(open), filepath.Base(p)))
	}) {
		return t
	}
	if !archOK {
		t.Funcs, t.Reason, t.Detail = nil, ReasonUnsupportedArch, "architecture "+arch
	}
	return t
}

// inspectGoBuildOnly reports whether a Go binary links crypto/tls, by its
// function names alone.
func inspectGoBuildOnly(f *elf.File) bool {
	s := f.Section(".gopclntab")
	if s == nil {
		return false
	}
	ok, _ := contains(s, []byte(goRead))
	return ok
}

// libraryStack names the TLS library a shared object's file name says it
// is, so a process's maps need not be opened beyond its TLS libraries.
func libraryStack(path string) Stack {
	base := filepath.Base(path)
	switch {
	case strings.HasPrefix(base, "libssl.so"):
		return StackOpenSSL
	case strings.HasPrefix(base, "libgnutls.so"):
		return StackGnuTLS
	case strings.HasPrefix(base, "libssl3.so"), strings.HasPrefix(base, "libnss3.so"):
		return StackNSS // NSS's libssl3.so is not OpenSSL's libssl.so.3
	case strings.HasPrefix(base, "libwolfssl.so"):
		return StackWolfSSL
	case strings.HasPrefix(base, "libmbedtls.so"):
		return StackMbedTLS
	}
	return StackNone
}

type fileKey struct {
	dev, ino    uint64
	mtime, size int64
}

func stat(path string) (*syscall.Stat_t, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, false
	}
	return &st, true
}

// Cache remembers each file's Target by (device, inode, mtime, size), so the
// same library mapped by a thousand processes is read once, and a file
// rewritten in place is read again. At most max entries are kept.
type Cache struct {
	mu      sync.Mutex
	max     int
	entries map[fileKey]*Target
	// Reads counts files actually inspected (cache misses).
	Reads int
}

// NewCache returns a cache holding at most max files.
func NewCache(max int) *Cache {
	return &Cache{max: max, entries: map[fileKey]*Target{}}
}

// Inspect is the package Inspect, cached; open is the path to read and name
// the path to report.
func (c *Cache) inspect(open, name string) *Target {
	st, ok := stat(open)
	if !ok {
		return inspect(open, name, elf.Open)
	}
	k := fileKey{st.Dev, st.Ino, st.Mtim.Nano(), st.Size}
	c.mu.Lock()
	t, hit := c.entries[k]
	c.mu.Unlock()
	if hit {
		return t
	}
	t = inspect(open, name, elf.Open)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Reads++
	if len(c.entries) >= c.max {
		for old := range c.entries { // evict any one: bounded, not LRU
			delete(c.entries, old)
			break
		}
	}
	c.entries[k] = t
	return t
}

// Inspect is the package Inspect, cached.
func (c *Cache) Inspect(path string) *Target { return c.inspect(path, path) }

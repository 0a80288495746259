package vmtest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// The initramfs is written in the "newc" cpio format (the only one the kernel unpacks) by
// this code rather than by cpio(1): it needs a device node (/dev/console) and root ownership
// without running as root or building a staging tree, and it is a few dozen lines.

// initramfsEntry is one file, directory or device node of the initramfs.
type initramfsEntry struct {
	mode     uint32 // type and permission bits (S_IF* | perm)
	hostPath string // regular file content read from here, or
	data     []byte // regular file content
	devMajor uint32 // for device nodes
	devMinor uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFCHR = 0o020000
)

// Initramfs is an initramfs under construction: guest path -> entry.
type Initramfs struct {
	entries map[string]initramfsEntry
}

// NewInitramfs returns an initramfs with the directories init mounts on and a /dev/console
// node, which the kernel needs at boot to give init its stdin/stdout/stderr.
func NewInitramfs() *Initramfs {
	fs := &Initramfs{entries: map[string]initramfsEntry{}}
	for _, d := range []string{"/bin", "/dev", "/proc", "/sys", "/tmp", "/run", "/root"} {
		fs.entries[d] = initramfsEntry{mode: sIFDIR | 0o755}
	}
	fs.entries["/tmp"] = initramfsEntry{mode: sIFDIR | 0o1777}
	fs.entries["/dev/console"] = initramfsEntry{mode: sIFCHR | 0o600, devMajor: 5, devMinor: 1}
	return fs
}

// AddFile adds the host file hostPath as guestPath with permission perm; parent directories
// are created.
func (fs *Initramfs) AddFile(guestPath, hostPath string, perm uint32) error {
	if _, err := os.Stat(hostPath); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	fs.addParents(guestPath)
	fs.entries[path.Clean(guestPath)] = initramfsEntry{mode: sIFREG | perm, hostPath: hostPath}
	return nil
}

// AddData adds a file with the given content.
func (fs *Initramfs) AddData(guestPath string, data []byte, perm uint32) {
	fs.addParents(guestPath)
	fs.entries[path.Clean(guestPath)] = initramfsEntry{mode: sIFREG | perm, data: data}
}

func (fs *Initramfs) addParents(p string) {
	for d := path.Dir(path.Clean(p)); d != "/" && d != "."; d = path.Dir(d) {
		if _, ok := fs.entries[d]; !ok {
			fs.entries[d] = initramfsEntry{mode: sIFDIR | 0o755}
		}
	}
}

// WriteTo writes the archive in cpio newc format. Entries are sorted so parents come before
// children and the output is reproducible.
func (fs *Initramfs) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &countingWriter{w: bw}
	names := make([]string, 0, len(fs.entries))
	for n := range fs.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	ino := uint32(1)
	for _, n := range names {
		e := fs.entries[n]
		if err := writeEntry(cw, strings.TrimPrefix(n, "/"), e, ino); err != nil {
			return cw.n, fmt.Errorf("initramfs %s: %w", n, err)
		}
		ino++
	}
	if err := writeHeader(cw, "TRAILER!!!", 0, 0, 0, 0, 0); err != nil {
		return cw.n, err
	}
	return cw.n, bw.Flush()
}

func writeEntry(w *countingWriter, name string, e initramfsEntry, ino uint32) error {
	switch e.mode &^ 0o7777 {
	case sIFDIR, sIFCHR:
		return writeHeader(w, name, ino, e.mode, 0, e.devMajor, e.devMinor)
	}
	var size int64
	var r io.Reader
	if e.hostPath != "" {
		fh, err := os.Open(e.hostPath)
		if err != nil {
			return err
		}
		defer fh.Close()
		st, err := fh.Stat()
		if err != nil {
			return err
		}
		size, r = st.Size(), fh
	} else {
		size, r = int64(len(e.data)), bytes.NewReader(e.data)
	}
	if size > 0xffffffff {
		return fmt.Errorf("file too large for cpio newc (%d bytes)", size)
	}
	if err := writeHeader(w, name, ino, e.mode, uint32(size), 0, 0); err != nil {
		return err
	}
	n, err := io.Copy(w, r)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("file changed while packing (%d of %d bytes)", n, size)
	}
	return pad4(w)
}

// writeHeader writes a newc header: magic 070701, 13 eight-digit hex fields, the name with its
// NUL, padded to a multiple of four. Owner and group are 0 (root), mtime 0 (reproducible).
func writeHeader(w *countingWriter, name string, ino, mode, size, rdevMajor, rdevMinor uint32) error {
	nlink := uint32(1)
	if mode&^0o7777 == sIFDIR {
		nlink = 2
	}
	_, err := fmt.Fprintf(w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%s\x00",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0, name)
	if err != nil {
		return err
	}
	return pad4(w)
}

func pad4(w *countingWriter) error {
	if r := w.n % 4; r != 0 {
		_, err := w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// checkStatic returns an error unless path is a statically linked x86-64 ELF executable: the
// initramfs has no dynamic loader and no libc.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s: built for %s, the VMs are x86-64", path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(p.Open())
			return fmt.Errorf("%s: dynamically linked (interpreter %s); build it with CGO_ENABLED=0",
				path, strings.TrimRight(string(interp), "\x00"))
		}
	}
	return nil
}

package vmtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestInitramfsNewc(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "prog")
	if err := os.WriteFile(host, []byte("#!binary\x00\x01\x02"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := NewInitramfs()
	if err := fs.AddFile("/bin/sub/prog", host, 0o755); err != nil {
		t.Fatal(err)
	}
	fs.AddData("/jobs.json", []byte(`{"jobs":[]}`), 0o644)
	if err := fs.AddFile("/missing", filepath.Join(dir, "nope"), 0o644); err == nil {
		t.Error("adding a missing file: want an error")
	}
	var buf bytes.Buffer
	n, err := fs.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || n%4 != 0 {
		t.Errorf("wrote %d bytes, buffer has %d (must be a multiple of 4)", n, buf.Len())
	}

	entries := readNewc(t, buf.Bytes())
	want := map[string]struct {
		mode uint32
		data string
		rdev [2]uint32
	}{
		"bin":          {sIFDIR | 0o755, "", [2]uint32{}},
		"bin/sub":      {sIFDIR | 0o755, "", [2]uint32{}},
		"bin/sub/prog": {sIFREG | 0o755, "#!binary\x00\x01\x02", [2]uint32{}},
		"jobs.json":    {sIFREG | 0o644, `{"jobs":[]}`, [2]uint32{}},
		"dev/console":  {sIFCHR | 0o600, "", [2]uint32{5, 1}},
		"tmp":          {sIFDIR | 0o1777, "", [2]uint32{}},
	}
	for name, w := range want {
		e, ok := entries[name]
		if !ok {
			t.Errorf("%s missing from the archive", name)
			continue
		}
		if e.mode != w.mode || e.data != w.data || e.rdev != w.rdev {
			t.Errorf("%s: mode %o data %q rdev %v, want %o %q %v", name, e.mode, e.data, e.rdev, w.mode, w.data, w.rdev)
		}
	}

	// Cross-check with GNU cpio when it is installed.
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -t: %v", err)
		}
		if !strings.Contains(string(out), "bin/sub/prog\n") || !strings.Contains(string(out), "dev/console\n") {
			t.Errorf("cpio -t listing lacks entries:\n%s", out)
		}
	}
}

type newcEntry struct {
	mode uint32
	data string
	rdev [2]uint32
}

// readNewc is an independent reader of the format, for the test.
func readNewc(t *testing.T, b []byte) map[string]newcEntry {
	t.Helper()
	res := map[string]newcEntry{}
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nameSize := field(1), field(6), field(9), field(10), field(11)
		if uid, gid := field(2), field(3); uid != 0 || gid != 0 {
			t.Errorf("owner %d:%d, want root", uid, gid)
		}
		name := string(b[off+110 : off+110+int(nameSize)-1])
		off = align(off + 110 + int(nameSize))
		data := string(b[off : off+int(size)])
		off = align(off + int(size))
		if name == "TRAILER!!!" {
			return res
		}
		res[name] = newcEntry{mode: mode, data: data, rdev: [2]uint32{rmaj, rmin}}
	}
}

func TestCheckStatic(t *testing.T) {
	if err := checkStatic("/bin/sh"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/sh: %v, want a dynamically-linked error", err)
	}
	notELF := filepath.Join(t.TempDir(), "x")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if err := checkStatic(notELF); err == nil {
		t.Error("script: want an error")
	}
}

func TestVMMemory(t *testing.T) {
	for _, tt := range []struct {
		initrdMB int64
		want     int
	}{{8, 320}, {40, 384}, {100, 576}, {183, 832}} {
		if got := vmMemoryMB(tt.initrdMB << 20); got != tt.want {
			t.Errorf("vmMemoryMB(%d MB) = %d, want %d", tt.initrdMB, got, tt.want)
		}
	}
}

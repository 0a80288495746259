package tls

import (
	"bytes"
	"compress/gzip"
	cryptotls "crypto/tls"
	"debug/elf"
	"debug/gosym"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// checkPclntab compares the in-place reader with debug/gosym, the reader
// discovery used before, on every function of a table: same entry and end
// for the first function of each name.
func checkPclntab(t *testing.T, what string, data []byte, text uint64) {
	t.Helper()
	tab, err := parsePclntab(data, text)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	want, err := gosym.NewTable(nil, gosym.NewLineTable(data, text))
	if err != nil {
		t.Fatalf("%s: gosym: %v", what, err)
	}
	if len(want.Funcs) == 0 || tab.nfunc != len(want.Funcs) {
		t.Fatalf("%s: %d functions, gosym has %d", what, tab.nfunc, len(want.Funcs))
	}
	// Every name at once would be quadratic: a stride through the table,
	// and the functions discovery asks for.
	names := []string{goRead, goWrite, "runtime.memmove", "no.such.function"}
	for i := 0; i < len(want.Funcs); i += 1 + len(want.Funcs)/200 {
		names = append(names, want.Funcs[i].Name)
	}
	for i, got := range tab.lookup(names...) {
		fn := want.LookupFunc(names[i])
		switch {
		case fn == nil && got.Name != "":
			t.Errorf("%s: %s found at %#x, gosym has none", what, names[i], got.Entry)
		case fn != nil && (got.Name != fn.Name || got.Entry != fn.Entry || got.End != fn.End):
			t.Errorf("%s: %s is %+v, gosym says [%#x, %#x)", what, names[i], got, fn.Entry, fn.End)
		}
	}
}

func TestPclntabMatchesGosym(t *testing.T) {
	type build struct{ toolchain, arch string }
	builds := []build{{goToolchains[0], "arm64"}} // the builds TestGoTLS makes
	for _, tc := range goToolchains {
		builds = append(builds, build{tc, "amd64"})
	}
	for _, bd := range builds {
		b := buildGoArch(t, "goserver", bd.toolchain, bd.arch)
		for _, bin := range []string{b.full, b.stripped} {
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			data, err := f.Section(".gopclntab").Data()
			if err != nil {
				t.Fatal(err)
			}
			checkPclntab(t, bd.toolchain+"/"+bd.arch+"/"+filepath.Base(bin), data, textStart(f, data))
			f.Close()
		}
	}
	// A Go 1.15 table (the Go 1.2 layout) from the Go distribution's own
	// debug/gosym tests: built from
	// package main; func main() { println("hello") } at text 0x1001000.
	gz, err := os.ReadFile(filepath.Join(runtime.GOROOT(), "src/debug/gosym/testdata/pcln115.gz"))
	if err != nil {
		t.Skipf("no Go 1.15 table in GOROOT: %v", err)
	}
	r, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	checkPclntab(t, "go1.15", data, 0x1001000)
}

func TestPclntabMalformed(t *testing.T) {
	b := buildGo(t, "goserver", goToolchains[0])
	f, err := elf.Open(b.stripped)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := f.Section(".gopclntab").Data()
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"short":          func(d []byte) []byte { return d[:12] },
		"unknown magic":  func(d []byte) []byte { d[0] = 0x12; return d },
		"header cut":     func(d []byte) []byte { return d[:40] },
		"too many funcs": func(d []byte) []byte { f.ByteOrder.PutUint64(d[8:], 1<<40); return d },
		"table past end": func(d []byte) []byte { f.ByteOrder.PutUint64(d[8+7*8:], 1<<40); return d },
	} {
		if _, err := parsePclntab(mutate(bytes.Clone(data)), textStart(f, data)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestDiscoveryAllocs bounds what discovering a Go TLS program allocates:
// the table is read in place and DWARF one unit at a time, so the cost no
// longer grows with the binary. Measured (go1.26.8): the test binary 35 kB
// (6.1 MB through debug/gosym), goserver with DWARF 9.7 MB (20.8 MB),
// stripped 35 kB (4.7 MB); kube-apiserver 0.1 MB (184 MB).
func TestDiscoveryAllocs(t *testing.T) {
	// The test binary links crypto/tls's Read and Write (through this
	// reference), so it is a Go TLS program of some size that every test
	// run has at hand.
	runtime.KeepAlive([]any{(*cryptotls.Conn).Read, (*cryptotls.Conn).Write})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := buildGo(t, "goserver", goToolchains[0])
	for _, c := range []struct {
		path  string
		dwarf bool
		limit uint64 // bytes
	}{
		{self, false, 256 << 10}, // go test links without DWARF
		{b.full, true, 12 << 20},
		{b.stripped, false, 256 << 10},
	} {
		f, err := elf.Open(c.path)
		if err != nil {
			t.Fatal(err)
		}
		pcln := f.Section(".gopclntab").Size
		f.Close()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tg := Inspect(c.path)
		runtime.ReadMemStats(&after)
		if !tg.Instrumentable() || tg.Stack != StackGo || len(tg.Funcs) != 2 || (tg.FD.Source == "dwarf") != c.dwarf {
			t.Fatalf("%s: got %+v (%s, fd %+v)", c.path, tg, tg.Detail, tg.FD)
		}
		got := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: .gopclntab %d kB, discovery allocated %d kB in %d objects", filepath.Base(c.path), pcln>>10, got>>10, after.Mallocs-before.Mallocs)
		if got > c.limit {
			t.Errorf("%s: discovery allocated %d kB, want at most %d kB (.gopclntab is %d kB)", c.path, got>>10, c.limit>>10, pcln>>10)
		}
	}
}

// FuzzPclntab feeds corrupted function tables to the in-place reader: it
// must answer or fail, never panic (inspect would recover, at the cost of
// the target).
func FuzzPclntab(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/exe"); err == nil {
		if ef, err := elf.NewFile(bytes.NewReader(b)); err == nil {
			if s := ef.Section(".gopclntab"); s != nil {
				if d, err := s.Data(); err == nil {
					f.Add(d[:min(len(d), 64<<10)])
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if tab, err := parsePclntab(data, 0x401000); err == nil {
			tab.lookup(goRead, goWrite, "runtime.memmove")
		}
	})
}

package tls

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const libssl3 = "/usr/lib/x86_64-linux-gnu/libssl.so.3"

// nmAddrs returns the address of each defined function nm lists: the
// independent ground truth for the offsets discovery computes.
func nmAddrs(t *testing.T, args ...string) map[string]uint64 {
	t.Helper()
	out, err := exec.Command("nm", append([]string{"--defined-only"}, args...)...).Output()
	if err != nil {
		t.Fatalf("nm %v: %v", args, err)
	}
	m := map[string]uint64{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && (f[1] == "T" || f[1] == "t") {
			name, _, _ := strings.Cut(f[2], "@")
			v, _ := strconv.ParseUint(f[0], 16, 64)
			m[name] = v
		}
	}
	return m
}

// checkOpenSSLFuncs asserts every found function sits at nm's address and
// that its file offset holds the bytes objdump shows there.
func checkOpenSSLFuncs(t *testing.T, path string, tg *Target, truth map[string]uint64) {
	t.Helper()
	for _, want := range []string{"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_set_fd", "SSL_free"} {
		fn := tg.Func(want)
		if fn == nil {
			t.Fatalf("%s: %s not found; funcs %+v", path, want, tg.Funcs)
		}
		if fn.Addr != truth[want] {
			t.Errorf("%s: %s at %#x, nm says %#x", path, want, fn.Addr, truth[want])
		}
		checkBytesAt(t, path, fn.Addr, fn.Offset)
	}
}

// checkBytesAt compares 8 bytes at a file offset with objdump's bytes at
// the virtual address.
func checkBytesAt(t *testing.T, path string, addr, off uint64) {
	t.Helper()
	out, err := exec.Command("objdump", "-s", fmt.Sprintf("--start-address=%#x", addr),
		fmt.Sprintf("--stop-address=%#x", addr+8), path).Output()
	if err != nil {
		t.Fatalf("objdump: %v", err)
	}
	var hex string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == strconv.FormatUint(addr, 16) {
			hex = f[1] + f[2]
		}
	}
	f, _ := os.Open(path)
	defer f.Close()
	b := make([]byte, 8)
	f.ReadAt(b, int64(off))
	if got := fmt.Sprintf("%x", b); got != hex {
		t.Errorf("%s: bytes at file offset %#x are %s, objdump shows %s at %#x", path, off, got, hex, addr)
	}
}

func TestLibssl3(t *testing.T) {
	tg := Inspect(libssl3)
	if !tg.Instrumentable() || tg.Stack != StackOpenSSL || tg.Static {
		t.Fatalf("got %+v", tg)
	}
	out, _ := exec.Command("openssl", "version").Output() // "OpenSSL 3.0.19 27 Jan 2026 (Library: ...)"
	if want := strings.Fields(string(out))[1]; tg.Version != want {
		t.Errorf("version %q, openssl version says %q", tg.Version, want)
	}
	checkOpenSSLFuncs(t, libssl3, tg, nmAddrs(t, "-D", libssl3))
	if tg.ID.Ino == 0 {
		t.Error("no file identity")
	}
}

func TestNodeBuiltinOpenSSL(t *testing.T) {
	tg := Inspect("/usr/bin/node")
	if !tg.Instrumentable() || tg.Stack != StackOpenSSL || !tg.Static {
		t.Fatalf("got %+v", tg)
	}
	out, err := exec.Command("node", "-p", "process.versions.openssl").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(out)); tg.Version != want {
		t.Errorf("version %q, node says %q", tg.Version, want)
	}
	checkOpenSSLFuncs(t, "/usr/bin/node", tg, nmAddrs(t, "-D", "/usr/bin/node"))
}

func TestStaticCOpenSSL(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "static")
	cmd := exec.Command("gcc", "-O1", "-o", bin, "testdata/static.c",
		"/usr/lib/x86_64-linux-gnu/libssl.a", "/usr/lib/x86_64-linux-gnu/libcrypto.a", "-lpthread", "-ldl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	tg := Inspect(bin)
	if !tg.Instrumentable() || tg.Stack != StackOpenSSL || !tg.Static {
		t.Fatalf("unstripped: got %+v", tg)
	}
	truth := nmAddrs(t, bin)
	for _, n := range []string{"SSL_read", "SSL_write"} {
		if fn := tg.Func(n); fn == nil || fn.Addr != truth[n] {
			t.Errorf("%s: got %+v, nm says %#x", n, fn, truth[n])
		} else {
			checkBytesAt(t, bin, fn.Addr, fn.Offset)
		}
	}
	if out, err := exec.Command("strip", bin).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v %s", err, out)
	}
	tg = Inspect(bin)
	if tg.Stack != StackOpenSSL || tg.Reason != ReasonNoSymbols || tg.Version == "" {
		t.Fatalf("stripped: want openssl/no_symbols with a version, got %+v", tg)
	}
}

func TestNotTLS(t *testing.T) {
	for path, reason := range map[string]Reason{
		"/usr/bin/ldd":           ReasonNotELF, // a shell script
		"/usr/bin/true":          ReasonNone,   // ELF, no TLS
		"/nonexistent/otelbee-x": ReasonUnreadable,
	} {
		tg := Inspect(path)
		if tg.Stack != StackNone || tg.Reason != reason {
			t.Errorf("%s: got stack %q reason %q (%s), want none/%q", path, tg.Stack, tg.Reason, tg.Detail, reason)
		}
	}
	// curl imports SSL_read from libssl, and the openssl command also carries
	// OpenSSL's version text: the library is the target, not they.
	for _, bin := range []string{"/usr/bin/curl", "/usr/bin/openssl"} {
		if tg := Inspect(bin); tg.Stack != StackNone {
			t.Errorf("%s: got %+v", bin, tg)
		}
	}
}

func TestGnuTLSLibrary(t *testing.T) {
	lib := gnutlsLib(t)
	tg := Inspect(lib)
	if tg.Stack != StackGnuTLS || tg.Reason != ReasonUnsupportedStack {
		t.Fatalf("got %+v", tg)
	}
}

// gnutlsLib is the GnuTLS library gnutls-cli loads.
func gnutlsLib(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("gnutls-cli"); err != nil {
		t.Skip("gnutls-cli not installed (make deps installs gnutls-bin)")
	}
	out, err := exec.Command("ldd", "/usr/bin/gnutls-cli").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`=> (\S*libgnutls\.so\S*)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no libgnutls in ldd output:\n%s", out)
	}
	// ldd names the soname link; maps name the file it resolves to.
	path, err := filepath.EvalSymlinks(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// goToolchains are the toolchains the Go tests build with and the struct
// offset table covers: the local one first, then from the module proxy
// (cached in the module cache after the first download) the newest release
// and the one before the two supported upstream.
var goToolchains = []string{"go1.26.8", "go1.27.3", "go1.25.9"}

type goBuild struct{ full, stripped string }

// buildRoot holds the Go builds several tests share; TestMain removes it.
var buildRoot string

func TestMain(m *testing.M) {
	var err error
	if buildRoot, err = os.MkdirTemp("", "otelbee-tls-test-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(buildRoot)
	os.Exit(code)
}

var (
	goBuildsMu sync.Mutex
	goBuilds   = map[string]goBuild{}
)

// buildGo builds a testdata program with a toolchain, with and without
// -ldflags=-s -w, once per test binary run.
func buildGo(t *testing.T, prog, toolchain string) goBuild {
	t.Helper()
	return buildGoArch(t, prog, toolchain, "amd64")
}

// buildGoArch is buildGo for another GOARCH (cross-compiled).
func buildGoArch(t *testing.T, prog, toolchain, arch string) goBuild {
	t.Helper()
	goBuildsMu.Lock()
	defer goBuildsMu.Unlock()
	key := prog + "/" + toolchain + "/" + arch
	if b, ok := goBuilds[key]; ok {
		return b
	}
	src := t.TempDir()
	code, err := os.ReadFile(filepath.Join("testdata", prog, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "main.go"), code, 0o644)
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module "+prog+"\n\ngo 1.25\n"), 0o644)
	dir, err := os.MkdirTemp(buildRoot, prog+"-")
	if err != nil {
		t.Fatal(err)
	}
	b := goBuild{full: filepath.Join(dir, prog), stripped: filepath.Join(dir, prog+"-stripped")}
	for bin, flags := range map[string][]string{b.full: nil, b.stripped: {"-ldflags=-s -w"}} {
		cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, flags...), ".")...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+toolchain, "GOFLAGS=", "GOWORK=off", "GOARCH="+arch)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s with %s: %v\n%s", prog, toolchain, err, out)
		}
	}
	goBuilds[key] = b
	return b
}

// objdumpRets lists the addresses of RET instructions `go tool objdump`
// shows in a function of an unstripped binary.
func objdumpRets(t *testing.T, bin, fn string) []uint64 {
	t.Helper()
	out, err := exec.Command("go", "tool", "objdump", "-s", "^"+regexp.QuoteMeta(fn)+"$", bin).Output()
	if err != nil {
		t.Fatalf("go tool objdump: %v", err)
	}
	var rets []uint64
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[len(f)-1] == "RET" {
			v, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
			if err == nil {
				rets = append(rets, v)
			}
		}
	}
	return rets
}

// objdumpInsts is fn's instructions in bin as go tool objdump shows them,
// in order: address and text.
func objdumpInsts(t *testing.T, bin, fn string) (addrs []uint64, text []string) {
	t.Helper()
	out, err := exec.Command("go", "tool", "objdump", "-s", "^"+regexp.QuoteMeta(fn)+"$", bin).Output()
	if err != nil {
		t.Fatalf("go tool objdump: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// file:line, address, bytes, instruction: tab-separated, with
		// empty fields between
		var f []string
		for _, s := range strings.Split(line, "\t") {
			if s = strings.TrimSpace(s); s != "" {
				f = append(f, s)
			}
		}
		if len(f) < 4 {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
		if err != nil {
			continue
		}
		addrs = append(addrs, v)
		text = append(text, f[3])
	}
	return addrs, text
}

func TestGoTLS(t *testing.T) {
	type build struct{ toolchain, arch string }
	builds := []build{{goToolchains[0], "arm64"}} // arm64asm, cross-compiled
	for _, tc := range goToolchains {
		builds = append(builds, build{tc, "amd64"})
	}
	for _, bd := range builds {
		tc, arch := bd.toolchain, bd.arch
		t.Run(tc+"/"+arch, func(t *testing.T) {
			b := buildGoArch(t, "goserver", tc, arch)
			full, stripped := Inspect(b.full), Inspect(b.stripped)
			for _, tg := range []*Target{full, stripped} {
				if !tg.Instrumentable() || tg.Stack != StackGo || tg.Version != tc || !tg.RegABI || tg.Arch != arch {
					t.Fatalf("%s: got %+v (%s)", tg.Path, tg, tg.Detail)
				}
			}
			f, err := elf.Open(b.full)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			syms, _ := f.Symbols()
			for _, name := range []string{goRead, goWrite} {
				i := slices.IndexFunc(syms, func(s elf.Symbol) bool { return s.Name == name })
				if i < 0 {
					t.Fatalf("%s not in the unstripped symbol table", name)
				}
				sf, ff := stripped.Func(name), full.Func(name)
				if sf.Addr != syms[i].Value || sf.Offset != ff.Offset || !slices.Equal(sf.Returns, ff.Returns) {
					t.Errorf("%s: stripped %+v, unstripped %+v, symbol table %#x", name, sf, ff, syms[i].Value)
				}
				if arch == "amd64" { // binutils here reads only x86 files
					checkBytesAt(t, b.full, sf.Addr, sf.Offset)
				}
				// Returns are file offsets; objdump shows addresses.
				var got []uint64
				for _, r := range sf.Returns {
					got = append(got, r-sf.Offset+sf.Addr)
				}
				if want := objdumpRets(t, b.full, name); len(want) == 0 || !slices.Equal(got, want) {
					t.Errorf("%s: returns at %#x, objdump shows RET at %#x", name, got, want)
				}
				if arch == "amd64" {
					// The entry probe: past the stack check's branch to
					// morestack (which restarts the function, so a probe
					// on it or before it runs twice in a call that grows
					// the stack), on the frame's push.
					at := sf.EntryProbe() - sf.Offset + sf.Addr
					addrs, text := objdumpInsts(t, b.full, name)
					i := slices.Index(addrs, at)
					if i < 2 || !strings.HasPrefix(text[i-1], "JBE") || !strings.Contains(text[i-2], "0x10(R14)") || text[i] != "PUSHQ BP" {
						t.Errorf("%s: entry probe at %#x, want the PUSHQ BP after the stack check's JBE (%v, %v)", name, at, addrs[:min(len(addrs), 6)], text[:min(len(text), 6)])
					}
				}
				if name == goRead && arch == "amd64" {
					// The receiver's slot at the copy: where the prologue
					// spills ax, as objdump shows it.
					if sf.CopyRecvSlot == 0 || sf.CopyRecvSlot != ff.CopyRecvSlot {
						t.Errorf("%s: receiver slot stripped %#x, unstripped %#x", name, sf.CopyRecvSlot, ff.CopyRecvSlot)
					}
					out, err := exec.Command("go", "tool", "objdump", "-s", "^"+regexp.QuoteMeta(name)+"$", b.full).Output()
					if err != nil {
						t.Fatal(err)
					}
					if spill := fmt.Sprintf("MOVQ AX, %#x(SP)", sf.CopyRecvSlot); !strings.Contains(string(out), spill) {
						t.Errorf("%s: objdump shows no %q", name, spill)
					}
				}
			}
			if full.FD.Source != "dwarf" || stripped.FD.Source != "table" {
				t.Fatalf("fd offsets from %s and %s, want dwarf and table", full.FD.Source, stripped.FD.Source)
			}
			dw, tb := *full.FD, *stripped.FD
			dw.Source, tb.Source = "", ""
			if dw != tb {
				t.Errorf("fd offsets: DWARF %+v, table %+v", dw, tb)
			}
		})
	}
}

// TestGoFDTable checks the committed table against the DWARF of every
// toolchain's build; OTELBEE_UPDATE_GOFD_TABLE=1 rewrites it from them.
func TestGoFDTable(t *testing.T) {
	got := map[string]GoFD{}
	for _, tc := range goToolchains {
		b := buildGo(t, "goserver", tc)
		f, err := elf.Open(b.full)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := goFDFromDWARF(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc, err)
		}
		fd.Source = ""
		minor, _ := goMinor(tc)
		got["go1."+strconv.Itoa(minor)] = *fd
	}
	if os.Getenv("OTELBEE_UPDATE_GOFD_TABLE") == "1" {
		var buf bytes.Buffer
		buf.WriteString("// Code generated by TestGoFDTable (OTELBEE_UPDATE_GOFD_TABLE=1); DO NOT EDIT.\n\npackage tls\n\n" +
			"// goFDTable holds GoFD per Go minor release, for binaries without DWARF; the\n" +
			"// offsets are the same on amd64 and arm64.\nvar goFDTable = map[string]GoFD{\n")
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := got[k]
			fmt.Fprintf(&buf, "\t%q: {ConnConn: %d, IfaceData: %d, TCPConnConn: %d, ConnFD: %d, NetFDPfd: %d, FDSysfd: %d},\n",
				k, v.ConnConn, v.IfaceData, v.TCPConnConn, v.ConnFD, v.NetFDPfd, v.FDSysfd)
		}
		buf.WriteString("}\n")
		if err := os.WriteFile("gofd_table.go", buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	for k, v := range got {
		if goFDTable[k] != v {
			t.Errorf("%s: table %+v, DWARF %+v (regenerate with OTELBEE_UPDATE_GOFD_TABLE=1)", k, goFDTable[k], v)
		}
	}
}

func TestGoWithoutTLS(t *testing.T) {
	b := buildGo(t, "gohello", goToolchains[0])
	for _, bin := range []string{b.full, b.stripped} {
		if tg := Inspect(bin); tg.Stack != StackNone || tg.Reason != ReasonNone {
			t.Errorf("%s: got %+v", bin, tg)
		}
	}
}

func TestGoUnknownVersionWithoutDWARF(t *testing.T) {
	b := buildGo(t, "goserver", goToolchains[0])
	saved := goFDTable
	goFDTable = map[string]GoFD{}
	defer func() { goFDTable = saved }()
	if tg := Inspect(b.stripped); tg.Stack != StackGo || tg.Reason != ReasonUnsupportedVersion {
		t.Errorf("stripped, table empty: got %+v", tg)
	}
	if tg := Inspect(b.full); !tg.Instrumentable() || tg.FD.Source != "dwarf" {
		t.Errorf("with DWARF, table empty: got %+v", tg)
	}
}

func TestGoMinor(t *testing.T) {
	for v, want := range map[string]int{"go1.26.8": 26, "go1.27rc1": 27, "go1.9": 9, "devel +abc": -1, "go2.0": -1} {
		got, ok := goMinor(v)
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("goMinor(%q) = %d, want %d", v, got, want)
		}
	}
}

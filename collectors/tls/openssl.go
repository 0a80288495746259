package tls

import (
	"debug/elf"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// OpenSSL functions: the first two are required; the _ex variants exist
// from 1.1.1; the rest let the kernel side join an SSL* to its socket
// (SSL_set_fd family, for connections set up after attach) and forget it
// (SSL_free). The descriptor of connections set up before attach comes from
// the read/write syscall SSL_read/SSL_write make on the same thread, which
// needs no struct offsets and so no per-version table.
var (
	sslRequired = []string{"SSL_read", "SSL_write"}
	sslOptional = []string{"SSL_read_ex", "SSL_write_ex", "SSL_set_fd", "SSL_set_rfd", "SSL_set_wfd",
		"SSL_do_handshake", "SSL_shutdown", "SSL_free"}
)

// versionText matches OPENSSL_VERSION_TEXT, e.g. "OpenSSL 3.0.19 27 Jan 2026"
// or "OpenSSL 1.1.1w  11 Sep 2023"; BoringSSL's reads "OpenSSL 1.1.1
// (compatible; BoringSSL)".
var versionText = regexp.MustCompile(`OpenSSL (\d+\.\d+\.\d+[a-z]?)(?:\+\w+)?(?: +\d{1,2} [A-Z][a-z]{2} \d{4}| \(compatible; BoringSSL\))`)

// sslSymbols finds the OpenSSL functions defined in f, from the dynamic
// symbols first (libssl, and executables such as node that export their
// built-in OpenSSL), then the full symbol table of an unstripped static
// build. undefined reports that f only imports SSL_read: the library it
// loads is the target, not f.
func sslSymbols(f *elf.File) (found map[string]uint64, undefined bool) {
	want := map[string]bool{}
	for _, n := range append(sslRequired, sslOptional...) {
		want[n] = true
	}
	found = map[string]uint64{}
	collect := func(syms []elf.Symbol) {
		for _, s := range syms {
			if !want[s.Name] || elf.ST_TYPE(s.Info) != elf.STT_FUNC {
				continue
			}
			if s.Section == elf.SHN_UNDEF || s.Value == 0 {
				if s.Name == "SSL_read" {
					undefined = true
				}
				continue
			}
			found[s.Name] = s.Value
		}
	}
	if syms, err := f.DynamicSymbols(); err == nil {
		collect(syms)
	}
	if _, ok := found["SSL_read"]; !ok {
		if syms, err := f.Symbols(); err == nil {
			collect(syms)
		}
	}
	return found, undefined
}

// openSSLVersion reads OPENSSL_VERSION_TEXT from a file's read-only data.
func openSSLVersion(f *elf.File) (version string, boring bool) {
	var m []byte
	scanSection(f.Section(".rodata"), 64, func(b []byte) bool {
		m = versionText.Find(b)
		return m != nil
	})
	if m == nil {
		return "", false
	}
	sub := versionText.FindSubmatch(m)
	return string(sub[1]), strings.Contains(string(m), "BoringSSL")
}

// needsLibssl reports whether f loads OpenSSL's shared libraries.
func needsLibssl(f *elf.File) bool {
	libs, _ := f.ImportedLibraries()
	for _, l := range libs {
		if strings.HasPrefix(l, "libssl.so") || strings.HasPrefix(l, "libcrypto.so") {
			return true
		}
	}
	return false
}

// libsslMajor reads the major version from a libssl soname: libssl.so.3,
// libssl.so.1.1.
func libsslMajor(f *elf.File, path string) string {
	name := filepath.Base(path)
	if sonames, err := f.DynString(elf.DT_SONAME); err == nil && len(sonames) > 0 {
		name = sonames[0]
	}
	if _, v, ok := strings.Cut(name, ".so."); ok {
		return v
	}
	return ""
}

// inspectOpenSSL fills t for a file that carries OpenSSL functions, or
// reports false when it carries none.
func inspectOpenSSL(f *elf.File, t *Target, open func(string) (*elf.File, error)) bool {
	found, imports := sslSymbols(f)
	isLib := strings.HasPrefix(filepath.Base(t.Path), "libssl.so")
	if len(found) == 0 && !isLib {
		// A static build whose symbols were stripped still carries its
		// version text: TLS is there, but nothing to attach to. A program
		// that loads libssl (the openssl command) carries the text too; its
		// library is the target.
		if imports || needsLibssl(f) {
			return false
		}
		if v, boring := openSSLVersion(f); v != "" {
			t.Stack, t.Static, t.Version, t.Reason = StackOpenSSL, true, v, ReasonNoSymbols
			if boring {
				t.Stack, t.Reason = StackBoringSSL, ReasonUnsupportedStack
			}
			t.Detail = "OpenSSL " + v + " is built in but its functions have no symbols"
			return true
		}
		return false
	}
	t.Stack = StackOpenSSL
	t.Static = !isLib
	// libssl's version text lives in libcrypto; an executable carries both.
	if isLib {
		t.Version = libsslMajor(f, t.Path)
		dir, base := filepath.Split(t.Path)
		if c, err := open(filepath.Join(dir, strings.Replace(base, "libssl", "libcrypto", 1))); err == nil {
			if v, _ := openSSLVersion(c); v != "" {
				t.Version = v
			}
			c.Close()
		}
	} else if v, boring := openSSLVersion(f); v != "" {
		t.Version = v
		if boring {
			t.Stack, t.Reason, t.Detail = StackBoringSSL, ReasonUnsupportedStack, "BoringSSL: not yet supported"
			return true
		}
	}
	if t.Version != "" && (strings.HasPrefix(t.Version, "0.") || strings.HasPrefix(t.Version, "1.0")) {
		t.Reason, t.Detail = ReasonUnsupportedVersion, "OpenSSL "+t.Version+": only 1.1 and 3.x are supported"
		return true
	}
	var missing []string
	for _, n := range append(sslRequired, sslOptional...) {
		addr, ok := found[n]
		if !ok {
			if n == sslRequired[0] || n == sslRequired[1] {
				missing = append(missing, n)
			}
			continue
		}
		off, err := fileOffset(f, addr)
		if err != nil {
			missing = append(missing, n)
			continue
		}
		t.Funcs = append(t.Funcs, Func{Name: n, Addr: addr, Offset: off})
	}
	if len(missing) > 0 {
		t.Reason, t.Detail = ReasonMissingSymbol, "missing "+strings.Join(missing, ", ")
		return true
	}
	cheapOpenSSL(f, t)
	return true
}

// Inner functions: what SSL_read and SSL_read_ex (SSL_write and
// SSL_write_ex) both call with the _ex arguments; OpenSSL 1.1.1 and 3.x's
// ssl_read_internal and ssl_write_internal.
const (
	sslReadInner  = "ssl_read_internal"
	sslWriteInner = "ssl_write_internal"
)

// cheapOpenSSL moves t's probes onto instructions the kernel emulates
// (probepoint.go), amd64 only. A function whose first instruction is one
// (node's SSL_read begins with push %rbp) keeps its probes. Debian's
// SSL_read begins with sub $0x18,%rsp, single-stepped: 14 µs a call on a
// VM. It is a wrapper: both it and SSL_read_ex call ssl_read_internal(ssl,
// buf, num, &count), which begins with a push; that function is probed
// instead (entry and uretprobe there, with the _ex programs), once per call
// of either. It is found as the first call both wrappers make on their
// straight path with the arguments untouched; when they disagree, or the
// inner function has no cheap entry, the exported functions are probed as
// before.
func cheapOpenSSL(f *elf.File, t *Target) {
	if t.Arch != "amd64" {
		return
	}
	const window = 256
	if h := t.Func("SSL_do_handshake"); h != nil {
		cheapEntry(f, t.Arch, h, window, nil, false, false) // its program reads no argument
	}
	for _, pair := range [][3]string{{"SSL_read", "SSL_read_ex", sslReadInner}, {"SSL_write", "SSL_write_ex", sslWriteInner}} {
		plain, ex := t.Func(pair[0]), t.Func(pair[1])
		cheapEntry(f, t.Arch, plain, window, sysvArgs, true, false)
		if ex != nil {
			cheapEntry(f, t.Arch, ex, window, sysvArgs, true, false)
		}
		if ex == nil || (emulatedAt(f, plain) && emulatedAt(f, ex)) {
			continue
		}
		inner, ok := commonCallee(f, plain, ex)
		if !ok {
			continue
		}
		off, err := fileOffset(f, inner)
		if err != nil {
			continue
		}
		fn := Func{Name: pair[2], Addr: inner, Offset: off, Inner: true}
		cheapEntry(f, t.Arch, &fn, window, sysvArgs, true, false)
		if !emulatedAt(f, &fn) {
			continue // no cheaper than the wrappers
		}
		t.Funcs = append(t.Funcs, fn)
	}
}

// emulatedAt reports whether fn's entry probe is on an instruction the
// kernel emulates.
func emulatedAt(f *elf.File, fn *Func) bool {
	code, err := readCode(f, fn.Addr+(fn.EntryProbe()-fn.Offset), 16)
	if err != nil {
		return false
	}
	inst, err := x86asm.Decode(code, 64)
	return err == nil && emulated(inst)
}

// commonCallee is the function both plain and ex call first with their
// arguments (rdi, rsi: the SSL* and the buffer; for ex also rdx, rcx)
// unchanged.
func commonCallee(f *elf.File, plain, ex *Func) (uint64, bool) {
	code := func(fn *Func) []byte {
		b, _ := readCode(f, fn.Addr, 256)
		return b
	}
	// SSL_read converts its int length to a size_t and points rcx at its
	// count: only the SSL* and the buffer are passed through.
	a, ok1 := firstCall(code(plain), plain.Addr, []x86asm.Reg{x86asm.RDI, x86asm.RSI})
	b, ok2 := firstCall(code(ex), ex.Addr, sysvArgs)
	return a, ok1 && ok2 && a == b && a != plain.Addr && a != ex.Addr
}

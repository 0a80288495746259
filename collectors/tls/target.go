// Package tls finds, without BPF, what a uprobe data source needs to see TLS
// plaintext: which TLS stack an executable or library carries, the file
// offsets of its read and write functions, and, for Go, the offsets of every
// return instruction and the struct path from tls.Conn to the socket
// descriptor. What cannot be instrumented gets one Reason from a small fixed
// set, so a collector can count unobserved TLS per service with bounded
// cardinality. See docs/tls.md.
package tls

// Stack is the TLS implementation found in a file.
type Stack string

const (
	StackNone      Stack = ""
	StackOpenSSL   Stack = "openssl"
	StackGo        Stack = "go"
	StackGnuTLS    Stack = "gnutls"
	StackNSS       Stack = "nss"
	StackBoringSSL Stack = "boringssl"
	StackWolfSSL   Stack = "wolfssl"
	StackMbedTLS   Stack = "mbedtls"
)

// Reason says why a file's TLS cannot be instrumented; empty when it can.
// The set is fixed: it becomes a metric attribute.
type Reason string

const (
	ReasonNone               Reason = ""
	ReasonUnsupportedStack   Reason = "unsupported_stack"   // GnuTLS, NSS, BoringSSL, ...
	ReasonNoSymbols          Reason = "no_symbols"          // TLS code present, its functions not findable
	ReasonMissingSymbol      Reason = "missing_symbol"      // some but not all required functions found
	ReasonUnsupportedVersion Reason = "unsupported_version" // OpenSSL < 1.1, Go outside the table without DWARF, pre-regabi Go
	ReasonNotELF             Reason = "not_elf"
	ReasonUnsupportedArch    Reason = "unsupported_arch"
	ReasonUnreadable         Reason = "unreadable"
	ReasonDisassembly        Reason = "disassembly_failed" // a Go function's returns could not be found
)

// Reasons lists every Reason a Target can carry, for pre-declaring metrics.
var Reasons = []Reason{ReasonUnsupportedStack, ReasonNoSymbols, ReasonMissingSymbol,
	ReasonUnsupportedVersion, ReasonNotELF, ReasonUnsupportedArch, ReasonUnreadable, ReasonDisassembly}

// FileID identifies a file independently of the path a process reached it
// by: one uprobe set per FileID, however many processes map it.
type FileID struct {
	Dev, Ino uint64
}

// Func is one function a uprobe attaches to.
type Func struct {
	Name string
	// Addr is the function's virtual address in the ELF file; Offset is its
	// file offset, what a uprobe is attached at.
	Addr, Offset uint64
	// Returns holds the file offset of every return instruction (Go only:
	// uretprobes rewrite the return address, which a moving goroutine stack
	// cannot tolerate).
	Returns []uint64
	// Probe, when not 0, is the file offset the entry probe goes at
	// instead of Offset: the first instruction the kernel emulates rather
	// than single-steps, with the registers the probe reads (and, for a
	// function with a uretprobe, the stack pointer) as at entry
	// (probepoint.go).
	Probe uint64
	// Copy, when not 0, is the file offset of the one call in Go's
	// (*Conn).Read that copies the plaintext out (runtime.memmove): probed
	// instead of the returns (onlyCallTo).
	Copy uint64
	// CopyRecvSlot, when not 0, is where Read's receiver is at Copy: the
	// stack slot, in bytes from the stack pointer, its prologue spilled it
	// to and nothing else writes (recvSlot). The copy's probe then needs no
	// entry probe.
	CopyRecvSlot uint64
	// Inner: not an exported function but the one the exported pair
	// (SSL_read and SSL_read_ex) both call with the _ex arguments
	// (ssl, buf, num, size_t *count), probed instead of them.
	Inner bool
}

// EntryProbe is the file offset an entry probe (and a uretprobe) goes at.
func (f *Func) EntryProbe() uint64 {
	if f.Probe != 0 {
		return f.Probe
	}
	return f.Offset
}

// GoFD is the path from a *crypto/tls.Conn to its socket descriptor, all in
// bytes: Conn.conn is a net.Conn interface whose data word (at IfaceData)
// points to a *net.TCPConn; TCPConn embeds net.conn whose fd is a *netFD;
// netFD.pfd is an internal/poll.FD holding Sysfd.
type GoFD struct {
	ConnConn    uint64 // crypto/tls.Conn.conn
	IfaceData   uint64 // data word of an interface value
	TCPConnConn uint64 // net.TCPConn.conn
	ConnFD      uint64 // net.conn.fd
	NetFDPfd    uint64 // net.netFD.pfd
	FDSysfd     uint64 // internal/poll.FD.Sysfd
	Source      string // "dwarf" or "table"
}

// Target is what discovery found in one file.
type Target struct {
	Path  string
	ID    FileID
	Stack Stack
	// Version: "3.0.19" (or "3" when only the major is known) for OpenSSL,
	// "go1.26.8" for Go.
	Version string
	Static  bool   // the TLS stack is built into an executable
	Arch    string // "amd64" or "arm64"
	Reason  Reason
	Detail  string // human-readable elaboration of Reason, for logs
	Funcs   []Func
	// RegABI: Go arguments and results travel in registers (Go >= 1.17 on
	// amd64, 1.18 on arm64).
	RegABI bool
	FD     *GoFD
}

// Instrumentable reports whether a uprobe set can be attached.
func (t *Target) Instrumentable() bool { return t.Stack != StackNone && t.Reason == ReasonNone }

// Func returns the named function, or nil.
func (t *Target) Func(name string) *Func {
	for i := range t.Funcs {
		if t.Funcs[i].Name == name {
			return &t.Funcs[i]
		}
	}
	return nil
}

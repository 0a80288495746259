package tls

import (
	"testing"

	"github.com/cilium/ebpf"
)

func TestPlan(t *testing.T) {
	// Distinct non-nil programs, told apart by pointer; never loaded.
	progs := make([]ebpf.Program, 13)
	p := Programs{SSLReadEntry: &progs[0], SSLReadExEntry: &progs[1], SSLReadReturn: &progs[2],
		SSLWriteEntry: &progs[3], SSLWriteExEntry: &progs[4], SSLWriteReturn: &progs[5],
		GoReadEntry: &progs[6], GoReadReturn: &progs[7], GoWriteEntry: &progs[8], GoWriteReturn: &progs[9],
		SSLHandshakeEntry: &progs[10], GoReadCopy: &progs[11], GoReadCopySlot: &progs[12]}
	ossl := &Target{Stack: StackOpenSSL, Funcs: []Func{{Name: "SSL_read", Offset: 0x10}, {Name: "SSL_write", Offset: 0x20},
		{Name: "SSL_read_ex", Offset: 0x30}, {Name: "SSL_free", Offset: 0x40}, {Name: "SSL_do_handshake", Offset: 0x50}}}
	gotls := &Target{Stack: StackGo, Funcs: []Func{{Name: goRead, Offset: 0x100, Returns: []uint64{0x120, 0x140}},
		{Name: goWrite, Offset: 0x200, Returns: []uint64{0x210}}}}
	noExit := p
	noExit.GoWriteReturn = nil
	noCopy := p
	noCopy.GoReadCopy = nil
	noSlot := p
	noSlot.GoReadCopySlot = nil
	// Probes moved onto emulated instructions (probepoint.go).
	cheap := &Target{Stack: StackOpenSSL, Funcs: []Func{{Name: "SSL_read", Offset: 0x10}, {Name: "SSL_write", Offset: 0x20, Probe: 0x24},
		{Name: "SSL_read_ex", Offset: 0x30}, {Name: "SSL_do_handshake", Offset: 0x50, Probe: 0x58},
		{Name: sslReadInner, Offset: 0x60, Inner: true}}}
	goCopy := &Target{Stack: StackGo, Funcs: []Func{{Name: goRead, Offset: 0x100, Probe: 0x104, Copy: 0x130, Returns: []uint64{0x120, 0x140}},
		{Name: goWrite, Offset: 0x200, Probe: 0x209, Returns: []uint64{0x210}}}}
	goSlot := &Target{Stack: StackGo, Funcs: []Func{{Name: goRead, Offset: 0x100, Probe: 0x104, Copy: 0x130, CopyRecvSlot: 0x68, Returns: []uint64{0x120, 0x140}},
		{Name: goWrite, Offset: 0x200, Probe: 0x209, Returns: []uint64{0x210}}}}
	for _, tc := range []struct {
		name  string
		t     *Target
		progs Programs
		want  []probe
	}{
		{"openssl without write_ex", ossl, p, []probe{
			{0x10, &progs[0], false}, {0x10, &progs[2], true},
			{0x30, &progs[1], false}, {0x30, &progs[2], true},
			{0x20, &progs[3], false}, {0x20, &progs[5], true},
			{0x50, &progs[10], false},
		}},
		{"go: entry and every return", gotls, p, []probe{
			{0x100, &progs[6], false}, {0x120, &progs[7], false}, {0x140, &progs[7], false},
			{0x200, &progs[8], false}, {0x210, &progs[9], false},
		}},
		{"go write without return program", gotls, noExit, []probe{
			{0x100, &progs[6], false}, {0x120, &progs[7], false}, {0x140, &progs[7], false},
			{0x200, &progs[8], false},
		}},
		{"openssl: the inner read function for both reads, write moved", cheap, p, []probe{
			{0x60, &progs[1], false}, {0x60, &progs[2], true},
			{0x24, &progs[3], false}, {0x24, &progs[5], true},
			{0x58, &progs[10], false},
		}},
		{"go: moved entries, Read's copy instead of its returns", goCopy, p, []probe{
			{0x104, &progs[6], false}, {0x130, &progs[11], false},
			{0x209, &progs[8], false}, {0x210, &progs[9], false},
		}},
		{"go: the receiver's slot known, Read's copy alone", goSlot, p, []probe{
			{0x130, &progs[12], false},
			{0x209, &progs[8], false}, {0x210, &progs[9], false},
		}},
		{"go: the slot known, no slot program: entry and copy", goSlot, noSlot, []probe{
			{0x104, &progs[6], false}, {0x130, &progs[11], false},
			{0x209, &progs[8], false}, {0x210, &progs[9], false},
		}},
		{"go: no copy program, Read's returns", goCopy, noCopy, []probe{
			{0x104, &progs[6], false}, {0x120, &progs[7], false}, {0x140, &progs[7], false},
			{0x209, &progs[8], false}, {0x210, &progs[9], false},
		}},
		{"gnutls", &Target{Stack: StackGnuTLS}, p, nil},
		{"no programs", ossl, Programs{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := plan(tc.t, &tc.progs)
			if len(got) != len(tc.want) {
				t.Fatalf("%d probes, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("probe %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// markKernel records SetProcess calls.
type markKernel struct{ marks map[int]bool }

func (k *markKernel) SetGoFD(FileID, *GoFD, uint64) error { return nil }
func (k *markKernel) DeleteGoFD(FileID)                   {}
func (k *markKernel) SetProcess(pid int, on bool)         { k.marks[pid] = on }

// TestReleaseUnmarksUnscannedProcess: the kernel marks some processes
// itself (an OpenSSL handshake, a new process of an instrumented Go
// executable) before the attacher has scanned them; one that exits before
// its scan must be unmarked all the same, or its mark outlives it (a later
// process with its pid inherits it) and fills the kernel's map.
func TestReleaseUnmarksUnscannedProcess(t *testing.T) {
	k := &markKernel{marks: map[int]bool{}}
	a := &Attacher{kernel: k, pids: map[int]*procFiles{}}
	a.release(4242)
	if on, ok := k.marks[4242]; !ok || on {
		t.Errorf("exit of a process never scanned: kernel marks %v, want 4242 unmarked", k.marks)
	}
}

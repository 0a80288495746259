package tls

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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
func (k *markKernel) SetFileGate(uint32, bool) error      { return nil }

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

// orderLog records, in order, what the attacher does to the kernel: links
// made and closed, Go offsets and OpenSSL gates set and cleared.
type orderLog struct {
	mu     sync.Mutex
	events []string
}

func (l *orderLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
}

func (l *orderLog) SetGoFD(FileID, *GoFD, uint64) error { l.add("gofd set"); return nil }
func (l *orderLog) DeleteGoFD(FileID)                   { l.add("gofd delete") }
func (l *orderLog) SetProcess(int, bool)                {}
func (l *orderLog) SetFileGate(slot uint32, open bool) error {
	l.add("gate %d %v", slot, open)
	return nil
}

type loggedLink struct {
	l    *orderLog
	name string
}

func (k loggedLink) Close() error { k.l.add("close %s", k.name); return nil }

// testAttacher is an attacher whose links and kernel calls go to log.
func testAttacher(progs Programs, log *orderLog) *Attacher {
	a := &Attacher{cfg: AttachConfig{MaxFiles: 64, MaxProbes: 1024}, progs: progs, kernel: log,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), files: map[FileID]*attached{}, pids: map[int]*procFiles{},
		logged: map[FileID]bool{}, unobserved: map[UnobservedKey]uint64{}}
	a.attach = func(_ string, p probe, cookie uint64) (io.Closer, error) {
		kind := "entry"
		if p.ret || p.prog == progs.GoReadReturn || p.prog == progs.GoReadCopy {
			kind = "return"
		}
		name := fmt.Sprintf("%#x/%s", p.offset, kind)
		log.add("link %s cookie %d", name, cookie)
		return loggedLink{log, name}, nil
	}
	return a
}

func testPrograms() Programs {
	progs := make([]ebpf.Program, 13)
	return Programs{SSLReadEntry: &progs[0], SSLReadExEntry: &progs[1], SSLReadReturn: &progs[2],
		SSLWriteEntry: &progs[3], SSLWriteExEntry: &progs[4], SSLWriteReturn: &progs[5],
		GoReadEntry: &progs[6], GoReadReturn: &progs[7], GoWriteEntry: &progs[8],
		SSLHandshakeEntry: &progs[10], SSLHandshakeReturn: &progs[9], GoReadCopy: &progs[11], GoReadCopySlot: &progs[12],
		Cookies: true}
}

var (
	testOpenSSL = &Target{Stack: StackOpenSSL, ID: FileID{Dev: 1, Ino: 1}, Path: "/libssl.so.3",
		Funcs: []Func{{Name: "SSL_read", Offset: 0x10}, {Name: "SSL_write", Offset: 0x20},
			{Name: "SSL_read_ex", Offset: 0x30}, {Name: "SSL_do_handshake", Offset: 0x50}}}
	testGo = &Target{Stack: StackGo, ID: FileID{Dev: 1, Ino: 2}, Path: "/server", FD: &GoFD{},
		Funcs: []Func{{Name: goRead, Offset: 0x100, Copy: 0x130, Returns: []uint64{0x120}}, {Name: goWrite, Offset: 0x200}}}
)

// TestGateAfterLastLink: a file's programs act only once all its links are
// on, and stop before the first one goes, so that no call is seen in part:
// Go's offsets (which every Go program looks up) are written after the last
// link and deleted before any is closed; an OpenSSL file's links carry its
// gate slot as their cookie, the gate opened after the last link and
// closed before the first close. Return probes go on before entries.
func TestGateAfterLastLink(t *testing.T) {
	for _, tc := range []struct {
		target     *Target
		open, shut string
	}{
		{testOpenSSL, "gate 1 true", "gate 1 false"},
		{testGo, "gofd set", "gofd delete"},
	} {
		t.Run(string(tc.target.Stack), func(t *testing.T) {
			log := &orderLog{}
			a := testAttacher(testPrograms(), log)
			a.mu.Lock()
			if r := a.instrumentLocked(tc.target, tc.target.Path); r != ReasonNone {
				t.Fatalf("instrumenting: %q", r)
			}
			a.detachLocked(tc.target.ID, a.files[tc.target.ID])
			a.mu.Unlock()
			ev := log.events
			open, shut := slices.Index(ev, tc.open), slices.Index(ev, tc.shut)
			if open < 0 || shut < 0 {
				t.Fatalf("no %q or %q: %q", tc.open, tc.shut, ev)
			}
			var links, closes, entries int
			sawEntry := false
			for i, e := range ev {
				switch {
				case strings.HasPrefix(e, "link "):
					links++
					if i > open {
						t.Errorf("%q after %q: %q", e, tc.open, ev)
					}
					if strings.Contains(e, "/entry") {
						sawEntry = true
						entries++
					} else if sawEntry {
						t.Errorf("return probe %q after an entry: %q", e, ev)
					}
					cookie := "cookie 0"
					if tc.target.Stack == StackOpenSSL {
						cookie = "cookie 1"
					}
					if !strings.HasSuffix(e, cookie) {
						t.Errorf("%q: want %s", e, cookie)
					}
				case strings.HasPrefix(e, "close "):
					closes++
					if i < shut {
						t.Errorf("%q before %q: %q", e, tc.shut, ev)
					}
				}
			}
			if links == 0 || closes != links || entries == 0 || entries == links {
				t.Errorf("%d links (%d entries), %d closed: %q", links, entries, closes, ev)
			}
			if a.slots[1] {
				t.Errorf("slot 1 still taken after the detach")
			}
		})
	}
}

// TestGateNoCookies: without attach cookies (5.10) OpenSSL links carry
// none and no gate is set; the link order is all that is left.
func TestGateNoCookies(t *testing.T) {
	log := &orderLog{}
	p := testPrograms()
	p.Cookies = false
	a := testAttacher(p, log)
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := a.instrumentLocked(testOpenSSL, testOpenSSL.Path); r != ReasonNone {
		t.Fatalf("instrumenting: %q", r)
	}
	for _, e := range log.events {
		if strings.HasPrefix(e, "gate") || (strings.HasPrefix(e, "link") && !strings.HasSuffix(e, "cookie 0")) {
			t.Errorf("%q without cookies", e)
		}
	}
}

// TestStackOffUnobserved: a stack whose programs did not load is not
// instrumented; each of its processes is counted unobserved with reason
// program_failed once per file (not again at its rescans), and the other
// stack is instrumented as usual.
func TestStackOffUnobserved(t *testing.T) {
	for _, off := range []Stack{StackOpenSSL, StackGo} {
		t.Run(string(off), func(t *testing.T) {
			log := &orderLog{}
			p := testPrograms()
			p.Off = map[Stack]bool{off: true}
			a := testAttacher(p, log)
			// A Go program that links libssl too, and a second process of it.
			proc := &Process{Comm: "both", Targets: []*Target{testGo, testOpenSSL}, Open: []string{testGo.Path, testOpenSSL.Path}}
			for range 3 { // rescans
				a.scanProcess(100, proc)
				a.scanProcess(101, proc)
			}
			on := testGo
			if off == StackGo {
				on = testOpenSSL
			}
			files := a.Instrumented()
			if len(files) != 1 || files[on.Path] != 2 {
				t.Errorf("instrumented %v, want %s with 2 users", files, on.Path)
			}
			s := a.Stats()
			want := map[UnobservedKey]uint64{{Service: "both", Stack: off, Reason: ReasonProgramFailed}: 2}
			if off == StackOpenSSL {
				// libssl beside an instrumented Go executable is not the
				// process's TLS (scanPID): not counted.
				want = map[UnobservedKey]uint64{}
			}
			if fmt.Sprint(s.Unobserved) != fmt.Sprint(want) {
				t.Errorf("unobserved %v, want %v", s.Unobserved, want)
			}
			// A process of the stack that is off alone.
			only := &Process{Comm: "alone", Targets: []*Target{off2target(off)}, Open: []string{off2target(off).Path}}
			a.scanProcess(102, only)
			a.scanProcess(102, only)
			if n := a.Stats().Unobserved[UnobservedKey{Service: "alone", Stack: off, Reason: ReasonProgramFailed}]; n != 1 {
				t.Errorf("unobserved{alone, %s, program_failed} = %d, want 1: %v", off, n, a.Stats().Unobserved)
			}
			if len(a.logged) != 0 {
				t.Errorf("files logged for program_failed: %v (the stack's failure is logged once at start)", a.logged)
			}
		})
	}
}

func off2target(s Stack) *Target {
	if s == StackGo {
		return testGo
	}
	return testOpenSSL
}

// TestGateSlotsRunOut: with every OpenSSL gate slot taken (FileSlots-1
// files), one more OpenSSL file is refused as limit, with no link made,
// while the files and probes bounds are not reached; a Go file (no slot)
// is still instrumented, and a detach frees a slot for the next.
func TestGateSlotsRunOut(t *testing.T) {
	log := &orderLog{}
	a := testAttacher(testPrograms(), log)
	a.cfg.MaxFiles, a.cfg.MaxProbes = 4096, 1<<20
	a.mu.Lock()
	defer a.mu.Unlock()
	ossl := func(i int) *Target {
		t := *testOpenSSL
		t.ID = FileID{Dev: 2, Ino: uint64(i)}
		t.Path = fmt.Sprintf("/libssl-%d.so", i)
		return &t
	}
	for i := 1; i < FileSlots; i++ {
		if r := a.instrumentLocked(ossl(i), ""); r != ReasonNone {
			t.Fatalf("file %d: %q", i, r)
		}
	}
	links := len(log.events)
	if r := a.instrumentLocked(ossl(FileSlots), ""); r != ReasonLimit {
		t.Fatalf("file %d with every slot taken: %q, want %q", FileSlots, r, ReasonLimit)
	}
	if len(log.events) != links {
		t.Errorf("kernel calls for the refused file: %q", log.events[links:])
	}
	if r := a.instrumentLocked(testGo, ""); r != ReasonNone {
		t.Errorf("a Go file with every OpenSSL slot taken: %q", r)
	}
	first := ossl(1)
	a.detachLocked(first.ID, a.files[first.ID])
	if r := a.instrumentLocked(ossl(FileSlots+1), ""); r != ReasonNone {
		t.Errorf("after a detach: %q", r)
	}
	if got := a.files[FileID{Dev: 2, Ino: FileSlots + 1}].slot; got != 1 {
		t.Errorf("the freed slot not reused: %d", got)
	}
}

// TestScanQueueOrder: the attacher's queue hands scans out by due time,
// those due at the same time in the order they were queued (an exec's
// immediate scan before the same process's exit queued later), and a full
// cycle of a burst's entries does not allocate once the heap has grown.
func TestScanQueueOrder(t *testing.T) {
	a := &Attacher{}
	t0 := time.Unix(1000, 0)
	in := []scan{
		{pid: 1, due: t0.Add(5 * time.Second)},
		{pid: 1, due: t0},
		{pid: 1, due: t0.Add(100 * time.Millisecond)},
		{pid: 1, due: t0, exit: true},
		{pid: 2, due: t0},
		{pid: 1, due: t0.Add(time.Second)},
	}
	for _, s := range in {
		a.enqueue(s)
	}
	var got []string
	for len(a.queue) > 0 {
		s := a.queue.pop()
		got = append(got, fmt.Sprintf("%d %v %v", s.pid, s.due.Sub(t0), s.exit))
	}
	want := []string{"1 0s false", "1 0s true", "2 0s false", "1 100ms false", "1 1s false", "1 5s false"}
	if !slices.Equal(got, want) {
		t.Errorf("order:\n got %q\nwant %q", got, want)
	}

	// Many equal and unequal dues, pushed with pops in between: what is
	// left comes out earliest first, equal dues in queuing order.
	rng := rand.New(rand.NewPCG(1, 2))
	var prev scan
	popped := 0
	for i := 0; i < 5000; i++ {
		a.enqueue(scan{pid: i, due: t0.Add(time.Duration(rng.IntN(50)) * time.Millisecond)})
		if rng.IntN(3) == 0 {
			a.queue.pop()
		}
	}
	for len(a.queue) > 0 {
		s := a.queue.pop()
		if popped > 0 && (s.due.Before(prev.due) || s.due.Equal(prev.due) && s.seq < prev.seq) {
			t.Fatalf("popped due %v seq %d after due %v seq %d", s.due.Sub(t0), s.seq, prev.due.Sub(t0), prev.seq)
		}
		prev, popped = s, popped+1
	}
	allocs := testing.AllocsPerRun(10, func() {
		for i := 0; i < 64; i++ {
			a.enqueue(scan{pid: i, due: t0.Add(time.Duration(i%7) * time.Millisecond)})
		}
		for len(a.queue) > 0 {
			a.queue.pop()
		}
	})
	if allocs != 0 {
		t.Errorf("a push and pop cycle allocated %.0f times", allocs)
	}
}

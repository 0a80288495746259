package capture

import (
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/otelbee/otelbee/collectors/hook"
)

// tracedPipe is a pipe whose write end the L7 write programs capture as a
// decided HTTP/1 client connection, for the ring buffer's tests. The
// entry+exit pair: every kernel has it (the single exit programs, the socket
// tracepoints and the TLS sources end in the same l7_capture); a pipe
// because the syscall source captures by descriptor, and a blocking raw
// descriptor keeps each write one call. A goroutine empties the read end.
type tracedPipe struct {
	w        int // the write end
	events   *ebpf.Map
	counters *ebpf.Map
	wOpen    bool
}

// newTracedPipe loads the programs with a ring of ringBytes (0: the
// object's) and data_room room (0: none); withClose also attaches the close
// program, so that closing the write end (closeWrite) emits its close record.
func newTracedPipe(t *testing.T, ringBytes, room uint32, withClose bool) *tracedPipe {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	spec, err := loadL7()
	if err != nil {
		t.Fatal(err)
	}
	if ringBytes != 0 {
		spec.Maps[l7MapEvents].MaxEntries = ringBytes
	}
	if err := spec.Variables[l7VarDataRoom].Set(room); err != nil {
		t.Fatal(err)
	}
	// The process's mark, as user space's pick-up sets it for the entries
	// it puts in conns (seen.go): without it the calls never look.
	marks := make([]byte, spec.Variables[l7VarConnsSeen].Size())
	marks[os.Getpid()%len(marks)] = 1
	if err := spec.Variables[l7VarConnsSeen].Set(marks); err != nil {
		t.Fatal(err)
	}
	var objs struct {
		Enter    *ebpf.Program `ebpf:"http_write_enter"`
		Exit     *ebpf.Program `ebpf:"http_write_exit"`
		Close    *ebpf.Program `ebpf:"http_close_enter"`
		Conns    *ebpf.Map     `ebpf:"conns"`
		Events   *ebpf.Map     `ebpf:"events"`
		Counters *ebpf.Map     `ebpf:"counters"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatalf("loading the write and close programs: %v", err)
	}
	for _, c := range []interface{ Close() error }{objs.Enter, objs.Exit, objs.Close, objs.Conns, objs.Events, objs.Counters} {
		t.Cleanup(func() { c.Close() })
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	tp := &tracedPipe{w: p[1], events: objs.Events, counters: objs.Counters, wOpen: true}
	t.Cleanup(func() {
		unix.Close(p[0])
		tp.closeWrite(t)
	})
	go func() {
		buf := make([]byte, 65536)
		for {
			if n, err := unix.Read(p[0], buf); n <= 0 || err != nil {
				return
			}
		}
	}()
	key := uint64(os.Getpid())<<32 | uint64(p[1])
	info := l7ConnInfo{
		StartNs: uint64(time.Now().UnixNano()),
		Role:    uint8(l7HttpRoleROLE_CLIENT),
		Family:  unix.AF_INET,
		State:   uint8(l7HttpConnStateSTATE_DECIDED),
		Proto:   uint8(ProtoHTTP1),
		Source:  uint8(l7L7SourceSOURCE_SYSCALL),
	}
	if err := objs.Conns.Update(key, &info, ebpf.UpdateNoExist); err != nil {
		t.Fatal(err)
	}
	links := []struct {
		name string
		prog *ebpf.Program
	}{{"sys_enter_write", objs.Enter}, {"sys_exit_write", objs.Exit}}
	if withClose {
		links = append(links, struct {
			name string
			prog *ebpf.Program
		}{"sys_enter_close", objs.Close})
	}
	for _, l := range links {
		lk, err := link.Tracepoint("syscalls", l.name, l.prog, nil)
		if err != nil {
			t.Fatalf("attaching %s: %v", l.name, err)
		}
		t.Cleanup(func() { lk.Close() })
	}
	return tp
}

// write writes msg n times, each in one call.
func (tp *tracedPipe) write(t *testing.T, msg []byte, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if w, err := unix.Write(tp.w, msg); w != len(msg) || err != nil {
			t.Fatalf("write %d: %d, %v", i, w, err)
		}
	}
}

// closeWrite closes the write end once.
func (tp *tracedPipe) closeWrite(t *testing.T) {
	if !tp.wOpen {
		return
	}
	tp.wOpen = false
	if err := unix.Close(tp.w); err != nil {
		t.Error(err)
	}
}

// counter is a kernel counter summed over the CPUs.
func (tp *tracedPipe) counter(c l7HttpCounter) uint64 {
	return hook.SumCounters(tp.counters, CounterSlots)[c]
}

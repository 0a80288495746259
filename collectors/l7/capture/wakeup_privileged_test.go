package capture

import (
	"encoding/binary"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// irqWorkCounter counts the irq_work runs on the calling thread (locked to
// it): a ring buffer record that wakes its reader queues one, as an
// interrupt the CPU sends itself, taken in the writer's own system call.
func irqWorkCounter(t *testing.T) int {
	t.Helper()
	var id []byte
	var err error
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if id, err = os.ReadFile(dir + "/events/irq_vectors/irq_work_entry/id"); err == nil {
			break
		}
	}
	if err != nil {
		t.Skipf("skipping: no irq_vectors:irq_work_entry tracepoint: %v", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(id)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_TRACEPOINT,
		Config: n,
		Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
	}
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		t.Fatalf("opening an irq_work_entry counter: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func readCounter(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != nil {
		t.Fatalf("reading the irq_work_entry counter: %v", err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

// TestPrivilegedRingWakeupsPerBatch: records go to the ring buffer without
// waking its reader each, but once per 32 KiB of unread records
// (RINGBUF_WAKEUP_BYTES in bpf/l7.c), and never fewer: writes on a
// descriptor tracked as a decided HTTP/1 connection, with nothing reading
// the ring, wake it exactly floor(N * record / 32 KiB) times in the default
// 4 MiB ring (before, every record written while 32 KiB were unread woke it:
// 879 of 1,000 here); in a 64 KiB ring, where a crossing two CPUs miss at
// once has no next one before the ring is full, every record once half of
// it is unread (80 of 200). All records are in the ring.
func TestPrivilegedRingWakeupsPerBatch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	const record = 8 + 64 + 200 // the ring's header, the record's, 200 bytes
	t.Run("default_ring", func(t *testing.T) { testRingWakeups(t, 0, 1000, 1000*record/(32*1024)) })
	// records 121..200 take the unread data to 32 KiB and past
	t.Run("small_ring", func(t *testing.T) { testRingWakeups(t, 64*1024, 200, 80) })
}

// testRingWakeups makes writes records of 200 bytes in a ring of ringBytes
// (0: the object's) and wants them to wake the reader want times.
func testRingWakeups(t *testing.T, ringBytes uint32, writes int, want uint64) {
	tp := newTracedPipe(t, ringBytes, 0, false)
	const size = 200
	msg := []byte("POST /wakeups HTTP/1.1\r\nHost: x\r\nContent-Length: 160\r\n\r\n")
	msg = append(msg, make([]byte, size-len(msg))...)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd := irqWorkCounter(t)
	before := readCounter(t, fd)
	tp.write(t, msg, writes)
	wakeups := readCounter(t, fd) - before

	if submitted := tp.counter(l7HttpCounterHC_EVENTS_SUBMITTED); submitted != uint64(writes) {
		t.Fatalf("%d records submitted, want %d", submitted, writes)
	}
	rd, err := ringbuf.NewReader(tp.events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now().Add(time.Second))
	for i := 0; i < writes; i++ {
		rec, err := rd.Read()
		if err != nil {
			t.Fatalf("record %d of %d: %v", i, writes, err)
		}
		if len(rec.RawSample) != 64+size {
			t.Fatalf("record %d: %d bytes, want %d", i, len(rec.RawSample), 64+size)
		}
	}
	// Another source's irq_work may run on this thread now and then (a
	// profiler's sample): one or two more are tolerated, none fewer.
	if wakeups < want || wakeups > want+2 {
		t.Fatalf("%d writes of 200 bytes woke the reader %d times, want %d", writes, wakeups, want)
	}
	t.Logf("%d records, %d wakeups", writes, wakeups)
}

package capture

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// TestPrivilegedRingReader: the batch reader (ring.go) against the kernel's
// ring buffer, a 64 KiB one written through 80 times by the L7 write
// programs on a tracked pipe while it reads: every record submitted is
// handed over once and whole, or was counted dropped with the ring full
// (received + dropped = written, exactly); the last ones, which may wake
// no one, come within the poll interval; and Close ends a read waiting
// for more at once.
func TestPrivilegedRingReader(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	spec, err := loadL7()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[l7MapEvents].MaxEntries = 64 * 1024
	var objs struct {
		Enter    *ebpf.Program `ebpf:"http_write_enter"`
		Exit     *ebpf.Program `ebpf:"http_write_exit"`
		Conns    *ebpf.Map     `ebpf:"conns"`
		Events   *ebpf.Map     `ebpf:"events"`
		Counters *ebpf.Map     `ebpf:"counters"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatalf("loading the write programs: %v", err)
	}
	defer objs.Enter.Close()
	defer objs.Exit.Close()
	defer objs.Conns.Close()
	defer objs.Events.Close()
	defer objs.Counters.Close()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
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
	for _, l := range []struct {
		name string
		prog *ebpf.Program
	}{{"sys_enter_write", objs.Enter}, {"sys_exit_write", objs.Exit}} {
		tp, err := link.Tracepoint("syscalls", l.name, l.prog, nil)
		if err != nil {
			t.Fatalf("attaching %s: %v", l.name, err)
		}
		defer tp.Close()
	}
	rd, err := newRing(objs.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if !rd.pollable {
		t.Log("the ring's descriptor is not in the runtime's poller: unix.Poll waits")
	}

	const writes, size = 20000, 200
	msg := []byte("POST /ring HTTP/1.1\r\nHost: x\r\nContent-Length: 160\r\n\r\n")
	msg = append(msg, bytes.Repeat([]byte{'r'}, size-len(msg))...)
	received := 0
	var bad error
	var rec Record
	fn := func(b []byte) {
		received++
		if err := Decode(b, &rec); err != nil {
			bad = err
		} else if rec.Type != TypeData || rec.Total != size || !bytes.Equal(rec.Data, msg[:len(rec.Data)]) || len(rec.Data) == 0 {
			bad = errors.New("a record not the one written")
		}
	}
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				readErr <- nil
				return
			default:
			}
			if _, err := rd.read(readPollInterval, fn); err != nil {
				readErr <- err
				return
			}
		}
	}()
	for i := 0; i < writes; i++ {
		if n, err := unix.Write(p[1], msg); n != size || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	sum := func(slot l7HttpCounter) uint64 {
		var per []uint64
		if err := objs.Counters.Lookup(uint32(slot), &per); err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n
	}
	submitted, dropped := sum(l7HttpCounterHC_EVENTS_SUBMITTED), sum(l7HttpCounterHC_DROP_RINGBUF_FULL)
	if submitted+dropped != writes {
		t.Fatalf("%d records submitted and %d dropped, want %d in all", submitted, dropped, writes)
	}
	// The reader's count is its goroutine's: read it once that stopped.
	deadline := time.Now().Add(2*readPollInterval + time.Second)
	for time.Now().Before(deadline) && rd.available() {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * readPollInterval) // the last batch handed over
	close(stop)
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	if bad != nil {
		t.Fatal(bad)
	}
	if uint64(received) != submitted {
		t.Fatalf("%d records read, %d submitted (%d dropped with the ring full)", received, submitted, dropped)
	}
	if received*(DataHdrSize+size) < 10*64*1024 {
		t.Fatalf("%d records read: the ring did not go round ten times", received)
	}
	t.Logf("%d writes: %d read, %d dropped with the ring full", writes, received, dropped)

	// Nothing more comes: a read waits, and Close ends it.
	done := make(chan error, 1)
	go func() {
		_, err := rd.read(time.Minute, fn)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	rd.Close()
	select {
	case err := <-done:
		if !errors.Is(err, errRingClosed) {
			t.Fatalf("a read ended by Close returned %v, want errRingClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not end a read waiting for records within a second")
	}
}

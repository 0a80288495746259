package capture

import (
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// TestPrivilegedCloseRecordOutlivesFullRing: when data fills the ring, the
// close record still gets in. Writes of 200 bytes on a descriptor tracked as
// a decided HTTP/1 connection, nothing reading a 64 KiB ring: the data
// records stop at dataRoom (60 KiB: exactly 225 of 272 bytes each), the 75
// after them are counted as dropped, and the close of the descriptor is the
// ring's last record. Without the room kept (before), the 241st record
// filled the ring and the close record was dropped with the data: user space
// then never learnt the connection ended, nor that its last response was lost.
func TestPrivilegedCloseRecordOutlivesFullRing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs needs root")
	}
	const (
		ringBytes = 64 * 1024
		size      = 200
		record    = 8 + 64 + size // the ring's header, the record's, the data
		writes    = 300
	)
	spec, err := loadL7()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[l7MapEvents].MaxEntries = ringBytes
	if err := spec.Variables[l7VarDataRoom].Set(dataRoom(ringBytes)); err != nil {
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
	defer objs.Enter.Close()
	defer objs.Exit.Close()
	defer objs.Close.Close()
	defer objs.Conns.Close()
	defer objs.Events.Close()
	defer objs.Counters.Close()

	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
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
	}{{"sys_enter_write", objs.Enter}, {"sys_exit_write", objs.Exit}, {"sys_enter_close", objs.Close}} {
		tp, err := link.Tracepoint("syscalls", l.name, l.prog, nil)
		if err != nil {
			t.Fatalf("attaching %s: %v", l.name, err)
		}
		defer tp.Close()
	}

	msg := []byte("POST /room HTTP/1.1\r\nHost: x\r\nContent-Length: 170\r\n\r\n")
	msg = append(msg, make([]byte, size-len(msg))...)
	for i := 0; i < writes; i++ {
		if n, err := unix.Write(p[1], msg); n != size || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if err := unix.Close(p[1]); err != nil {
		t.Fatal(err)
	}

	counter := func(c l7HttpCounter) uint64 {
		var per []uint64
		if err := objs.Counters.Lookup(uint32(c), &per); err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n
	}
	wantData := int(dataRoom(ringBytes) / record)
	if got := counter(l7HttpCounterHC_EVENTS_SUBMITTED); got != uint64(wantData+1) {
		t.Errorf("%d records submitted, want %d data and the close", got, wantData)
	}
	if got := counter(l7HttpCounterHC_DROP_RINGBUF_FULL); got != uint64(writes-wantData) {
		t.Errorf("%d records counted dropped, want %d", got, writes-wantData)
	}
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now().Add(time.Second))
	for i := 0; i <= wantData; i++ {
		rec, err := rd.Read()
		if err != nil {
			t.Fatalf("record %d of %d: %v", i, wantData+1, err)
		}
		typ := rec.RawSample[0]
		switch {
		case i < wantData && typ != uint8(l7HttpEventTypeEVENT_DATA):
			t.Fatalf("record %d: type %d, want data", i, typ)
		case i == wantData && typ != uint8(l7HttpEventTypeEVENT_CLOSE):
			t.Fatalf("the last record: type %d, want the close", typ)
		}
	}
}

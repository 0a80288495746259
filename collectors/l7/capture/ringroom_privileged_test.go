package capture

import (
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
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
	const (
		ringBytes = 64 * 1024
		size      = 200
		record    = 8 + 64 + size // the ring's header, the record's, the data
		writes    = 300
	)
	tp := newTracedPipe(t, ringBytes, dataRoom(ringBytes), true)
	msg := []byte("POST /room HTTP/1.1\r\nHost: x\r\nContent-Length: 170\r\n\r\n")
	msg = append(msg, make([]byte, size-len(msg))...)
	tp.write(t, msg, writes)
	tp.closeWrite(t)
	wantData := int(dataRoom(ringBytes) / record)
	if got := tp.counter(l7HttpCounterHC_EVENTS_SUBMITTED); got != uint64(wantData+1) {
		t.Errorf("%d records submitted, want %d data and the close", got, wantData)
	}
	if got := tp.counter(l7HttpCounterHC_DROP_RINGBUF_FULL); got != uint64(writes-wantData) {
		t.Errorf("%d records counted dropped, want %d", got, writes-wantData)
	}
	rd, err := ringbuf.NewReader(tp.events)
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

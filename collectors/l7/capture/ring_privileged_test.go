package capture

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestPrivilegedRingReader: the batch reader (ring.go) against the kernel's
// ring buffer, a 64 KiB one written through 80 times by the L7 write
// programs on a tracked pipe while it reads: every record submitted is
// handed over once and whole, or was counted dropped with the ring full
// (received + dropped = written, exactly); the last ones, which may wake
// no one, come within the poll interval; and Close ends a read waiting
// for more at once.
func TestPrivilegedRingReader(t *testing.T) {
	tp := newTracedPipe(t, 64*1024, 0, false)
	rd, err := newRing(tp.events)
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
	// Paced first: batches the ring holds, each read before the next, so
	// that it goes round at least ten times whatever the scheduler does (a
	// reader starved by the writing loop read 1,583 records once); then
	// unpaced, so that it overflows too.
	const paced, batch = 5000, 200
	for i := 0; i < paced; i += batch {
		tp.write(t, msg, batch)
		for deadline := time.Now().Add(time.Second); rd.available() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	tp.write(t, msg, writes-paced)
	submitted, dropped := tp.counter(l7HttpCounterHC_EVENTS_SUBMITTED), tp.counter(l7HttpCounterHC_DROP_RINGBUF_FULL)
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

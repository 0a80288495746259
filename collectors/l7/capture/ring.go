package capture

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ring reads the L7 ring buffer (bpf/l7.c events) in batches: every record
// there is handed to the drain's function in one call, the consumer
// position published to the kernel once per ringPublishEvery bytes rather
// than after every record, and the wait for more goes through the Go
// runtime's poller. cilium/ebpf's ringbuf.Reader takes its mutex and
// publishes the position for every record (each store is a cache line the
// producing CPU's next reservation reads back), and waits in a blocking
// epoll_wait of its own, so every wakeup is a blocking system call's return
// and a processor handed back to the thread (docs/benchmarks.md, "Eighth
// pass").
type ring struct {
	mu       sync.Mutex // held by read; Close takes it to unmap
	file     *os.File   // a duplicate of the map's descriptor, non-blocking
	raw      syscall.RawConn
	fd       int  // file's
	pollable bool // file is in the runtime's poller (else unix.Poll)
	closed   atomic.Bool

	consPage, dataPages []byte // the mappings
	cons, prod          *uintptr
	data                []byte // the data pages, mapped twice (a record may wrap)
	mask                uintptr
	size                uintptr
	// buf is the copy of the record handed over: a handler may keep a
	// record's bytes until the next one (Record), and the ring's pages are
	// read-only.
	buf []byte
}

// Ring buffer record header (include/uapi/linux/bpf.h).
const (
	ringHdrSize    = 8
	ringBusyBit    = 1 << 31
	ringDiscardBit = 1 << 30
)

// ringPublishEvery is how much is read before the consumer position is
// published to the kernel mid-batch: often enough that the producers see
// the room (and the unread amount bpf/l7.c's wakeups count stays low while
// the reader keeps up), rarely enough that it is not a store per record.
const ringPublishEvery = 8 << 10

// ringBusySpins bounds how often a batch yields waiting for a record still
// being written before it returns what it read (the next read tries again).
const ringBusySpins = 64

var errRingClosed = errors.New("l7 ring buffer closed")

// newRing maps m, a BPF_MAP_TYPE_RINGBUF, for reading.
func newRing(m *ebpf.Map) (*ring, error) {
	size := uintptr(m.MaxEntries())
	if size == 0 || size&(size-1) != 0 {
		return nil, fmt.Errorf("opening the l7 ring buffer: size %d is not a power of two", size)
	}
	page := os.Getpagesize()
	cons, err := unix.Mmap(m.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping the l7 ring buffer's consumer page: %w", err)
	}
	data, err := unix.Mmap(m.FD(), int64(page), page+2*int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(cons)
		return nil, fmt.Errorf("mapping the l7 ring buffer's data pages: %w", err)
	}
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		if fd > 0 {
			unix.Close(fd)
		}
		unix.Munmap(data)
		unix.Munmap(cons)
		return nil, fmt.Errorf("duplicating the l7 ring buffer's descriptor: %w", err)
	}
	r := &ring{
		fd:        fd,
		file:      os.NewFile(uintptr(fd), "l7-events"),
		consPage:  cons,
		dataPages: data,
		cons:      (*uintptr)(unsafe.Pointer(&cons[0])),
		prod:      (*uintptr)(unsafe.Pointer(&data[0])),
		data:      data[page:],
		mask:      size - 1,
		size:      size,
	}
	// A descriptor the runtime's poller refused has no deadlines: then
	// unix.Poll waits instead.
	r.pollable = r.file.SetReadDeadline(time.Time{}) == nil
	if r.raw, err = r.file.SyscallConn(); err != nil {
		r.Close()
		return nil, fmt.Errorf("opening the l7 ring buffer: %w", err)
	}
	return r, nil
}

// read hands every record in the ring to fn, in order; when there is none
// it first waits for the kernel's wakeup, at most wait. The bytes fn is
// given are valid until its next call. It returns how many records it
// handed over (0: the wait ended with none), errRingClosed once Close was
// called.
func (r *ring) read(wait time.Duration, fn func([]byte)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return 0, errRingClosed
	}
	if n, err := r.consume(fn); n > 0 || err != nil {
		return n, err
	}
	if err := r.wait(wait); err != nil {
		return 0, err
	}
	if r.closed.Load() {
		return 0, errRingClosed
	}
	return r.consume(fn)
}

// available reports whether the kernel wrote past what was read.
func (r *ring) available() bool {
	return atomic.LoadUintptr(r.prod) != atomic.LoadUintptr(r.cons)
}

// wait returns when there may be records, or after d.
func (r *ring) wait(d time.Duration) error {
	if !r.pollable {
		fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(d/time.Millisecond)); err != nil && err != unix.EINTR {
			return fmt.Errorf("waiting for the l7 ring buffer: %w", err)
		}
		return nil
	}
	if err := r.file.SetReadDeadline(time.Now().Add(d)); err != nil {
		return r.waitErr(err)
	}
	// The function runs before the wait and after each readiness the
	// poller reports: true ends it.
	return r.waitErr(r.raw.Read(func(uintptr) bool { return r.closed.Load() || r.available() }))
}

func (r *ring) waitErr(err error) error {
	switch {
	case r.closed.Load(), errors.Is(err, os.ErrClosed):
		// Close sets closed before it closes the file; the raw
		// descriptor's wait reports the close unwrapped (poll's
		// ErrFileClosing, not os.ErrClosed).
		return errRingClosed
	case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		return nil
	}
	return fmt.Errorf("waiting for the l7 ring buffer: %w", err)
}

// consume hands the records between the consumer and producer positions to
// fn, reading the producer's again when it catches up, at most a ring's
// worth per call.
func (r *ring) consume(fn func([]byte)) (int, error) {
	cons := atomic.LoadUintptr(r.cons)
	prod := atomic.LoadUintptr(r.prod)
	begin, published := cons, cons
	n, spins := 0, 0
	defer func() {
		if cons != published {
			atomic.StoreUintptr(r.cons, cons)
		}
	}()
	for cons != prod && cons-begin < r.size {
		if prod-cons < ringHdrSize {
			return n, fmt.Errorf("reading the l7 ring buffer: %d bytes left, a record header needs %d", prod-cons, ringHdrSize)
		}
		// Atomic: the kernel clears the busy bit with an xchg once the
		// record is written.
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[cons&r.mask])))
		if hdr&ringBusyBit != 0 {
			// Still being written (records commit in any order): give
			// the producers the room read so far, and yield.
			if cons != published {
				atomic.StoreUintptr(r.cons, cons)
				published = cons
			}
			if spins++; spins > ringBusySpins {
				return n, nil
			}
			runtime.Gosched()
			prod = atomic.LoadUintptr(r.prod)
			continue
		}
		ln := uintptr(hdr &^ (ringBusyBit | ringDiscardBit))
		next := cons + ringHdrSize + (ln+7)&^7
		if next-cons > prod-cons || ln > r.size {
			return n, fmt.Errorf("reading the l7 ring buffer: a record of %d bytes past the %d written", ln, prod-cons)
		}
		if hdr&ringDiscardBit == 0 {
			start := (cons + ringHdrSize) & r.mask
			r.buf = append(r.buf[:0], r.data[start:start+ln]...)
			fn(r.buf)
			n++
		}
		cons = next
		if cons-published >= ringPublishEvery {
			atomic.StoreUintptr(r.cons, cons)
			published = cons
		}
		if cons == prod {
			prod = atomic.LoadUintptr(r.prod)
		}
	}
	return n, nil
}

// Close ends a read in progress (or the next one) with errRingClosed and
// unmaps the ring. Idempotent.
func (r *ring) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	err := r.file.Close() // wakes a wait in the poller
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(err, unix.Munmap(r.dataPages), unix.Munmap(r.consPage))
}

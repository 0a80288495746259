package capture

import (
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// BenchmarkHookCost measures what one hooked system call costs the process
// that makes it, by the kind of hook a data source could use, with programs
// that return at once (the cost around a program, not its work): a tight
// loop of 1-byte write+read on a connected loopback TCP pair and on a pipe,
// and getpid (a call no source hooks) to see the system call slow path that
// any attached syscalls:* tracepoint puts every process on. ns/call is per
// system call. Run it alone on the machine:
//
//	go test -run '^$' -bench HookCost -benchtime 200000x ./collectors/l7/capture/
func BenchmarkHookCost(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipping: attaching BPF programs needs root")
	}
	type attach struct {
		name  string
		hooks []func(b *testing.B) link.Link
	}
	tp := func(event string) func(b *testing.B) link.Link {
		return func(b *testing.B) link.Link {
			return mustLink(b)(link.Tracepoint("syscalls", event, returnZero(b, ebpf.TracePoint, 0, ""), nil))
		}
	}
	rawTP := func(event string) func(b *testing.B) link.Link {
		return func(b *testing.B) link.Link {
			return mustLink(b)(link.AttachRawTracepoint(link.RawTracepointOptions{
				Name: event, Program: returnZero(b, ebpf.RawTracepoint, 0, ""),
			}))
		}
	}
	tpBTF := func(event string) func(b *testing.B) link.Link {
		return func(b *testing.B) link.Link {
			return mustLink(b)(link.AttachTracing(link.TracingOptions{
				Program: returnZero(b, ebpf.Tracing, ebpf.AttachTraceRawTp, event),
			}))
		}
	}
	attaches := []attach{
		{"none", nil},
		{"tracepoint_sys_exit_read_write", []func(*testing.B) link.Link{tp("sys_exit_read"), tp("sys_exit_write")}},
		{"tracepoint_sys_enter_close_only", []func(*testing.B) link.Link{tp("sys_enter_close")}},
		{"raw_tp_sys_exit", []func(*testing.B) link.Link{rawTP("sys_exit")}},
		{"tp_btf_sock_send_recv_length", []func(*testing.B) link.Link{tpBTF("sock_recv_length"), tpBTF("sock_send_length")}},
	}
	loops := []struct {
		name string
		run  func(b *testing.B) float64 // system calls made
	}{
		{"tcp", loopTCP},
		{"pipe", loopPipe},
		{"getpid", loopGetpid},
	}
	for _, a := range attaches {
		for _, l := range loops {
			b.Run(a.name+"/"+l.name, func(b *testing.B) {
				for _, h := range a.hooks {
					lk := h(b)
					b.Cleanup(func() { lk.Close() })
				}
				b.ResetTimer()
				calls := l.run(b)
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/calls, "ns/call")
			})
		}
	}
}

func returnZero(b *testing.B, typ ebpf.ProgramType, at ebpf.AttachType, to string) *ebpf.Program {
	b.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: typ, AttachType: at, AttachTo: to, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		b.Fatalf("loading a program for %v %s: %v", typ, to, err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

func mustLink(b *testing.B) func(link.Link, error) link.Link {
	return func(l link.Link, err error) link.Link {
		b.Helper()
		if err != nil {
			b.Fatalf("attaching: %v", err)
		}
		return l
	}
}

// loopTCP writes and reads one byte per iteration on a connected loopback
// TCP pair, by raw system calls on the descriptors (no Go poller).
func loopTCP(b *testing.B) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	wf, err := c.(*net.TCPConn).File()
	if err != nil {
		b.Fatal(err)
	}
	defer wf.Close()
	rf, err := s.(*net.TCPConn).File()
	if err != nil {
		b.Fatal(err)
	}
	defer rf.Close()
	return loopFDs(b, int(wf.Fd()), int(rf.Fd()))
}

func loopPipe(b *testing.B) float64 {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		b.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	return loopFDs(b, p[1], p[0])
}

func loopFDs(b *testing.B, w, r int) float64 {
	// blocking descriptors: every read finds its byte
	if err := unix.SetNonblock(w, false); err != nil {
		b.Fatal(err)
	}
	if err := unix.SetNonblock(r, false); err != nil {
		b.Fatal(err)
	}
	buf := []byte{'x'}
	for i := 0; i < b.N; i++ {
		if n, err := unix.Write(w, buf); n != 1 || err != nil {
			b.Fatalf("write: %d %v", n, err)
		}
		if n, err := unix.Read(r, buf); n != 1 || err != nil {
			b.Fatalf("read: %d %v", n, err)
		}
	}
	return 2 * float64(b.N)
}

func loopGetpid(b *testing.B) float64 {
	for i := 0; i < b.N; i++ {
		syscall.RawSyscall(syscall.SYS_GETPID, 0, 0, 0)
	}
	return float64(b.N)
}

// Package selftest proves the vmtest harness on real kernels. Its test binary (built with
// `go test -c`, CGO_ENABLED=0) loads three small counting programs — a tracepoint, a kprobe and
// an fentry program, all on getpid — and checks each counts exactly the calls the test made.
// A subtest skips, with the reason, when the kernel cannot attach that kind of program (no
// kprobe support, fentry refused); anything else is a failure.
//
// Each loaded program is reported on stdout as
//
//	OTELBEE-PROGSTAT collector=selftest program=<p> mode=<m> insns=<n> load_us=<n> verifier_us=<n>
//
// which the harness collects for the kernel table.
//
// All three programs count only calls from the test's own (locked) OS thread: the Go runtime
// calls getpid from other threads when it preempts goroutines, which under an emulated CPU
// happens in the middle of the counting loop.
package selftest

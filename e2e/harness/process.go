package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a child process supervised by the harness: it is stopped (SIGTERM,
// then SIGKILL after StopTimeout) on t.Cleanup, receives SIGKILL if the test
// binary dies, and, unless the caller set cmd.Stdout/Stderr, writes its combined
// output to a log file that is printed (the tail) when the test failed.
type Process struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string // "" when the caller wired stdout/stderr itself

	done    chan struct{}
	waitErr error
	once    sync.Once
}

// StopTimeout is how long Stop waits after SIGTERM before it sends SIGKILL.
var StopTimeout = 10 * time.Second

// StartProcess starts cmd (not yet started) as a supervised child named name
// (used for the log file and messages). It fails the test if the start fails.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p, err := startProcess(t, name, cmd)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return p
}

func startProcess(t testing.TB, name string, cmd *exec.Cmd) (*Process, error) {
	p := &Process{Name: name, Cmd: cmd, done: make(chan struct{})}
	var logFile *os.File
	if cmd.Stdout == nil && cmd.Stderr == nil {
		p.LogPath = filepath.Join(t.TempDir(), sanitize(name)+".log")
		f, err := os.Create(p.LogPath)
		if err != nil {
			return nil, fmt.Errorf("start %s: log file: %w", name, err)
		}
		logFile = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL

	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the *thread* that forked the child exits, so this
		// thread stays pinned to this goroutine until the child is reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(cmd.Args, " "), err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() && p.LogPath != "" {
			t.Logf("%s (pid %d, %s) output, last lines:\n%s", p.Name, p.Pid(), p.exitDesc(), p.LogTail(40))
		}
	})
	return p, nil
}

// Pid returns the child's process id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and, if so, how (Wait's error).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Wait waits for the process to exit or for timeout, whichever comes first.
// It returns the exit error (nil for status 0), or an error on timeout.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.Pid(), timeout)
	}
}

// alive returns an error carrying the output tail if the process has exited.
func (p *Process) alive() error {
	if ok, _ := p.Exited(); ok {
		return fmt.Errorf("%s %w (%s); output:\n%s", p.Name, errExited, p.exitDesc(), p.LogTail(30))
	}
	return nil
}

func (p *Process) exitDesc() string {
	ok, err := p.Exited()
	switch {
	case !ok:
		return "running"
	case err == nil:
		return "exit status 0"
	default:
		return err.Error()
	}
}

// Stop sends SIGTERM, waits up to StopTimeout, then sends SIGKILL, and waits for
// the process to be reaped. It is idempotent and safe to call concurrently.
func (p *Process) Stop() {
	p.once.Do(func() {
		if ok, _ := p.Exited(); ok {
			return
		}
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(StopTimeout):
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
	})
}

// Log returns everything the process wrote so far ("" without a log file).
func (p *Process) Log() string {
	if p.LogPath == "" {
		return ""
	}
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.LogPath, err)
	}
	return string(b)
}

// LogTail returns the last n lines of Log.
func (p *Process) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

// startServer starts a server process built by mk (which picks fresh ports on
// every call) and waits for ready; when the server exits complaining that its
// address is in use (a FreePort race), it tries again, up to three times.
func startServer(t testing.TB, name string, mk func() (*exec.Cmd, error), ready func(p *Process) error) (*Process, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		cmd, err := mk()
		if err != nil {
			return nil, err
		}
		p, err := startProcess(t, name, cmd)
		if err != nil {
			return nil, err
		}
		err = ready(p)
		if err == nil {
			return p, nil
		}
		p.Stop()
		lastErr = err
		if !(errors.Is(err, errExited) && errAddrInUse(p.Log())) {
			break
		}
	}
	return nil, lastErr
}

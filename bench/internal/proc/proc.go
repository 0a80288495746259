// Package proc holds what the benchmark commands read about a process and
// the machine: CPU time and memory from /proc, the load average, a free
// loopback address, and waiting for an HTTP endpoint.
package proc

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPUSeconds is the process's user plus system CPU time (utime + stime of
// /proc/<pid>/stat; USER_HZ is 100 on every Linux the agent runs on).
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of %d: %w", pid, err)
	}
	return parseStatCPU(string(b))
}

func parseStatCPU(s string) (float64, error) {
	// The command name may hold spaces and parentheses: fields start
	// after its last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/<pid>/stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/<pid>/stat: %d fields", len(f))
	}
	u, err := strconv.ParseFloat(f[11], 64)
	if err != nil {
		return 0, fmt.Errorf("parsing utime: %w", err)
	}
	k, err := strconv.ParseFloat(f[12], 64)
	if err != nil {
		return 0, fmt.Errorf("parsing stime: %w", err)
	}
	return (u + k) / 100, nil
}

// StatusKB reads a kB field of /proc/<pid>/status (VmRSS, VmHWM, RssAnon,
// ...); 0 when the process or the field is gone.
func StatusKB(pid int, field string) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return parseStatusKB(string(b), field)
}

func parseStatusKB(s, field string) float64 {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return f
		}
	}
	return 0
}

// LoadAvg is the one-minute load average.
func LoadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// FreeAddr is a loopback address nothing listens on at the moment.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// WaitHTTP waits until url answers, up to timeout.
func WaitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

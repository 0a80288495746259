package agent

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// startupSettle is how long after the collectors are running start-up's
// memory is given back: long enough for the discovery of the processes
// already running to have begun, short enough that a benchmark's agent,
// measured seconds after its start, is measured after it.
const startupSettle = 2 * time.Second

// releaseStartupMemory gives back, once start-up has settled (after), what only
// start-up used: the heap it freed (debug.FreeOSMemory; the scavenger
// would return it over minutes) and the pages of the agent's own
// executable that start-up faulted in (the BPF objects, init code, the
// functions of collectors that loaded once): ~12 of the ~26 MiB of the
// executable the agent had resident at idle. The pages stay in the page
// cache; those still used fault back in (minor faults, no I/O).
func releaseStartupMemory(ctx context.Context, after time.Duration, logger *slog.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(after):
	}
	releaseMemory(logger, "start-up")
}

// releaseMemory gives back the heap the runtime holds free and the
// executable's pages a passing load faulted in: after start-up, and after
// the process identities' sweep forgot a burst of short-lived processes
// (identity.Resolver.ReleaseMemory), whose discovery ran code (reading
// /proc, exec events, the instance folding) that idle does not.
func releaseMemory(logger *slog.Logger, after string) {
	before := rssKB()
	debug.FreeOSMemory()
	n, err := releaseExecutablePages()
	if err != nil {
		logger.Debug("releasing the executable's pages", "error", err)
	}
	logger.Debug("memory released", "after", after, "rss_before_kb", before, "rss_after_kb", rssKB(), "executable_mappings", n)
}

// releaseExecutablePages drops the agent's page-table entries for its own
// executable's read-only mappings (text, read-only data) that hold only
// the file's pages: MADV_DONTNEED on those discards nothing but the
// mapping, which the next access restores from the page cache. A mapping
// with anonymous pages (a cgo build's relocated read-only data, a
// debugger's or uprobe's breakpoint) is left alone: dropping those would
// put the file's bytes back. Writable mappings are never touched.
func releaseExecutablePages() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	type vma struct {
		start, end uintptr
		anon       bool
	}
	var ranges []vma
	var cur *vma
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && len(fields) >= 5 {
			// 00400000-01362000 r-xp 00000000 fe:00 10879539   /path
			cur = nil
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if len(fields) >= 6 && fields[5] == exe && !strings.Contains(fields[1], "w") &&
				strings.HasSuffix(fields[1], "p") && err1 == nil && err2 == nil && end > start {
				ranges = append(ranges, vma{start: uintptr(start), end: uintptr(end)})
				cur = &ranges[len(ranges)-1]
			}
			continue
		}
		if cur != nil && fields[0] == "Anonymous:" && len(fields) >= 2 && fields[1] != "0" {
			cur.anon = true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range ranges {
		if r.anon {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED); errno != 0 {
			return n, errno
		}
		n++
	}
	return n, nil
}

// rssKB is the process's resident set in kB, 0 if unreadable.
func rssKB() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize()) / 1024
}

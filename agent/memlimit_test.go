package agent

import (
	"hash/crc64"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
)

// exeVMA is one read-only mapping of this process's executable.
type exeVMA struct {
	start, end    uintptr
	rssKB, anonKB int
}

// exeVMAs lists this process's read-only mappings of its own executable.
func exeVMAs(t *testing.T) []exeVMA {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var out []exeVMA
	var cur *exeVMA
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") {
			cur = nil
			if len(f) >= 6 && f[5] == exe && !strings.Contains(f[1], "w") {
				lo, hi, _ := strings.Cut(f[0], "-")
				a, _ := strconv.ParseUint(lo, 16, 64)
				z, _ := strconv.ParseUint(hi, 16, 64)
				out = append(out, exeVMA{start: uintptr(a), end: uintptr(z)})
				cur = &out[len(out)-1]
			}
			continue
		}
		if cur != nil && len(f) == 3 {
			n, _ := strconv.Atoi(f[1])
			switch f[0] {
			case "Rss:":
				cur.rssKB = n
			case "Anonymous:":
				cur.anonKB = n
			}
		}
	}
	return out
}

// readMappings reads every byte of the mappings through /proc/self/mem, which
// faults their pages into this process, and returns their checksum.
func readMappings(t *testing.T, vmas []exeVMA) uint64 {
	t.Helper()
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	for _, v := range vmas {
		if _, err := io.Copy(h, io.NewSectionReader(mem, int64(v.start), int64(v.end-v.start))); err != nil {
			t.Fatalf("reading %#x-%#x: %v", v.start, v.end, err)
		}
	}
	return h.Sum64()
}

// TestReleaseExecutablePages: with every page of the executable's text and
// read-only data resident, releasing them leaves only what runs since
// resident, the code and data still work (they fault back in, the same
// bytes), and a mapping holding anonymous pages keeps them: on this host
// other agents' TLS uprobes break into the test binary's crypto/tls
// functions (copies of those text pages), and a cgo build's relocated
// read-only data is such a mapping too.
func TestReleaseExecutablePages(t *testing.T) {
	vmas := exeVMAs(t)
	if len(vmas) == 0 {
		t.Fatal("no read-only mapping of the executable in /proc/self/smaps")
	}
	readMappings(t, vmas) // faults every page in
	vmas = exeVMAs(t)
	var clean []exeVMA
	for _, v := range vmas {
		if v.anonKB == 0 {
			clean = append(clean, v)
		}
	}
	sum := readMappings(t, clean)
	vmas = exeVMAs(t)
	n, err := releaseExecutablePages()
	if err != nil {
		t.Fatal(err)
	}
	after := exeVMAs(t)
	if len(after) != len(vmas) {
		t.Fatalf("%d mappings, %d before", len(after), len(vmas))
	}
	released, cleanBefore, cleanAfter := 0, 0, 0
	for i, v := range vmas {
		a := after[i]
		t.Logf("%#x-%#x: %d kB resident (%d anonymous), %d kB (%d) after the release", v.start, v.end, v.rssKB, v.anonKB, a.rssKB, a.anonKB)
		if v.anonKB > 0 {
			if a.anonKB < v.anonKB {
				t.Errorf("%#x-%#x: %d kB anonymous before, %d after: a mapping with anonymous pages was released", v.start, v.end, v.anonKB, a.anonKB)
			}
			continue
		}
		released++
		cleanBefore += v.rssKB
		cleanAfter += a.rssKB
	}
	if released == 0 {
		t.Skip("every read-only mapping of the test binary holds anonymous pages")
	}
	if n != released {
		t.Errorf("released %d mappings, %d hold only the file's pages", n, released)
	}
	if cleanBefore < 1024 || cleanAfter > cleanBefore/2 {
		t.Errorf("released mappings resident %d kB before, %d kB after: want at most half", cleanBefore, cleanAfter)
	}
	// The same bytes (only in the mappings that held the file's pages
	// throughout: a foreign uprobe's breakpoint comes and goes).
	if again := readMappings(t, clean); again != sum && len(clean) == released {
		t.Errorf("checksum %d after the release, %d before: bytes changed", again, sum)
	}
}

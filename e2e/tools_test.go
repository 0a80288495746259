package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/otelbee/otelbee/e2e/harness"
)

var (
	toolsMu  sync.Mutex
	toolsDir string
	built    = map[string]string{}
)

// buildTool compiles a program of this repository once per test binary and
// returns its path.
func buildTool(t *testing.T, pkg string) string {
	t.Helper()
	toolsMu.Lock()
	defer toolsMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	if toolsDir == "" {
		d, err := os.MkdirTemp("", "otelbee-e2e-tools-")
		if err != nil {
			t.Fatal(err)
		}
		toolsDir = d
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(toolsDir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Module is the Go module the harness belongs to; the repository root is where its go.mod is.
const Module = "github.com/otelbee/otelbee"

// FindRepoRoot walks up from dir to the directory holding this module's go.mod.
func FindRepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "module" && f[1] == Module {
					return d, nil
				}
			}
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no go.mod of module %s in %s or its parents", Module, dir)
		}
	}
}

func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", errors.New("the go command is not in PATH")
}

// goBuild runs the go command in the repository root with CGO off (the VM has no libc) and
// for linux/amd64 (the VMs' architecture, whatever the host).
func goBuild(ctx context.Context, root string, log *slog.Logger, args ...string) error {
	gobin, err := goTool()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	log.Debug("built", "args", args, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// buildInit builds the guest's PID 1.
func buildInit(ctx context.Context, root, binDir string, log *slog.Logger) (string, error) {
	out := filepath.Join(binDir, "init")
	if err := goBuild(ctx, root, log, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./e2e/vmtest/init"); err != nil {
		return "", fmt.Errorf("building vmtest init: %w", err)
	}
	return out, nil
}

// preparedJob is a job with its binary built and its paths resolved.
type preparedJob struct {
	JobDef
	hostBinary  string // absolute path on the host
	guestBinary string // /bin/<base> in the VM
	args        []string
}

// prepareJobs builds package jobs, resolves binary jobs and checks that every binary is
// static and that no two binaries would share a name in the VM's /bin.
func prepareJobs(ctx context.Context, jf *JobsFile, root, binDir string, log *slog.Logger) ([]preparedJob, error) {
	built := map[string]string{} // package -> binary, so a package used by several jobs builds once
	guestOwner := map[string]string{}
	var jobs []preparedJob
	for _, def := range jf.Jobs {
		pj := preparedJob{JobDef: def, args: def.Args}
		switch {
		case def.Package != "":
			bin, ok := built[def.Package]
			if !ok {
				name := strings.Trim(strings.NewReplacer("/", "_", ".", "_").Replace(strings.TrimPrefix(def.Package, "./")), "_")
				bin = filepath.Join(binDir, name+".test")
				log.Info("building test binary", "package", def.Package, "out", bin)
				if err := goBuild(ctx, root, log, "test", "-c", "-trimpath", "-o", bin, def.Package); err != nil {
					return nil, fmt.Errorf("job %s: building %s: %w", def.Name, def.Package, err)
				}
				if _, err := os.Stat(bin); err != nil {
					return nil, fmt.Errorf("job %s: package %s has no tests (go test -c wrote no binary)", def.Name, def.Package)
				}
				built[def.Package] = bin
			}
			pj.hostBinary = bin
			pj.args = goTestArgs(def.Args, def.timeout())
		default:
			bin := def.Binary
			if !filepath.IsAbs(bin) {
				bin = filepath.Join(root, bin)
			}
			if _, err := os.Stat(bin); err != nil {
				return nil, fmt.Errorf("job %s: binary: %w", def.Name, err)
			}
			pj.hostBinary = bin
		}
		if err := checkStatic(pj.hostBinary); err != nil {
			return nil, fmt.Errorf("job %s: %w", def.Name, err)
		}
		pj.guestBinary = "/bin/" + filepath.Base(pj.hostBinary)
		if owner, ok := guestOwner[pj.guestBinary]; ok && owner != pj.hostBinary {
			return nil, fmt.Errorf("job %s: %s and %s would both be %s in the VM; rename one", def.Name, owner, pj.hostBinary, pj.guestBinary)
		}
		guestOwner[pj.guestBinary] = pj.hostBinary
		jobs = append(jobs, pj)
	}
	return jobs, nil
}

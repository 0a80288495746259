package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestImage builds the container image from the repository's Dockerfile with
// podman (no Docker engine, no base-image pull: the binary under test is
// copied onto an empty base), checks that it holds exactly that binary as its
// entrypoint, and runs `otelbee version` and `otelbee doctor` from it: with
// `podman run` where this machine allows containers, else (podman run fails
// here on setrlimit without CAP_SYS_RESOURCE) the binary from the image's
// unpacked root file system, and the log says which.
func TestImage(t *testing.T) {
	harness.RequireRoot(t)
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("skipping: podman not installed (make deps installs it)")
	}
	bin, err := harness.AgentBin()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The build context as `make image` sees it: the Dockerfile and
	// build/bin/otelbee, nothing else (.dockerignore).
	ctxDir := t.TempDir()
	for _, f := range []string{"Dockerfile", ".dockerignore"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(ctxDir, f), 0o644)
	}
	if err := os.MkdirAll(filepath.Join(ctxDir, "build", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, bin, filepath.Join(ctxDir, "build", "bin", "otelbee"), 0o755)

	tag := fmt.Sprintf("localhost/otelbee-e2e:%d", os.Getpid())
	podmanRun := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := exec.Command(podman, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	if out, err := podmanRun("build", "--pull=never", "--no-cache", "--build-arg", "VERSION=e2e", "-t", tag, "-f", "Dockerfile", ctxDir); err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	t.Cleanup(func() { podmanRun("rmi", "-f", tag) })

	out, err := podmanRun("image", "inspect", "--format",
		`{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{index .Labels "org.opencontainers.image.version"}} {{.Size}}`, tag)
	if err != nil {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	var size int64
	var entry, cmdJSON, version string
	if _, err := fmt.Sscan(out, &entry, &cmdJSON, &version, &size); err != nil {
		t.Fatalf("parsing %q: %v", out, err)
	}
	if entry != `["/otelbee"]` || cmdJSON != `["run"]` || version != "e2e" {
		t.Errorf("image config: entrypoint %s cmd %s version label %q, want [\"/otelbee\"] [\"run\"] \"e2e\"", entry, cmdJSON, version)
	}
	st, _ := os.Stat(bin)
	t.Logf("image %s: %d bytes (binary %d bytes)", tag, size, st.Size())

	// The image's root file system: exactly the binary under test.
	mnt, err := podmanRun("image", "mount", tag)
	if err != nil {
		t.Fatalf("podman image mount: %v\n%s", err, mnt)
	}
	mnt = strings.TrimSpace(mnt)
	t.Cleanup(func() { podmanRun("image", "unmount", tag) })
	var files []string
	filepath.Walk(mnt, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(mnt, p)
			files = append(files, rel)
		}
		return nil
	})
	if len(files) != 1 || files[0] != "otelbee" {
		t.Fatalf("image files %v, want only otelbee", files)
	}
	if fileHash(t, filepath.Join(mnt, "otelbee")) != fileHash(t, bin) {
		t.Fatal("the image's /otelbee differs from the binary under test")
	}
	wantVersion, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}

	// podman run where the machine allows it.
	var versionOut, doctorOut string
	runOut, runErr := podmanRun("run", "--rm", "--network=none", tag, "version")
	switch {
	case runErr == nil:
		t.Log("running the image with podman run")
		versionOut = runOut
		doctorOut, err = podmanRun("run", "--rm", "--network=none", "--pid=host",
			"--cap-drop=all", "--cap-add=BPF,PERFMON,NET_ADMIN,SYS_PTRACE,DAC_READ_SEARCH",
			"-v", "/sys/kernel/tracing:/sys/kernel/tracing", "-v", "/sys/fs/bpf:/sys/fs/bpf", tag, "doctor")
		if err != nil {
			t.Fatalf("podman run doctor: %v\n%s", err, doctorOut)
		}
	case strings.Contains(runOut, "setrlimit"):
		t.Logf("podman run is not possible on this machine (%s); running /otelbee from the unpacked image root %s instead",
			strings.TrimSpace(runOut), mnt)
		o, err := exec.Command(filepath.Join(mnt, "otelbee"), "version").CombinedOutput()
		if err != nil {
			t.Fatalf("version from the image root: %v\n%s", err, o)
		}
		versionOut = string(o)
		o, err = exec.Command(filepath.Join(mnt, "otelbee"), "doctor").CombinedOutput()
		if err != nil {
			t.Fatalf("doctor from the image root: %v\n%s", err, o)
		}
		doctorOut = string(o)
	default:
		t.Fatalf("podman run: %v\n%s", runErr, runOut)
	}
	if versionOut != string(wantVersion) {
		t.Errorf("version from the image: %q, want %q", versionOut, wantVersion)
	}
	for _, want := range []string{"tcp: runs", "http: runs", "dns: runs"} {
		if !strings.Contains(doctorOut, want) {
			t.Errorf("doctor from the image lacks %q:\n%s", want, doctorOut)
		}
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

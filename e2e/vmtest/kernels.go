package vmtest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// HostKernel is the pseudo kernel label that runs the jobs on the machine's own kernel.
const HostKernel = "host"

// KernelSpec says how to find one kernel of the matrix in Debian's archive.
type KernelSpec struct {
	Label string
	// Pattern matches the binary package names that qualify (exact match, anchored). The
	// signed image package is used; it holds the same vmlinuz as the -unsigned one.
	Pattern *regexp.Regexp
	// Suites are tried in order until one offers a candidate. "" is the machine's own apt
	// configuration, used read-only; any other value is a suite reached through a private
	// sources file and lists directory under the cache (see privateApt).
	Suites []string
}

// KnownKernels are the kernels of the matrix, by label.
var KnownKernels = map[string]KernelSpec{
	// Debian 11 bullseye: the oldest kernel we support (no verified_insns, BPF memory charged
	// to RLIMIT_MEMLOCK, no kprobe.multi).
	"5.10": {
		Label:   "5.10",
		Pattern: regexp.MustCompile(`^linux-image-5\.10\.0-[0-9]+-cloud-amd64$`),
		Suites:  []string{"bullseye"},
	},
	// Debian 12 bookworm's own kernel.
	"6.1": {
		Label:   "6.1",
		Pattern: regexp.MustCompile(`^linux-image-6\.1\.0-[0-9]+-cloud-amd64$`),
		Suites:  []string{""},
	},
	// 6.12 is offered to bookworm through bookworm-security (package names "+deb12") and
	// earlier through bookworm-backports ("+bpo"); whichever apt knows.
	"6.12": {
		Label:   "6.12",
		Pattern: regexp.MustCompile(`^linux-image-6\.12\.[0-9]+\+(deb12|bpo)-cloud-amd64$`),
		Suites:  []string{"", "bookworm-backports"},
	},
}

// Kernel is a kernel ready to boot.
type Kernel struct {
	Label   string
	Package string // Debian package name; empty for a kernel given by path
	Version string // Debian package version
	Deb     string // the cached .deb
	Vmlinuz string
	Config  string // the kernel's config file, if the package had one
}

func (k *Kernel) String() string {
	if k.Package == "" {
		return fmt.Sprintf("%s (%s)", k.Label, k.Vmlinuz)
	}
	return fmt.Sprintf("%s (%s %s)", k.Label, k.Package, k.Version)
}

// ParseKernelList splits a -kernels value ("5.10,6.1,6.12,host").
func ParseKernelList(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if _, ok := KnownKernels[f]; !ok && f != HostKernel && !strings.ContainsRune(f, '/') {
			return nil, fmt.Errorf("unknown kernel %q: want one of %s, %s, or a path to a vmlinuz or .deb", f, strings.Join(knownLabels(), ", "), HostKernel)
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no kernels given")
	}
	return out, nil
}

func knownLabels() []string {
	var l []string
	for k := range KnownKernels {
		l = append(l, k)
	}
	sort.Slice(l, func(i, j int) bool { return CompareDebianVersions(l[i], l[j]) < 0 })
	return l
}

// kernelFetcher finds, downloads and unpacks kernels into dir (build/vmtest/kernels).
type kernelFetcher struct {
	dir    string // .deb files and unpacked kernels
	aptDir string // private apt state for suites the machine's apt does not know
	log    *slog.Logger
}

// Resolve returns a bootable kernel for label (a known label or a path to a vmlinuz/.deb).
func (f *kernelFetcher) Resolve(ctx context.Context, label string) (*Kernel, error) {
	if strings.ContainsRune(label, '/') {
		return f.fromPath(ctx, label)
	}
	spec, ok := KnownKernels[label]
	if !ok {
		return nil, fmt.Errorf("unknown kernel %q", label)
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	deb, pkg, version, lookupErr := f.download(ctx, spec)
	if lookupErr != nil {
		// Offline, or the ABI we knew left the archive: a cached package still lets us test.
		cached, cpkg, cver, err := newestCached(f.dir, spec.Pattern)
		if err != nil || cached == "" {
			return nil, fmt.Errorf("kernel %s: %w (and no cached package in %s)", label, lookupErr, f.dir)
		}
		f.log.Warn("kernel lookup failed, using cached package", "kernel", label, "err", lookupErr, "deb", cached)
		deb, pkg, version = cached, cpkg, cver
	}
	k := &Kernel{Label: label, Package: pkg, Version: version, Deb: deb}
	if err := f.extract(ctx, k); err != nil {
		return nil, err
	}
	return k, nil
}

func (f *kernelFetcher) fromPath(ctx context.Context, path string) (*Kernel, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", path, err)
	}
	// A short label for the report's columns: the file name, or for .../<dir>/vmlinuz the
	// directory's name (as in this cache's layout).
	label := filepath.Base(abs)
	if label == "vmlinuz" {
		label = filepath.Base(filepath.Dir(abs))
	}
	k := &Kernel{Label: label}
	if strings.HasSuffix(abs, ".deb") {
		k.Deb = abs
		k.Package, k.Version = splitDebFileName(filepath.Base(abs))
		k.Label = k.Package
		return k, f.extract(ctx, k)
	}
	k.Vmlinuz = abs
	return k, nil
}

// download picks the newest candidate and makes sure its .deb is in the cache. Candidates are
// tried newest first: the machine's package lists can be older than the mirror, and a version
// the mirror no longer has fails to download, while an older ABI often still is there.
func (f *kernelFetcher) download(ctx context.Context, spec KernelSpec) (deb, pkg, version string, err error) {
	var errs []error
	for _, suite := range spec.Suites {
		apt, err := f.aptFor(ctx, suite)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cands, err := lookupCandidates(ctx, apt, spec.Pattern)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", apt, err))
			continue
		}
		if len(cands) == 0 {
			errs = append(errs, fmt.Errorf("%s: no package matches %s", apt, spec.Pattern))
			continue
		}
		for i, c := range cands {
			if i == 0 {
				f.log.Info("kernel picked", "kernel", spec.Label, "package", c.Package, "version", c.Version, "source", apt.String())
			} else {
				f.log.Warn("falling back to an older kernel", "kernel", spec.Label, "package", c.Package, "version", c.Version)
			}
			if cached := cachedDeb(f.dir, c.Package, c.Version); cached != "" {
				f.log.Info("kernel package cached", "deb", cached)
				return cached, c.Package, c.Version, nil
			}
			deb, err := f.aptDownload(ctx, apt, c)
			if err == nil {
				return deb, c.Package, c.Version, nil
			}
			errs = append(errs, err)
			if i == 2 {
				break // three misses in a row: the archive or network is the problem
			}
		}
	}
	return "", "", "", errors.Join(errs...)
}

// Candidate is an installable package version.
type Candidate struct {
	Package string
	Version string
}

// aptConfig is a way to run apt: the machine's configuration (no options), or a private
// sources file, lists and cache directory for a suite the machine is not configured for.
type aptConfig struct {
	suite string
	opts  []string
}

func (a aptConfig) String() string {
	if a.suite == "" {
		return "apt (system sources)"
	}
	return "apt (private " + a.suite + " sources)"
}

func (a aptConfig) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, tool, append(append([]string{}, a.opts...), args...)...)
	// apt's output is parsed: keep it unlocalised.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	return cmd
}

func run(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return stdout.String(), fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return stdout.String(), nil
}

// aptFor returns the apt configuration for suite, creating and refreshing the private state
// for suites other than the machine's. The machine's apt configuration and state are never
// written: the private sources file replaces the machine's (sourceparts=-), and the package
// lists and caches live under f.aptDir.
func (f *kernelFetcher) aptFor(ctx context.Context, suite string) (aptConfig, error) {
	if suite == "" {
		return aptConfig{}, nil
	}
	dir := filepath.Join(f.aptDir, suite)
	lists := filepath.Join(dir, "lists")
	cache := filepath.Join(dir, "cache")
	for _, d := range []string{filepath.Join(lists, "partial"), filepath.Join(cache, "archives", "partial")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return aptConfig{}, err
		}
	}
	sources := filepath.Join(dir, suite+".sources")
	content := privateSources(debianMirror(), suite)
	if err := writeIfChanged(sources, []byte(content)); err != nil {
		return aptConfig{}, err
	}
	apt := aptConfig{suite: suite, opts: []string{
		"-o", "Dir::Etc::sourcelist=" + sources,
		"-o", "Dir::Etc::sourceparts=-",
		"-o", "Dir::State::Lists=" + lists,
		"-o", "Dir::Cache=" + cache,
		// Our private directories belong to root; apt's _apt sandbox user cannot write there.
		"-o", "APT::Sandbox::User=root",
	}}

	// Serialise with other harness runs (other engineers, parallel VMs) on the same lists.
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		return aptConfig{}, err
	}
	defer unlock()
	if fresh(lists, 24*time.Hour) {
		return apt, nil
	}
	f.log.Info("updating private package lists", "suite", suite, "dir", lists)
	if _, err := run(apt.command(ctx, "apt-get", "-q", "update")); err != nil {
		return aptConfig{}, fmt.Errorf("updating %s package lists: %w", suite, err)
	}
	return apt, nil
}

// privateSources is a deb822 sources file for one suite of the Debian archive.
func privateSources(mirror, suite string) string {
	return fmt.Sprintf("Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n", mirror, suite)
}

// fresh reports whether lists holds a Packages index modified within maxAge.
func fresh(lists string, maxAge time.Duration) bool {
	matches, _ := filepath.Glob(filepath.Join(lists, "*_Packages*"))
	for _, m := range matches {
		if st, err := os.Stat(m); err == nil && time.Since(st.ModTime()) < maxAge {
			return true
		}
	}
	return false
}

// debianMirror returns the Debian archive URI the machine already uses (so the private suites
// go through the same, reachable, mirror), or deb.debian.org.
func debianMirror() string {
	var texts []string
	for _, glob := range []string{"/etc/apt/sources.list", "/etc/apt/sources.list.d/*.sources", "/etc/apt/sources.list.d/*.list"} {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				texts = append(texts, string(b))
			}
		}
	}
	if m := mirrorFromSources(texts); m != "" {
		return m
	}
	return "http://deb.debian.org/debian"
}

// mirrorFromSources finds the URI serving the main Debian suites (not debian-security, not a
// third party) in sources files, one-line ("deb URI suite comp") or deb822 format.
func mirrorFromSources(texts []string) string {
	isMain := func(suite string) bool {
		for _, s := range []string{"bookworm", "bullseye", "trixie", "stable", "oldstable", "sid", "unstable", "testing"} {
			if suite == s || suite == s+"-updates" || suite == s+"-backports" {
				return true
			}
		}
		return false
	}
	for _, text := range texts {
		// deb822: paragraphs of "Key: value".
		for _, para := range strings.Split(text, "\n\n") {
			var uris, suites []string
			for _, line := range strings.Split(para, "\n") {
				k, v, ok := strings.Cut(line, ":")
				if !ok || strings.HasPrefix(strings.TrimSpace(line), "#") {
					continue
				}
				switch strings.TrimSpace(strings.ToLower(k)) {
				case "uris":
					uris = strings.Fields(v)
				case "suites":
					suites = strings.Fields(v)
				}
			}
			for _, s := range suites {
				if isMain(s) && len(uris) > 0 && strings.Contains(uris[0], "/debian") {
					return strings.TrimSuffix(uris[0], "/")
				}
			}
		}
		// One-line format.
		for _, line := range strings.Split(text, "\n") {
			f := strings.Fields(line)
			if len(f) < 3 || f[0] != "deb" {
				continue
			}
			i := 1
			if strings.HasPrefix(f[1], "[") { // options: deb [arch=amd64 signed-by=...] uri suite
				for i < len(f) && !strings.HasSuffix(f[i], "]") {
					i++
				}
				i++
			}
			if i+1 < len(f) && isMain(f[i+1]) && strings.Contains(f[i], "/debian") {
				return strings.TrimSuffix(f[i], "/")
			}
		}
	}
	return ""
}

// lookupCandidates asks apt which packages match pattern and which of them it can install,
// newest first.
func lookupCandidates(ctx context.Context, apt aptConfig, pattern *regexp.Regexp) ([]Candidate, error) {
	// apt-cache takes a POSIX regular expression; ours is written in the common subset.
	out, err := run(apt.command(ctx, "apt-cache", "search", "--names-only", pattern.String()))
	if err != nil {
		return nil, fmt.Errorf("searching packages: %w", err)
	}
	names := ParseAptCacheSearch(out, pattern)
	if len(names) == 0 {
		return nil, nil
	}
	out, err = run(apt.command(ctx, "apt-cache", append([]string{"policy"}, names...)...))
	if err != nil {
		return nil, fmt.Errorf("querying candidates: %w", err)
	}
	return PickCandidates(ParseAptCachePolicy(out)), nil
}

// ParseAptCacheSearch returns the package names of `apt-cache search` output ("name - desc"
// lines) that match pattern exactly (filtering out -dbg, -unsigned and meta packages).
func ParseAptCacheSearch(out string, pattern *regexp.Regexp) []string {
	var names []string
	seen := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if name == "" || !pattern.MatchString(name) || seen[name] {
			continue
		}
		seen[name] = true
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// ParseAptCachePolicy maps package name to candidate version from `apt-cache policy a b ...`.
// Packages whose candidate is "(none)" (known from old lists but not installable) are left out.
func ParseAptCachePolicy(out string) map[string]string {
	res := map[string]string{}
	pkg := ""
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		if line[0] != ' ' && strings.HasSuffix(line, ":") {
			pkg = strings.TrimSuffix(line, ":")
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok && pkg != "" {
			v = strings.TrimSpace(v)
			if v != "" && v != "(none)" {
				res[pkg] = v
			}
		}
	}
	return res
}

// PickCandidates orders candidates newest version first (ties: by name, for determinism).
func PickCandidates(policy map[string]string) []Candidate {
	cands := make([]Candidate, 0, len(policy))
	for p, v := range policy {
		cands = append(cands, Candidate{Package: p, Version: v})
	}
	sort.Slice(cands, func(i, j int) bool {
		if c := CompareDebianVersions(cands[i].Version, cands[j].Version); c != 0 {
			return c > 0
		}
		return cands[i].Package > cands[j].Package
	})
	return cands
}

// debFileName is apt's file name for a downloaded package (an epoch's ':' is escaped).
func debFileName(pkg, version string) string {
	return pkg + "_" + strings.ReplaceAll(version, ":", "%3a") + "_amd64.deb"
}

func splitDebFileName(name string) (pkg, version string) {
	name = strings.TrimSuffix(name, ".deb")
	parts := strings.Split(name, "_")
	if len(parts) < 2 {
		return name, ""
	}
	v, err := url.PathUnescape(parts[1])
	if err != nil {
		v = parts[1]
	}
	return parts[0], v
}

func cachedDeb(dir, pkg, version string) string {
	p := filepath.Join(dir, debFileName(pkg, version))
	if st, err := os.Stat(p); err == nil && st.Size() > 0 {
		return p
	}
	return ""
}

// newestCached returns the newest cached .deb whose package matches pattern.
func newestCached(dir string, pattern *regexp.Regexp) (deb, pkg, version string, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.deb"))
	if err != nil {
		return "", "", "", err
	}
	for _, f := range files {
		p, v := splitDebFileName(filepath.Base(f))
		if !pattern.MatchString(p) {
			continue
		}
		if deb == "" || CompareDebianVersions(v, version) > 0 {
			deb, pkg, version = f, p, v
		}
	}
	return deb, pkg, version, nil
}

// aptDownload fetches one package into the cache. It downloads into a scratch directory and
// renames, so an interrupted download never looks like a cached package.
func (f *kernelFetcher) aptDownload(ctx context.Context, apt aptConfig, c Candidate) (string, error) {
	tmp, err := os.MkdirTemp(f.dir, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	cmd := apt.command(ctx, "apt-get", "-q", "download", c.Package+"="+c.Version)
	cmd.Dir = tmp
	if _, err := run(cmd); err != nil {
		return "", fmt.Errorf("downloading %s %s: %w", c.Package, c.Version, err)
	}
	name := debFileName(c.Package, c.Version)
	if _, err := os.Stat(filepath.Join(tmp, name)); err != nil {
		return "", fmt.Errorf("downloading %s %s: apt-get left no %s", c.Package, c.Version, name)
	}
	dst := filepath.Join(f.dir, name)
	if err := os.Rename(filepath.Join(tmp, name), dst); err != nil {
		return "", fmt.Errorf("downloading %s: %w", c.Package, err)
	}
	f.log.Info("kernel package downloaded", "deb", dst, "took", time.Since(start).Round(time.Millisecond))
	return dst, nil
}

// extract unpacks boot/vmlinuz-* and boot/config-* of k.Deb next to it (once; reused after).
// Only those two files are taken out of `dpkg-deb --fsys-tarfile`: the modules, tens of
// megabytes, are of no use to an initramfs-only VM.
func (f *kernelFetcher) extract(ctx context.Context, k *Kernel) error {
	dir := strings.TrimSuffix(k.Deb, ".deb")
	vmlinuz := filepath.Join(dir, "vmlinuz")
	config := filepath.Join(dir, "config")
	if _, err := os.Stat(vmlinuz); err == nil {
		k.Vmlinuz = vmlinuz
		if _, err := os.Stat(config); err == nil {
			k.Config = config
		}
		return nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".extract-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", k.Deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("extracting %s: %w", k.Deb, err)
	}
	found, tarErr := extractBootFiles(pipe, tmp)
	// Drain so dpkg-deb is not killed by SIGPIPE before we have looked at its exit status.
	_, _ = io.Copy(io.Discard, pipe)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("extracting %s: dpkg-deb: %w: %s", k.Deb, err, strings.TrimSpace(stderr.String()))
	}
	if tarErr != nil {
		return fmt.Errorf("extracting %s: %w", k.Deb, tarErr)
	}
	if !found {
		return fmt.Errorf("extracting %s: no boot/vmlinuz-* in the package", k.Deb)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(vmlinuz); statErr != nil { // a parallel run may have won
			return fmt.Errorf("extracting %s: %w", k.Deb, err)
		}
	}
	k.Vmlinuz = vmlinuz
	if _, err := os.Stat(config); err == nil {
		k.Config = config
	}
	return nil
}

func extractBootFiles(r io.Reader, dir string) (bool, error) {
	tr := tar.NewReader(r)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return found, nil
		}
		if err != nil {
			return found, err
		}
		name := strings.TrimPrefix(h.Name, "./")
		var dst string
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-") && h.Typeflag == tar.TypeReg:
			dst = "vmlinuz"
			found = true
		case strings.HasPrefix(name, "boot/config-") && h.Typeflag == tar.TypeReg:
			dst = "config"
		default:
			continue
		}
		w, err := os.OpenFile(filepath.Join(dir, dst), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return found, err
		}
		if _, err := io.Copy(w, tr); err != nil {
			w.Close()
			return found, err
		}
		if err := w.Close(); err != nil {
			return found, err
		}
	}
}

// KernelConfig reads selected CONFIG_ options of a kernel's config file ("y", "m" or "").
func KernelConfig(path string, options ...string) (map[string]string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	want := map[string]bool{}
	for _, o := range options {
		want[o] = true
	}
	res := map[string]string{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && want[k] {
			res[k] = v
		}
	}
	return res, sc.Err()
}

func writeIfChanged(path string, content []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
		return nil
	}
	return os.WriteFile(path, content, 0o644)
}

// lockFile takes an exclusive flock on path and returns its release.
func lockFile(path string) (func(), error) {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(fh.Fd()), unix.LOCK_EX); err != nil {
		fh.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { fh.Close() }, nil
}

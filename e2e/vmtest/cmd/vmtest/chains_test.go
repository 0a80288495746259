package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/otelbee/otelbee/e2e/vmtest"
)

// repoRoot is the repository root, from this package's directory.
const repoRoot = "../../../.."

// TestChainsListEveryCollector: a collector package that exports Hooks() must be in chains(),
// so the kernel matrix checks every link of its attach chain.
func TestChainsListEveryCollector(t *testing.T) {
	listed := map[string]bool{}
	for _, c := range chains() {
		listed[c.Package] = true
	}
	dirs, err := filepath.Glob(filepath.Join(repoRoot, "collectors", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		if !exportsHooks(t, dir) {
			continue
		}
		pkg := "./collectors/" + filepath.Base(dir)
		if !listed[pkg] {
			t.Errorf("%s exports Hooks() but is not in chains() (e2e/vmtest/cmd/vmtest/chains.go): add it there and its jobs to e2e/vmtest/jobs/matrix.json", pkg)
		}
	}
}

// exportsHooks reports whether the package in dir declares a top-level func Hooks.
func exportsHooks(t *testing.T, dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && fn.Name.Name == "Hooks" {
				return true
			}
		}
	}
	return false
}

// TestMatrixJobs: the matrix (e2e/vmtest/jobs/matrix.json, what `make vmtest` runs) has, for
// every collector of chains(), a privileged-test job without a forced mode and one forcing each
// mode that some hook declares next to other links (forcing a mode that is a hook's only link
// changes nothing, and a job forcing a mode the collector never declares would load no program
// in it); and the hook loader's verifier-rejection job.
func TestMatrixJobs(t *testing.T) {
	jf, err := vmtest.LoadJobsFile(filepath.Join(repoRoot, "e2e", "vmtest", "jobs", "matrix.json"))
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ pkg, mode string }
	jobs := map[key]vmtest.JobDef{}
	for _, j := range jf.Jobs {
		jobs[key{j.Package, j.Env[vmtest.AttachModeEnv]}] = j
	}
	for _, c := range chains() {
		var modes []string
		for _, h := range c.Hooks {
			// a hook whose links are all of one mode (the L7 read/write
			// hooks: one program at exit, else the entry+exit pair, both
			// tracepoints) gives forcing nothing to choose between
			var hm []string
			for _, lk := range h.Links {
				if !slices.Contains(hm, string(lk.Mode)) {
					hm = append(hm, string(lk.Mode))
				}
			}
			if len(hm) < 2 {
				continue
			}
			for _, m := range hm {
				if !slices.Contains(modes, m) {
					modes = append(modes, m)
				}
			}
		}
		for _, m := range append([]string{""}, modes...) {
			j, ok := jobs[key{c.Package, m}]
			if !ok {
				t.Errorf("matrix.json: no job for %s with %s=%q", c.Package, vmtest.AttachModeEnv, m)
				continue
			}
			if !slices.ContainsFunc(j.Args, func(a string) bool {
				return strings.HasPrefix(a, "-test.run=") && strings.Contains(a, "Privileged")
			}) {
				t.Errorf("matrix.json: job %s does not select the privileged tests (-test.run=...Privileged...): %v", j.Name, j.Args)
			}
		}
		for k, j := range jobs {
			if k.pkg == c.Package && k.mode != "" && !slices.Contains(modes, k.mode) {
				t.Errorf("matrix.json: job %s forces %s, which no hook of %s offers as an alternative", j.Name, k.mode, c.Collector)
			}
		}
	}
	if _, ok := jobs[key{"./collectors/hook", ""}]; !ok {
		t.Error("matrix.json: no job for ./collectors/hook (the verifier-rejection test)")
	}
}

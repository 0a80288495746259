package jobrun

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

func sh(name, script string, timeout time.Duration) Job {
	return Job{Name: name, Argv: []string{"/bin/sh", "-c", script}, TimeoutMS: timeout.Milliseconds()}
}

func TestRun(t *testing.T) {
	spec := &Spec{Jobs: []Job{
		sh("ok", "echo out; echo err >&2", 10*time.Second),
		sh("nonewline", "printf partial", 10*time.Second),
		sh("exit3", "exit 3", 10*time.Second),
		// The background sleep holds the output pipe: the whole group must be killed.
		sh("hang", "sleep 60 & sleep 60", 300*time.Millisecond),
		sh("segv", "kill -SEGV $$", 10*time.Second),
		sh("env", `echo "A=$A B=$B MODE=$VMTEST_MODE PWD=$PWD"`, 10*time.Second),
		{Name: "missing", Argv: []string{"/nonexistent/prog"}, TimeoutMS: 1000},
	}}
	spec.Jobs[5].Env = map[string]string{"A": "job", "B": "b"}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base := BaseEnv("host", "1.2.3", dir)
	base["A"] = "base"
	var out bytes.Buffer
	start := time.Now()
	if err := Run(context.Background(), spec, Options{KernelRelease: "1.2.3", BaseEnv: base, DefaultDir: dir}, &out); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("run took %s: the hanging job was not killed with its children", took)
	}
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		"^=== VMTEST KERNEL 1.2.3$",
		"(?s)=== VMTEST BEGIN ok\n(out\nerr|err\nout)\n=== VMTEST END ok exit=0 dur=[0-9]+\n",
		"partial\n=== VMTEST END nonewline exit=0 ",
		"=== VMTEST END exit3 exit=3 ",
		"=== VMTEST END hang exit=timeout ",
		"=== VMTEST END segv exit=signal-SIGSEGV ",
		"A=job B=b MODE=host PWD=" + regexp.QuoteMeta(dir) + "\n",
		"vmtest: starting /nonexistent/prog: .*\n=== VMTEST END missing exit=start-error ",
		"=== VMTEST DONE\n$",
	} {
		if !regexp.MustCompile("(?m)" + want).MatchString(got) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestRunDeadline(t *testing.T) {
	spec := &Spec{Jobs: []Job{sh("slow", "sleep 60", 60*time.Second), sh("never", "true", time.Second)}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, spec, Options{DefaultDir: t.TempDir()}, &out); err == nil {
		t.Error("want the deadline error")
	}
	got := out.String()
	if !strings.Contains(got, "=== VMTEST END slow exit=timeout") || !strings.Contains(got, "=== VMTEST DEADLINE") || strings.Contains(got, "BEGIN never") {
		t.Errorf("unexpected output:\n%s", got)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		spec Spec
		bad  bool
	}{
		{Spec{Jobs: []Job{{Name: "a", Argv: []string{"x"}, TimeoutMS: 1}}}, false},
		{Spec{Jobs: []Job{{Name: "a b", Argv: []string{"x"}, TimeoutMS: 1}}}, true},
		{Spec{Jobs: []Job{{Name: "a", TimeoutMS: 1}}}, true},
		{Spec{Jobs: []Job{{Name: "a", Argv: []string{"x"}}}}, true},
		{Spec{Jobs: []Job{{Name: "a", Argv: []string{"x"}, TimeoutMS: 1}, {Name: "a", Argv: []string{"x"}, TimeoutMS: 1}}}, true},
	} {
		if err := tt.spec.Validate(); (err != nil) != tt.bad {
			t.Errorf("%+v: err=%v, want bad=%v", tt.spec, err, tt.bad)
		}
	}
	s := Spec{Jobs: []Job{{TimeoutMS: 1000}, {TimeoutMS: 2000}}}
	if d := s.Deadline(); d != time.Minute+3*time.Second {
		t.Errorf("Deadline = %s", d)
	}
}

func TestReleaseLabel(t *testing.T) {
	for _, tt := range []struct{ release, want string }{
		{"5.10.0-32-cloud-amd64", "5.10"},
		{"6.1.0-57-cloud-amd64", "6.1"},
		{"6.12.117+deb12-cloud-amd64", "6.12"},
		{"6.18.44-fc-v1045", "6.18"},
		{"6.1-rc3", "6.1"},
		{"unknown", "unknown"},
	} {
		if got := ReleaseLabel(tt.release); got != tt.want {
			t.Errorf("ReleaseLabel(%q) = %q, want %q", tt.release, got, tt.want)
		}
	}
}

// TestRunOnlyTheKernelsJobs: a job limited to other kernels is left out
// without a marker; one limited to this kernel, and one not limited, run.
func TestRunOnlyTheKernelsJobs(t *testing.T) {
	spec := &Spec{Jobs: []Job{
		sh("everywhere", "true", 10*time.Second),
		sh("here", "true", 10*time.Second),
		sh("elsewhere", "true", 10*time.Second),
	}}
	spec.Jobs[1].Kernels = []string{"5.10", "6.1"}
	spec.Jobs[2].Kernels = []string{"6.12", "host"}
	var out bytes.Buffer
	if err := Run(context.Background(), spec, Options{KernelRelease: "6.1.0-57-cloud-amd64", DefaultDir: t.TempDir()}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.Contains(got, "BEGIN everywhere") || !strings.Contains(got, "BEGIN here") || strings.Contains(got, "elsewhere") {
		t.Errorf("want everywhere and here, not elsewhere:\n%s", got)
	}
}

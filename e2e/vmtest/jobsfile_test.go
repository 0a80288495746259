package vmtest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadJobsFile(t *testing.T) {
	tests := []struct {
		name, json, err string
	}{
		{"ok", `{"jobs":[{"name":"a","package":"./x","timeout":"90s","env":{"K":"v"}},{"name":"b","binary":"b.test","args":["-test.v"]}]}`, ""},
		{"typo", `{"jobs":[{"name":"a","package":"./x","timout":"90s"}]}`, "unknown field"},
		{"both sources", `{"jobs":[{"name":"a","package":"./x","binary":"y"}]}`, "exactly one"},
		{"no source", `{"jobs":[{"name":"a"}]}`, "exactly one"},
		{"bad name", `{"jobs":[{"name":"a b","binary":"y"}]}`, "job name"},
		{"duplicate", `{"jobs":[{"name":"a","binary":"y"},{"name":"a","binary":"z"}]}`, "duplicate"},
		{"bad duration", `{"jobs":[{"name":"a","binary":"y","timeout":"soon"}]}`, "duration"},
		{"numeric duration", `{"jobs":[{"name":"a","binary":"y","timeout":90}]}`, "duration"},
		{"bad env", `{"jobs":[{"name":"a","binary":"y","env":{"A=B":"c"}}]}`, "environment"},
		{"empty", `{"jobs":[]}`, "no jobs"},
		{"bad kernel label", `{"jobs":[{"name":"a","binary":"y","kernels":["5.10,6.1"]}]}`, "kernel label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "jobs.json")
			if err := os.WriteFile(p, []byte(tt.json), 0o644); err != nil {
				t.Fatal(err)
			}
			jf, err := LoadJobsFile(p)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if jf.Jobs[0].timeout() != 90*time.Second || jf.Jobs[1].timeout() != DefaultJobTimeout {
					t.Errorf("timeouts %s %s", jf.Jobs[0].timeout(), jf.Jobs[1].timeout())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("err = %v, want it to mention %q", err, tt.err)
			}
		})
	}
}

func TestGoTestArgs(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"-test.v", "-test.timeout=54s"}},
		{[]string{"-test.run=X"}, []string{"-test.v", "-test.timeout=54s", "-test.run=X"}},
		{[]string{"-test.v=true", "-test.timeout", "5s"}, []string{"-test.v=true", "-test.timeout", "5s"}},
		{[]string{"--test.v"}, []string{"-test.timeout=54s", "--test.v"}},
	}
	for _, tt := range tests {
		if got := goTestArgs(tt.args, time.Minute); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("goTestArgs(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

func TestJobsOn(t *testing.T) {
	jobs := []preparedJob{
		{JobDef: JobDef{Name: "all"}},
		{JobDef: JobDef{Name: "old", Kernels: []string{"5.10", "6.1"}}},
		{JobDef: JobDef{Name: "host", Kernels: []string{HostKernel}}},
	}
	for label, want := range map[string]string{"5.10": "all old", "6.12": "all", HostKernel: "all host"} {
		if got := strings.Join(jobNames(jobsOn(jobs, label)), " "); got != want {
			t.Errorf("jobs on %s: %q, want %q", label, got, want)
		}
	}
}

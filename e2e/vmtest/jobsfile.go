package vmtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/otelbee/otelbee/e2e/vmtest/internal/jobrun"
)

// JobsFile lists what to run on every kernel. In JSON:
//
//	{
//	  "jobs": [
//	    {
//	      "name": "selftest",
//	      "package": "./e2e/vmtest/selftest",
//	      "args": ["-test.run=TestAttach"],
//	      "env": {"OTELBEE_LOG": "debug"},
//	      "timeout": "2m"
//	    },
//	    {
//	      "name": "tcp",
//	      "binary": "build/vmtest/bin/tcp.test",
//	      "args": ["-test.v"],
//	      "timeout": "90s"
//	    }
//	  ]
//	}
//
// A job has either "package" (a Go package the harness builds with `go test -c`,
// CGO_ENABLED=0; it then adds -test.v, and -test.timeout a little under the job's timeout so a
// hang prints stacks, unless args set them) or "binary" (a prebuilt static executable; relative
// paths are relative to the repository root). In the VM, binaries live in /bin/<base name> and
// jobs run in /tmp; on the host they run from where they are, in a scratch directory.
type JobsFile struct {
	Jobs []JobDef `json:"jobs"`
}

// JobDef is one job of a jobs file.
type JobDef struct {
	Name    string            `json:"name"`
	Package string            `json:"package,omitempty"`
	Binary  string            `json:"binary,omitempty"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Timeout Duration          `json:"timeout,omitempty"`
	// Kernels limits the job to these kernel labels ("5.10", "6.1", "6.12", "host"); empty
	// means every kernel of the run. The matrix forces each attach mode on the kernels where
	// it tells something new rather than on all of them: it keeps `make test` within its time.
	Kernels []string `json:"kernels,omitempty"`
}

// runsOn reports whether the job runs on the kernel with this label.
func (j JobDef) runsOn(label string) bool { return jobrun.OnKernel(j.Kernels, label) }

// DefaultJobTimeout applies to jobs without a timeout.
const DefaultJobTimeout = 2 * time.Minute

// Duration is a time.Duration written as a Go duration string ("90s") in JSON.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"90s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadJobsFile reads and validates a jobs file. Unknown fields are errors, so a typo
// ("timout") does not silently fall back to a default.
func LoadJobsFile(path string) (*JobsFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading jobs file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var jf JobsFile
	if err := dec.Decode(&jf); err != nil {
		return nil, fmt.Errorf("parsing jobs file %s: %w", path, err)
	}
	if err := jf.Validate(); err != nil {
		return nil, fmt.Errorf("jobs file %s: %w", path, err)
	}
	return &jf, nil
}

// Validate checks names, sources and timeouts.
func (jf *JobsFile) Validate() error {
	if len(jf.Jobs) == 0 {
		return errors.New("no jobs")
	}
	seen := map[string]bool{}
	var errs []error
	for i, j := range jf.Jobs {
		if err := jobrun.ValidateName(j.Name); err != nil {
			errs = append(errs, fmt.Errorf("job %d: %w", i, err))
			continue
		}
		if seen[j.Name] {
			errs = append(errs, fmt.Errorf("job %q: duplicate name", j.Name))
		}
		seen[j.Name] = true
		if (j.Package == "") == (j.Binary == "") {
			errs = append(errs, fmt.Errorf("job %q: set exactly one of \"package\" and \"binary\"", j.Name))
		}
		if j.Timeout < 0 {
			errs = append(errs, fmt.Errorf("job %q: negative timeout", j.Name))
		}
		for _, k := range j.Kernels {
			if k == "" || strings.ContainsAny(k, ", \x00") {
				errs = append(errs, fmt.Errorf("job %q: bad kernel label %q", j.Name, k))
			}
		}
		for k := range j.Env {
			if k == "" || strings.ContainsAny(k, "= \x00") {
				errs = append(errs, fmt.Errorf("job %q: bad environment variable name %q", j.Name, k))
			}
		}
	}
	return errors.Join(errs...)
}

func (j JobDef) timeout() time.Duration {
	if j.Timeout <= 0 {
		return DefaultJobTimeout
	}
	return time.Duration(j.Timeout)
}

// goTestArgs adds -test.v (the report is per test only with it) and a -test.timeout 10% under
// the job's timeout (so a hung test panics with all goroutine stacks before the harness has to
// kill it silently), unless args already set them.
func goTestArgs(args []string, jobTimeout time.Duration) []string {
	hasV, hasTimeout := false, false
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		hasV = hasV || a == "test.v" || strings.HasPrefix(a, "test.v=")
		hasTimeout = hasTimeout || a == "test.timeout" || strings.HasPrefix(a, "test.timeout=")
	}
	var out []string
	if !hasV {
		out = append(out, "-test.v")
	}
	if !hasTimeout {
		out = append(out, "-test.timeout="+(jobTimeout-jobTimeout/10).String())
	}
	return append(out, args...)
}

package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The state file keeps what only exec could tell: the service (and
// resource attributes) a process was named by in the environment it was
// exec'd with. Programs that
// rewrite their environment area for their process titles (nginx,
// postgres, php-fpm) no longer show it in /proc, so an agent started after
// them would name them by their executable: without the file every agent
// restart would rename such services and split their series.

// stateVersion is the state file's format.
const stateVersion = 1

// maxSaved bounds the state file: processes named by their environment are
// usually a few dozen, a few thousand on a crowded host.
var maxSaved = 10000

// maxStateBytes bounds what is read back (maxSaved entries fit well within).
const maxStateBytes = 4 << 20

type stateFile struct {
	Version int `json:"version"`
	// BootID tells a file from before a reboot, whose pids and start times
	// (ticks since boot) may name other processes now.
	BootID    string         `json:"boot_id"`
	Processes []savedProcess `json:"processes"`
}

// savedProcess is one process, recognised again by pid, start time and
// executable: a reused pid starts at another time, and a process that
// exec'd while the agent was away runs another executable. Env holds the
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES entries that named it,
// read again as if at exec.
type savedProcess struct {
	PID        uint32 `json:"pid"`
	Start      uint64 `json:"start"`
	Executable string `json:"executable"`
	Env        string `json:"env"`
}

// Persist restores the identities a previous run saved in path, and keeps
// saving the cache's there (Run saves after each sweep when they changed,
// and when it ends). An unusable path returns an error and the resolver
// keeps nothing; an unreadable or stale file is logged and replaced.
func (r *Resolver) Persist(path string, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the state directory: %w", err)
	}
	restored, stale, err := r.restore(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		log.Warn("ignoring the saved process identities", "path", path, "error", err)
	default:
		log.Info("restored process identities learned at exec", "path", path, "restored", restored, "stale", stale)
	}
	r.stateMu.Lock()
	r.statePath, r.stateLog = path, log
	r.stateMu.Unlock()
	if err := r.save(); err != nil {
		r.stateMu.Lock()
		r.statePath = ""
		r.stateMu.Unlock()
		return err
	}
	return nil
}

func (r *Resolver) restore(path string) (restored, stale int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return 0, 0, fmt.Errorf("reading: %w", err)
	}
	if len(b) > maxStateBytes {
		return 0, 0, fmt.Errorf("larger than %d bytes", maxStateBytes)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, 0, fmt.Errorf("parsing: %w", err)
	}
	if st.Version != stateVersion {
		return 0, 0, fmt.Errorf("format version %d, want %d", st.Version, stateVersion)
	}
	if boot := r.bootID(); boot == "" || st.BootID != boot {
		return 0, len(st.Processes), nil
	}
	for _, sp := range st.Processes {
		if sp.PID == 0 || sp.Env == "" {
			stale++
			continue
		}
		p := r.read(sp.PID, false, "", []byte(sp.Env), 0)
		if p.startTime != sp.Start || p.ExecutableName != sp.Executable {
			stale++
			continue
		}
		r.mu.Lock()
		r.insert(sp.PID, p)
		r.mu.Unlock()
		restored++
	}
	return restored, stale, nil
}

// saveLogged saves, logging when saving starts or stops failing.
func (r *Resolver) saveLogged() {
	err := r.save()
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	switch {
	case err != nil && !r.saveFailing:
		r.stateLog.Warn("process identities may not survive a restart", "error", err)
	case err == nil && r.saveFailing:
		r.stateLog.Info("saving process identities again", "path", r.statePath)
	}
	r.saveFailing = err != nil
}

// save writes the identities named by their environment, of live
// processes, when they differ from what was last written.
func (r *Resolver) save() error {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if r.statePath == "" {
		return nil
	}
	st := stateFile{Version: stateVersion, BootID: r.bootID(), Processes: []savedProcess{}}
	r.mu.Lock()
	for pid, p := range r.cache {
		if _, dead := r.dead[pid]; dead || len(p.otelEnv) == 0 || p.startTime == 0 {
			continue
		}
		st.Processes = append(st.Processes, savedProcess{PID: pid, Start: p.startTime,
			Executable: p.ExecutableName, Env: string(p.otelEnv)})
	}
	r.mu.Unlock()
	slices.SortFunc(st.Processes, func(a, b savedProcess) int { return int(a.PID) - int(b.PID) })
	if len(st.Processes) > maxSaved {
		st.Processes = st.Processes[:maxSaved]
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding the process state: %w", err)
	}
	if bytes.Equal(b, r.saved) {
		return nil
	}
	if err := writeAtomic(r.statePath, b); err != nil {
		return fmt.Errorf("saving the process state: %w", err)
	}
	r.saved = b
	return nil
}

// writeAtomic replaces path with b: a crash leaves the old file or the
// new one, never half of one.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (r *Resolver) bootID() string {
	b, err := os.ReadFile(filepath.Join(r.procRoot, "sys", "kernel", "random", "boot_id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

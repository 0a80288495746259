package execwatch

import (
	"encoding/binary"
	"testing"
)

func execRecord(tgid uint32, flags execExecFlags, env string) []byte {
	b := make([]byte, execHeaderSize+len(env))
	binary.LittleEndian.PutUint32(b[execTgidOffset:], tgid)
	binary.LittleEndian.PutUint32(b[execFlagsOffset:], uint32(flags))
	binary.LittleEndian.PutUint32(b[execEnvLenOffset:], uint32(len(env)))
	copy(b[execExeOffset:], "curl")
	binary.LittleEndian.PutUint64(b[execCgroupOffset:], 0x1234)
	copy(b[execHeaderSize:], env)
	return b
}

func TestDecodeExec(t *testing.T) {
	env := "PATH=/bin\x00OTEL_SERVICE_NAME=web\x00"
	tests := []struct {
		name    string
		raw     []byte
		ok      bool
		wantEnv string // "<nil>": read /proc instead
	}{
		{"whole", execRecord(7, 0, env), true, env},
		{"empty environment", execRecord(7, 0, ""), true, ""},
		{"unreadable", execRecord(7, execExecFlagsEXEC_ENV_UNREADABLE, ""), true, "<nil>"},
		{"cut, variable seen", execRecord(7, execExecFlagsEXEC_ENV_TRUNCATED, env), true, env},
		{"cut before any OTEL_", execRecord(7, execExecFlagsEXEC_ENV_TRUNCATED, "PATH=/bin\x00"), true, "<nil>"},
		{"length past the record", execRecord(7, 0, env)[:execHeaderSize+3], true, "<nil>"},
		{"short header", []byte{1, 2, 3}, false, "<nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgid, exe, got, cgroup, ok := decodeExec(tt.raw)
			if ok != tt.ok {
				t.Fatalf("ok %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if tgid != 7 || exe != "curl" || cgroup != 0x1234 {
				t.Fatalf("tgid %d, executable %q, cgroup %#x", tgid, exe, cgroup)
			}
			gotS := "<nil>"
			if got != nil {
				gotS = string(got)
			}
			if gotS != tt.wantEnv {
				t.Fatalf("env %q, want %q", gotS, tt.wantEnv)
			}
		})
	}
}

func FuzzDecodeExec(f *testing.F) {
	f.Add(execRecord(1, 0, "A=b\x00"))
	f.Add(execRecord(1, execExecFlagsEXEC_ENV_TRUNCATED, "OTEL_SERVICE_NAME=x"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _, env, _, _ := decodeExec(raw)
		if len(env) > len(raw) {
			t.Fatal("environment longer than the record")
		}
	})
}

package settings

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type opts struct {
	Level   string
	Spans   bool
	Timeout time.Duration
	Ports   []uint16
	Limit   uint32
}

func table(o *opts) []Setting {
	return []Setting{
		{Flag: "log.level", Env: []string{"X_LOG_LEVEL", "X_STD_LOG_LEVEL"}, Key: "log.level", Value: String(&o.Level), Help: "level"},
		{Flag: "spans", Env: []string{"X_SPANS"}, Key: "spans", Value: Bool(&o.Spans), Help: "spans"},
		{Flag: "timeout", Key: "net.timeout", Value: Duration(&o.Timeout), Help: "timeout"},
		{Flag: "ports", Key: "net.ports", Value: Ports(&o.Ports), Help: "ports"},
		{Key: "net.limit", Value: Uint32(&o.Limit), Help: "limit",
			Check: func() error {
				if o.Limit > 10 {
					return errors.New("at most 10")
				}
				return nil
			}},
	}
}

func getenv(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

// load applies file, then the environment and flags, as the agent does.
func load(t *testing.T, args []string, env map[string]string, file string) (opts, error) {
	t.Helper()
	o := opts{Level: "info", Timeout: 5 * time.Second}
	tb := table(&o)
	if err := Validate(tb); err != nil {
		t.Fatal(err)
	}
	given, _, err := Parse(tb, args, getenv(env))
	if err != nil {
		return o, err
	}
	if err := DecodeYAML([]byte(file), tb); err != nil {
		return o, err
	}
	if err := ApplyGiven(tb, given); err != nil {
		return o, err
	}
	return o, RunChecks(tb)
}

func TestPrecedence(t *testing.T) {
	file := "log:\n  level: warn\nnet:\n  timeout: 2s\n  ports: [53, 5353]\n"
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		level string
	}{
		{"default", nil, nil, "info"},
		{"file over default", nil, nil, "warn"},
		{"env over file", nil, map[string]string{"X_LOG_LEVEL": "debug"}, "debug"},
		{"first variable wins", nil, map[string]string{"X_LOG_LEVEL": "debug", "X_STD_LOG_LEVEL": "error"}, "debug"},
		{"second variable alone", nil, map[string]string{"X_STD_LOG_LEVEL": "error"}, "error"},
		{"flag over env", []string{"--log.level=error"}, map[string]string{"X_LOG_LEVEL": "debug"}, "error"},
		{"empty flag is a value", []string{"--log.level="}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := file
			if tt.name == "default" {
				f = ""
			}
			o, err := load(t, tt.args, tt.env, f)
			if err != nil {
				t.Fatal(err)
			}
			if o.Level != tt.level {
				t.Fatalf("level %q, want %q", o.Level, tt.level)
			}
			if f != "" && (o.Timeout != 2*time.Second || len(o.Ports) != 2 || o.Ports[1] != 5353) {
				t.Fatalf("file not applied: %+v", o)
			}
		})
	}
	o, err := load(t, []string{"--spans", "--timeout=1m", "--ports=9,10"}, nil, file)
	if err != nil || !o.Spans || o.Timeout != time.Minute || len(o.Ports) != 2 || o.Ports[0] != 9 {
		t.Fatalf("flags over file: %+v %v", o, err)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{"bad bool flag", []string{"--spans=maybe"}, nil, "", `invalid value "maybe" for spans: want true or false`},
		{"bad bool env names it", nil, map[string]string{"X_SPANS": "perhaps"}, "", `invalid value "perhaps" for spans: want true or false (from X_SPANS)`},
		{"bad duration", []string{"--timeout=soon"}, nil, "", `invalid value "soon" for timeout: want a duration`},
		{"bad port", []string{"--ports=53,70000"}, nil, "", `invalid value "53,70000" for ports: "70000" is not a port from 1 to 65535`},
		{"unknown flag", []string{"--nope"}, nil, "", "flag provided but not defined: -nope"},
		{"unknown key", nil, nil, "net:\n  timeot: 1s\n", "line 2: field net.timeot not found (valid: limit, ports, timeout)"},
		{"unknown top key", nil, nil, "colectors: [a]\n", "field colectors not found (valid: log, net, spans)"},
		{"key twice", nil, nil, "spans: true\nspans: false\n", "line 2: key spans is given twice"},
		{"not a mapping", nil, nil, "net: 5\n", "line 1: net must be a mapping of keys (limit, ports, timeout)"},
		{"wrong type", nil, nil, "net:\n  limit: lots\n", "net.limit: line 2: cannot unmarshal !!str `lots` into uint32"},
		{"second document", nil, nil, "spans: true\n---\nspans: false\n", "more than one YAML document"},
		{"check names the setting", nil, nil, "net:\n  limit: 11\n", "net.limit: at most 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.args, tt.env, tt.file)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestFileEdgeCases(t *testing.T) {
	for _, f := range []string{"", "# only a comment\n", "net:\n", "{}\n"} {
		if _, err := load(t, nil, nil, f); err != nil {
			t.Errorf("%q: %v", f, err)
		}
	}
}

func TestValidate(t *testing.T) {
	var a, b string
	tests := []struct {
		table []Setting
		want  string
	}{
		{[]Setting{{Flag: "x", Value: String(&a), Help: "h"}, {Flag: "x", Value: String(&b), Help: "h"}}, "flag x declared by both x and x"},
		{[]Setting{{Flag: "x", Env: []string{"E"}, Value: String(&a), Help: "h"}, {Flag: "y", Env: []string{"E"}, Value: String(&b), Help: "h"}}, "variable E declared by both x and y"},
		{[]Setting{{Key: "k", Value: String(&a), Help: "h"}, {Key: "k", Value: String(&b), Help: "h"}}, "key k declared"},
		{[]Setting{{Flag: "x", Value: String(&a)}}, "no help"},
		{[]Setting{{Flag: "x", Help: "h"}}, "no value"},
		{[]Setting{{Help: "h"}}, "no flag, key or variable"},
	}
	for _, tt := range tests {
		if err := Validate(tt.table); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("got %v, want %q", err, tt.want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	o := opts{Timeout: 5 * time.Minute, Ports: []uint16{53}}
	tb := table(&o)
	tb = append(tb, Setting{OtherEnv: []string{"A_(B_|C_)D"}, Default: "`x`", Help: "a | b"})
	md := Markdown(tb)
	for _, want := range []string{
		"| `--log.level` | `X_LOG_LEVEL`, `X_STD_LOG_LEVEL` | `log.level` |  | level |",
		"| `--timeout` |  | `net.timeout` | `5m` | timeout |",
		"| `--ports` |  | `net.ports` | `53` | ports |",
		"|  | `A_(B_\\|C_)D` |  | `x` | a \\| b |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	doc := "intro\n" + BeginMarker + "\nold\n" + EndMarker + "\nrest\n"
	out, err := Replace(doc, "new\n")
	if err != nil || out != "intro\n"+BeginMarker+"\nnew\n"+EndMarker+"\nrest\n" {
		t.Fatalf("Replace: %q, %v", out, err)
	}
	if _, err := Replace("no markers", "x"); err == nil {
		t.Fatal("Replace without markers succeeded")
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1.5s", 0: "0s"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}

func TestBetween(t *testing.T) {
	n := 5
	if err := Between(&n, 1, 10)(); err != nil {
		t.Fatal(err)
	}
	n = 11
	if err := Between(&n, 1, 10)(); err == nil || err.Error() != "must be between 1 and 10, got 11" {
		t.Fatalf("got %v", err)
	}
}

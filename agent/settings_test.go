package agent

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/otelbee/otelbee/agent/settings"
)

// TestSettingsREADME fails when the README's settings table is not what
// the declarations generate (make test catches a setting added without
// its docs).
func TestSettingsREADME(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := settings.Replace(string(b), SettingsMarkdown())
	if err != nil {
		t.Fatal(err)
	}
	if want != string(b) {
		t.Fatal("README.md's settings table differs from the declarations: run go run ./agent/settings/readme")
	}
}

// TestSettingsDeclared: no two settings share a flag, a variable or a key,
// and every field of Config is filled by a setting, so a field added
// without a declaration (unreachable from flags, environment and file) is
// caught here.
func TestSettingsDeclared(t *testing.T) {
	cfg := DefaultConfig()
	table := cfg.Settings()
	if err := settings.Validate(table); err != nil {
		t.Fatal(err)
	}
	bound := map[uintptr]bool{}
	for _, s := range table {
		if s.Value != nil {
			bound[reflect.ValueOf(s.Value.Target()).Pointer()] = true
		}
	}
	// Filled from the standard variables by resolveExport and bspSettings,
	// which the README describes beside the table; Deprecated by
	// LoadConfig from the table.
	notSettings := map[string]bool{"Export": true, "OTLP.SpanQueue": true, "Deprecated": true}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		for i := 0; i < v.NumField(); i++ {
			f, name := v.Field(i), v.Type().Field(i).Name
			if path != "" {
				name = path + "." + name
			}
			if notSettings[name] {
				continue
			}
			if f.Kind() == reflect.Struct {
				walk(f, name)
				continue
			}
			if !bound[f.Addr().Pointer()] {
				t.Errorf("Config.%s is filled by no setting: declare it (see Config.Settings)", name)
			}
		}
	}
	walk(reflect.ValueOf(&cfg).Elem(), "")
}

// TestSettingsHelp: --help prints every setting from the same table.
func TestSettingsHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := LoadConfig([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("got %v, want flag.ErrHelp", err)
	}
	cfg := DefaultConfig()
	for _, s := range cfg.Settings() {
		want := s.Name()
		if s.Flag != "" {
			want = "--" + s.Flag
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not show %s", want)
		}
	}
	if !strings.Contains(out.String(), "OTELBEE_HTTP_CAPTURE_BYTES; file: http.capture_bytes; default: 1024") {
		t.Errorf("--help does not show where else a flag is given and its default:\n%s", out.String())
	}
}

// TestSettingsFileOnlyKeys: keys without a flag are read from the file too.
func TestSettingsFileOnlyKeys(t *testing.T) {
	file := t.TempDir() + "/c.yaml"
	os.WriteFile(file, []byte("http:\n  include:\n    ports: [8080, 8443]\n  span_queue: 100\nkubernetes:\n  sync_timeout: 3s\n"), 0o600)
	cfg, err := LoadConfig([]string{"--config", file}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.HTTP.Include.Ports) != 2 || cfg.HTTP.Include.Ports[1] != 8443 || cfg.HTTP.SpanQueue != 100 || cfg.Kubernetes.SyncTimeout.String() != "3s" {
		t.Fatalf("file-only keys: %+v %+v", cfg.HTTP, cfg.Kubernetes)
	}
	if cfg.ConfigFile != file {
		t.Fatalf("ConfigFile %q, want %q", cfg.ConfigFile, file)
	}
}

// TestExampleConfigComplete: docs/config.example.yaml shows every file key.
func TestExampleConfigComplete(t *testing.T) {
	b, err := os.ReadFile("../docs/config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n.Kind != yaml.MappingNode {
			present[path] = true
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			walk(n.Content[i+1], p)
		}
	}
	walk(doc.Content[0], "")
	cfg := DefaultConfig()
	for _, s := range cfg.Settings() {
		if s.Key != "" && s.Deprecated == "" && !present[s.Key] {
			t.Errorf("docs/config.example.yaml lacks %s", s.Key)
		}
	}
}

// TestChartVariablesDeclared: every OTELBEE_* variable the Helm chart sets
// is one a setting reads (an undeclared one would be ignored in silence).
func TestChartVariablesDeclared(t *testing.T) {
	files, err := filepath.Glob("../charts/otelbee/templates/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("chart templates: %v %v", files, err)
	}
	declared := map[string]bool{}
	cfg := DefaultConfig()
	for _, s := range cfg.Settings() {
		for _, e := range s.Env {
			declared[e] = true
		}
	}
	name := regexp.MustCompile(`name:\s*(OTELBEE_[A-Z0-9_]+)`)
	seen := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllStringSubmatch(string(b), -1) {
			seen++
			if !declared[m[1]] {
				t.Errorf("%s sets %s, which no setting reads", filepath.Base(f), m[1])
			}
		}
	}
	if seen == 0 {
		t.Fatal("no OTELBEE_* variable found in the chart: the pattern is stale")
	}
}

// Package settings declares the agent's options, each once: its flag,
// environment variables, file key, default, check and help text in one
// Setting bound to the field it fills. The agent parses the command line,
// reads the environment and the YAML file, prints --help and writes the
// README's settings table from the same declarations, so none of them can
// drift from the others.
//
// A package contributes its own options with a function next to its Config,
// e.g. func Settings(c *Config) []settings.Setting; it imports only this
// package (never agent), so there is no import cycle.
package settings

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Setting is one option.
type Setting struct {
	// Flag is the command-line flag without dashes ("http.capture-bytes");
	// empty: no flag.
	Flag string
	// Env are the environment variables the agent reads for it, the first
	// set one winning ("OTELBEE_HTTP_CAPTURE_BYTES", or a standard OTEL_*).
	Env []string
	// Key is its dotted path in the --config file ("http.capture_bytes");
	// empty: not in the file.
	Key string
	// Value is the field it fills; its text before loading is the default.
	Value Value
	// Help is one sentence or two, Markdown (backticks, links): the README
	// table shows it as it is, --help without the markup.
	Help string
	// Default describes the default when the field's own text does not say
	// it (e.g. "unset: no OTLP" or "RFC 9110 methods and PATCH"); empty:
	// the field's value before loading, which is then the only place the
	// default is stated.
	Default string
	// OtherEnv are variables another component reads for the same thing
	// (the OpenTelemetry SDK, the OTLP exporter): listed in the table only.
	OtherEnv []string
	// Check, when set, runs after every source is applied; its error is
	// prefixed with the setting's name.
	Check func() error
	// Deprecated names the setting that replaced this one (its flag, else
	// its key): this one is an old name bound to the same field, still
	// applied, and Deprecations reports where it was used. Declare it
	// before its replacement, so that the new name wins where both are
	// given the same way. Its help may be empty (it says what replaced it).
	Deprecated string

	given string // where a deprecated setting was given ("--x", a variable, "file key x")
}

// help is the help text the table and --help show.
func (s *Setting) help() string {
	if s.Deprecated == "" {
		return s.Help
	}
	h := "deprecated: use `" + s.Deprecated + "`"
	if s.Help != "" {
		h += "; " + s.Help
	}
	return h
}

// Deprecations are one message per deprecated setting that was given,
// naming its replacement in the same form (flag, variable or file key).
func Deprecations(table []Setting) []string {
	var out []string
	for i := range table {
		s := &table[i]
		if s.Deprecated == "" || s.given == "" {
			continue
		}
		var repl *Setting
		for j := range table {
			if t := &table[j]; t.Deprecated == "" && (t.Flag == s.Deprecated || t.Key == s.Deprecated) {
				repl = t
			}
		}
		use := s.Deprecated
		switch {
		case repl == nil:
		case strings.HasPrefix(s.given, "--") && repl.Flag != "":
			use = "--" + repl.Flag
		case strings.HasPrefix(s.given, "file key ") && repl.Key != "":
			use = "file key " + repl.Key
		case !strings.HasPrefix(s.given, "-") && !strings.HasPrefix(s.given, "file key ") && len(repl.Env) > 0:
			use = repl.Env[0]
		}
		out = append(out, s.given+" is deprecated: use "+use)
	}
	return out
}

// Name is how messages name the setting: its flag, else its file key, else
// its first variable.
func (s *Setting) Name() string {
	switch {
	case s.Flag != "":
		return s.Flag
	case s.Key != "":
		return s.Key
	case len(s.Env) > 0:
		return s.Env[0]
	case len(s.OtherEnv) > 0:
		return s.OtherEnv[0]
	}
	return "?"
}

// Source is where a value given on the command line or in the environment
// came from.
type Source struct {
	From  string // "--log.level" or "OTELBEE_LOG_LEVEL"
	Value string
}

// Apply sets s from src; a bad value is refused in one line naming the
// setting.
func (s *Setting) Apply(src Source) error {
	if err := s.Value.Set(src.Value); err != nil {
		msg := fmt.Sprintf("invalid value %s for %s: %v", Quote(src.Value), s.Name(), err)
		if !strings.HasPrefix(src.From, "-") {
			msg += " (from " + src.From + ")"
		}
		return errors.New(msg)
	}
	return nil
}

// RunChecks runs every setting's Check.
func RunChecks(table []Setting) error {
	for i := range table {
		if c := table[i].Check; c != nil {
			if err := c(); err != nil {
				return fmt.Errorf("%s: %w", table[i].Name(), err)
			}
		}
	}
	return nil
}

// Validate refuses a table with a setting that names nothing, or two
// settings sharing a flag, a variable or a key.
func Validate(table []Setting) error {
	seen := map[string]string{}
	claim := func(kind, v, who string) error {
		if v == "" {
			return nil
		}
		if prev, ok := seen[kind+v]; ok {
			return fmt.Errorf("%s %s declared by both %s and %s", kind, v, prev, who)
		}
		seen[kind+v] = who
		return nil
	}
	for i := range table {
		s := &table[i]
		if s.Flag == "" && s.Key == "" && len(s.Env) == 0 && len(s.OtherEnv) == 0 {
			return fmt.Errorf("setting %d has no flag, key or variable", i)
		}
		if s.Help == "" && s.Deprecated == "" {
			return fmt.Errorf("setting %s has no help text", s.Name())
		}
		if s.Value == nil && (s.Flag != "" || s.Key != "" || len(s.Env) > 0) {
			return fmt.Errorf("setting %s has no value to fill", s.Name())
		}
		if err := claim("flag", s.Flag, s.Name()); err != nil {
			return err
		}
		if err := claim("key", s.Key, s.Name()); err != nil {
			return err
		}
		for _, e := range s.Env {
			if err := claim("variable", e, s.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxQuoted bounds a value quoted in an error message.
const maxQuoted = 128

// Quote renders a user's value for an error message: Go-quoted (control
// characters escaped, so one value is one line) and cut to a prefix.
func Quote(v string) string {
	if len(v) <= maxQuoted {
		return strconv.Quote(v)
	}
	return strconv.Quote(Truncate(v, maxQuoted)) + fmt.Sprintf(" (%d bytes)", len(v))
}

// Truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

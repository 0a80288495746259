package settings

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Given is what the command line and the environment give, by setting
// (its index in the table).
type Given map[int]Source

// Lookup returns the value given for the setting with this flag, if any.
func (g Given) Lookup(table []Setting, flag string) (Source, bool) {
	for i := range table {
		if table[i].Flag == flag {
			src, ok := g[i]
			return src, ok
		}
	}
	return Source{}, false
}

// recorder takes a flag's text for later: the flag is applied last, over
// the file and the environment.
type recorder struct {
	isBool bool
	text   *string
	set    bool
}

func (r *recorder) String() string {
	if r == nil || r.text == nil {
		return ""
	}
	return *r.text
}
func (r *recorder) Set(s string) error { *r.text, r.set = s, true; return nil }
func (r *recorder) IsBoolFlag() bool   { return r.isBool }

// Parse reads the command line and then the environment: a flag wins over
// a variable, a variable listed earlier in Env over a later one. It returns
// the arguments left after the flags. -h and --help return flag.ErrHelp.
func Parse(table []Setting, args []string, getenv func(string) (string, bool)) (Given, []string, error) {
	fs := flag.NewFlagSet("otelbee", flag.ContinueOnError)
	// A mistake is one line (the caller prints the error); help is WriteHelp.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	recs := make([]*recorder, len(table))
	for i := range table {
		s := &table[i]
		if s.Flag == "" {
			continue
		}
		_, isBool := s.Value.(interface{ IsBoolFlag() bool })
		recs[i] = &recorder{isBool: isBool, text: new(string)}
		fs.Var(recs[i], s.Flag, s.Help)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	given := Given{}
	for i, r := range recs {
		if r != nil && r.set {
			given[i] = Source{From: "--" + table[i].Flag, Value: *r.text}
		}
	}
	for i := range table {
		if _, ok := given[i]; ok {
			continue
		}
		for _, name := range table[i].Env {
			if v, ok := getenv(name); ok {
				given[i] = Source{From: name, Value: v}
				break
			}
		}
	}
	return given, fs.Args(), nil
}

// ApplyGiven applies the flags and variables, in table order.
func ApplyGiven(table []Setting, given Given) error {
	for i := range table {
		if src, ok := given[i]; ok {
			if err := table[i].Apply(src); err != nil {
				return err
			}
			if table[i].Deprecated != "" {
				table[i].given = src.From
			}
		}
	}
	return nil
}

// DecodeYAML applies a configuration file: one YAML document whose keys
// are the settings' Keys, nested ("http:\n  capture_bytes: 512"). A key no
// setting declares is refused with the valid ones, as is a key given twice
// or a second document.
func DecodeYAML(data []byte, table []Setting) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty, or comments only
		}
		return err
	}
	// A second document would otherwise be ignored: refuse it rather than
	// run with half the file.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err == nil {
			return errors.New("it holds more than one YAML document (a second \"---\"); put everything in one")
		}
		return err
	}
	byKey := map[string]*Setting{}
	children := map[string][]string{} // "" is the top level
	for i := range table {
		s := &table[i]
		if s.Key == "" {
			continue
		}
		byKey[s.Key] = s
		parts := strings.Split(s.Key, ".")
		for j := range parts {
			parent, child := strings.Join(parts[:j], "."), parts[j]
			if !slices.Contains(children[parent], child) {
				children[parent] = append(children[parent], child)
			}
		}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	return decodeMapping(root, "", byKey, children)
}

func decodeMapping(n *yaml.Node, path string, byKey map[string]*Setting, children map[string][]string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // "tcp:" with nothing under it
	}
	if n.Kind != yaml.MappingNode {
		where := "the file"
		if path != "" {
			where = path
		}
		return fmt.Errorf("line %d: %s must be a mapping of keys (%s)", n.Line, where, strings.Join(sorted(children[path]), ", "))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		full := k.Value
		if path != "" {
			full = path + "." + k.Value
		}
		if seen[k.Value] {
			return fmt.Errorf("line %d: key %s is given twice", k.Line, full)
		}
		seen[k.Value] = true
		if s, ok := byKey[full]; ok {
			if err := v.Decode(s.Value.Target()); err != nil {
				var te *yaml.TypeError
				if errors.As(err, &te) {
					return fmt.Errorf("%s: %s", full, strings.Join(te.Errors, "; "))
				}
				return fmt.Errorf("%s: %s", full, oneLine(err))
			}
			if s.Deprecated != "" {
				s.given = "file key " + full
			}
			continue
		}
		if _, ok := children[full]; ok {
			if err := decodeMapping(v, full, byKey, children); err != nil {
				return err
			}
			continue
		}
		return fmt.Errorf("line %d: field %s not found (valid: %s)", k.Line, full, strings.Join(sorted(children[path]), ", "))
	}
	return nil
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// oneLine joins a multi-line error (yaml lists one problem per line).
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

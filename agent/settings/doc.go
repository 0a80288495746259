package settings

import (
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Markers delimit the generated table in a Markdown file.
const (
	BeginMarker = "<!-- BEGIN SETTINGS (generated from the declarations: go run ./agent/settings/readme) -->"
	EndMarker   = "<!-- END SETTINGS -->"
)

// Markdown is the settings table: flag, environment, file key, default,
// description, one row per setting in table order. The table must be bound
// to a configuration holding the defaults.
func Markdown(table []Setting) string {
	var b strings.Builder
	b.WriteString("| flag | environment | file key | default | description |\n|---|---|---|---|---|\n")
	for i := range table {
		s := &table[i]
		var env []string
		for _, e := range s.allEnv() {
			env = append(env, code(e))
		}
		flag := ""
		if s.Flag != "" {
			flag = code("--" + s.Flag)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", flag, cell(strings.Join(env, ", ")), code(s.Key), cell(s.defaultText(true)), cell(s.help()))
	}
	return b.String()
}

// allEnv are the variables the agent reads, then those others read.
func (s *Setting) allEnv() []string { return append(append([]string(nil), s.Env...), s.OtherEnv...) }

// defaultText is the default as the docs (markdown) or --help show it.
func (s *Setting) defaultText(markdown bool) string {
	if s.Default != "" {
		return s.Default
	}
	if s.Value == nil {
		return ""
	}
	v := s.Value.String()
	if markdown {
		return code(v)
	}
	return v
}

func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + s + "`"
}

// cell keeps a table cell one cell: a | would end it.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

// Replace puts table between the markers of doc.
func Replace(doc, table string) (string, error) {
	begin := strings.Index(doc, BeginMarker)
	end := strings.Index(doc, EndMarker)
	if begin < 0 || end < begin {
		return "", fmt.Errorf("markers %q and %q not found in order", BeginMarker, EndMarker)
	}
	return doc[:begin+len(BeginMarker)] + "\n" + table + doc[end:], nil
}

var mdLink = regexp.MustCompile(`\[([^\]]*)\]\(([^)]*)\)`)

// plain strips the Markdown of help text for a terminal.
func plain(s string) string {
	s = mdLink.ReplaceAllStringFunc(s, func(link string) string {
		m := mdLink.FindStringSubmatch(link)
		if m[1] == m[2] {
			return m[1]
		}
		return m[1] + " (" + m[2] + ")"
	})
	return strings.ReplaceAll(s, "`", "")
}

// WriteHelp prints every setting for --help: name, where else it can be
// given, default, help.
func WriteHelp(w io.Writer, table []Setting) {
	for i := range table {
		s := &table[i]
		head := "--" + s.Flag
		if s.Flag == "" {
			head = s.Name()
			if s.Key == "" {
				head = strings.Join(s.allEnv(), ", ")
			}
		}
		var also []string
		if s.Flag != "" || s.Key != "" {
			also = append(also, s.allEnv()...)
		}
		if s.Key != "" && s.Flag != "" {
			also = append(also, "file: "+s.Key)
		} else if s.Key != "" {
			head = "file: " + s.Key
		}
		if d := plain(s.defaultText(false)); d != "" {
			also = append(also, "default: "+d)
		}
		fmt.Fprintf(w, "  %s", head)
		if len(also) > 0 {
			fmt.Fprintf(w, "  (%s)", strings.Join(also, "; "))
		}
		fmt.Fprintf(w, "\n      %s\n", plain(s.help()))
	}
}

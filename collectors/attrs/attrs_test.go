package attrs

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendValid(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "",
		"/café":            "/café",
		"/caf\xc3":         "/caf\uFFFD",
		"/caf\xc3\xc3/x":   "/caf\uFFFD/x",
		"\xff\xfe":         "\uFFFD",
		"a\x80b\x80":       "a\uFFFDb\uFFFD",
		"\xed\xa0\x80":     "\uFFFD", // a surrogate half is not UTF-8
		"日本\xe6\x97":       "日本\uFFFD",
		"\x00ctl\x7f":      "\x00ctl\x7f", // control bytes are valid UTF-8
		"\xf4\x90\x80\x80": "\uFFFD",      // beyond U+10FFFF
	} {
		if got := string(AppendValid(nil, []byte(in))); got != want {
			t.Errorf("AppendValid(%q) = %q, want %q", in, got, want)
		}
		if got := String([]byte(in)); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
		if got := Valid(in); got != want {
			t.Errorf("Valid(%q) = %q, want %q", in, got, want)
		}
		if got := strings.ToValidUTF8(in, Replacement); got != want {
			t.Errorf("the standard library disagrees on %q: %q", in, got)
		}
	}
}

func TestAppendValidNoAlloc(t *testing.T) {
	buf := make([]byte, 0, 64)
	in := []byte("/caf\xc3/ok")
	if n := testing.AllocsPerRun(100, func() { buf = AppendValid(buf[:0], in) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// FuzzAppendValid: whatever the input, the output is valid UTF-8, equal to
// the input when that was valid, and what the standard library makes of it.
func FuzzAppendValid(f *testing.F) {
	f.Add([]byte("/caf\xc3"))
	f.Add([]byte("GET /\xff\xfe HTTP/1.1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := AppendValid([]byte("x"), b)
		if !utf8.Valid(out) {
			t.Fatalf("AppendValid(%q) = %q, not UTF-8", b, out)
		}
		if utf8.Valid(b) && string(out[1:]) != string(b) {
			t.Fatalf("valid input %q changed to %q", b, out[1:])
		}
		if want := strings.ToValidUTF8(string(b), Replacement); string(out[1:]) != want {
			t.Fatalf("AppendValid(%q) = %q, strings.ToValidUTF8 %q", b, out[1:], want)
		}
	})
}

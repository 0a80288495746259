// Package attrs makes values taken from observed traffic (paths, routes,
// methods, hosts, header values, DNS names) safe to become attribute values
// and span names. OTLP's protobuf encoding refuses a string that is not
// valid UTF-8, and refuses it for the whole batch it is in: one client
// sending "GET /caf\xc3" would otherwise lose every span and metric point
// exported with it. Every collector passes such bytes through here before
// they become a string attribute.
package attrs

import "unicode/utf8"

// Replacement stands for each run of bytes that is not UTF-8.
const Replacement = "\uFFFD"

// AppendValid appends b to dst as valid UTF-8: each maximal run of invalid
// bytes becomes one U+FFFD, as strings.ToValidUTF8 does. Valid input is
// appended as is; nothing is allocated when dst has room.
func AppendValid(dst, b []byte) []byte {
	if utf8.Valid(b) {
		return append(dst, b...)
	}
	invalid := false
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			if !invalid {
				dst = append(dst, Replacement...)
				invalid = true
			}
			b = b[1:]
			continue
		}
		invalid = false
		dst = append(dst, b[:n]...)
		b = b[n:]
	}
	return dst
}

// String returns b as a valid UTF-8 string (a copy).
func String(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return string(AppendValid(make([]byte, 0, len(b)+2), b))
}

// Valid returns s itself when it is valid UTF-8, else a sanitised copy.
func Valid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string(AppendValid(make([]byte, 0, len(s)+2), []byte(s)))
}

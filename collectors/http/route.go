package httpc

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/otelbee/otelbee/collectors/attrs"
)

// Routes turns request paths into http.route templates. Configured patterns
// are tried first ("/users/{id}/orders", "/static/*"); a path no pattern
// matches is folded by a heuristic: segments that are numbers, UUIDs, hex
// hashes or id-like tokens become placeholders. Each service keeps at most
// max distinct routes per side (server routes, client span names); later
// ones become OverflowRoute and are counted.
//
// A path is cleaned first (CleanPath): its ';' parameters go, and it is
// made valid UTF-8, so neither a session id nor a byte OTLP cannot encode
// reaches a route, a span name or url.path.
type Routes struct {
	patterns [][]string
	known    map[string]bool // the patterns' own templates
	max      int
	bySvc    map[string]*[2]routeSet      // [server, client]
	hosts    map[string]map[string]string // per service: server.address names it called, interned
	scratch  []byte
	clean    []byte
	names    map[spanNameKey]string
	Overflow uint64
}

// OverflowRoute is the http.route of requests past a service's route cap.
const OverflowRoute = "_OTHER"

type routeSet struct {
	routes map[string]string // folded route -> the interned string
}

// NewRoutes validates the patterns.
func NewRoutes(patterns []string, max int) (*Routes, error) {
	r := &Routes{max: max, bySvc: map[string]*[2]routeSet{}, hosts: map[string]map[string]string{}, known: map[string]bool{},
		scratch: make([]byte, 0, maxPath+64), clean: make([]byte, 0, maxPath+16)}
	for _, p := range patterns {
		if err := validatePattern(p); err != nil {
			return nil, err
		}
		pat := strings.Split(strings.Trim(p, "/"), "/")
		r.patterns = append(r.patterns, pat)
		r.known[string(appendPattern(nil, pat))] = true
	}
	return r, nil
}

// Known reports whether route is a configured pattern's template: the
// route the program really has, which http.route may carry. A folded path
// can equal a pattern's template only if the pattern matched the path
// already (patterns are tried first; placeholders match any non-empty
// segment), so the template alone tells where it came from.
func (r *Routes) Known(route string) bool { return r.known[route] }

func validatePattern(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("route pattern %q must start with /", p)
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for i, s := range segs {
		if s == "*" && i != len(segs)-1 {
			return fmt.Errorf("route pattern %q: * may only be the last segment", p)
		}
		if strings.ContainsAny(s, "?#") {
			return fmt.Errorf("route pattern %q: no query or fragment", p)
		}
	}
	return nil
}

// Route returns the route of path for a service (its namespace and name:
// the processes of one service share its cap). It allocates only the first
// time a route is seen.
func (r *Routes) Route(service string, path []byte) string {
	return r.RouteSide(service, false, path)
}

// RouteSide is Route for one side of a service: server routes (client
// false) or the templates of the paths it calls (client true).
func (r *Routes) RouteSide(service string, client bool, path []byte) string {
	if bytes.IndexByte(path, ';') >= 0 || !utf8.Valid(path) {
		r.clean = CleanPath(r.clean[:0], path)
		path = r.clean
	}
	b := r.scratch[:0]
	if pat := r.match(path); pat != nil {
		b = appendPattern(b, pat)
	} else {
		b = Fold(b, path)
	}
	r.scratch = b
	// A service's server routes and the paths it calls as a client are
	// capped apart, so calls to other servers cannot use up its own routes.
	sides := r.bySvc[service]
	if sides == nil {
		sides = &[2]routeSet{{routes: map[string]string{}}, {routes: map[string]string{}}}
		r.bySvc[service] = sides
	}
	set := &sides[0]
	if client {
		set = &sides[1]
	}
	if s, ok := set.routes[string(b)]; ok {
		return s
	}
	if len(set.routes) >= r.max {
		r.Overflow++
		return OverflowRoute
	}
	s := string(b)
	set.routes[s] = s
	return s
}

func appendPattern(b []byte, pat []string) []byte {
	for _, s := range pat {
		b = append(b, '/')
		b = append(b, s...)
	}
	if len(pat) == 0 {
		b = append(b, '/')
	}
	return b
}

func (r *Routes) match(path []byte) []string {
	for _, pat := range r.patterns {
		if matchPattern(pat, path) {
			return pat
		}
	}
	return nil
}

func matchPattern(pat []string, path []byte) bool {
	rest := path
	if len(rest) > 0 && rest[0] == '/' {
		rest = rest[1:]
	}
	for i, seg := range pat {
		if seg == "*" {
			return true
		}
		var cur []byte
		if j := indexByte(rest, '/'); j >= 0 {
			cur, rest = rest[:j], rest[j+1:]
		} else {
			cur, rest = rest, nil
			if i != len(pat)-1 {
				// path ran out
				if i+1 == len(pat)-1 && pat[i+1] == "*" {
					return segMatch(seg, cur)
				}
				return false
			}
		}
		if !segMatch(seg, cur) {
			return false
		}
	}
	return len(rest) == 0
}

func segMatch(seg string, cur []byte) bool {
	if len(seg) >= 2 && seg[0] == '{' && seg[len(seg)-1] == '}' {
		return len(cur) > 0
	}
	return seg == string(cur)
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// Host returns the server.address a service's client metrics carry for a
// Host name it called, interned, valid UTF-8: the first max names of each
// service are kept, later ones are OverflowRoute (ok false), so a client
// calling ever new hosts cannot grow the series. It allocates only the
// first time a name is seen.
func (r *Routes) Host(service string, host []byte) (name string, ok bool) {
	set := r.hosts[service]
	if set == nil {
		set = map[string]string{}
		r.hosts[service] = set
	}
	if s, ok := set[string(host)]; ok {
		return s, true
	}
	if len(set) >= r.max {
		return OverflowRoute, false
	}
	s := attrs.String(host)
	set[string(host)] = s
	return s, true
}

// CleanPath appends path to b without its path parameters (everything from
// a ';' to the end of its segment: "/cart;jsessionid=SECRET/items" is
// "/cart/items"; servers such as Tomcat and Jetty carry session ids there),
// as valid UTF-8 (see package attrs). url.path, routes and span names are
// made from the clean path only.
func CleanPath(b, path []byte) []byte {
	start := len(b)
	for len(path) > 0 {
		i := bytes.IndexByte(path, ';')
		if i < 0 {
			b = append(b, path...)
			break
		}
		b = append(b, path[:i]...)
		path = path[i:]
		j := bytes.IndexByte(path, '/')
		if j < 0 {
			break
		}
		path = path[j:]
	}
	if clean := b[start:]; !utf8.Valid(clean) {
		// Rare: rewrite the tail through a copy of itself.
		var tmp [maxPath]byte
		src := tmp[:0]
		if len(clean) > len(tmp) {
			src = make([]byte, 0, len(clean))
		}
		src = append(src, clean...)
		b = attrs.AppendValid(b[:start], src)
	}
	return b
}

// Fold appends the heuristic template of path to b: "/users/123/orders/
// 5f0c...": "/users/{id}/orders/{hash}". An empty path is "/". path is a
// clean one (CleanPath; Route cleans before it folds).
func Fold(b []byte, path []byte) []byte {
	if len(path) == 0 || path[0] != '/' {
		return append(b, '/')
	}
	rest := path[1:]
	for {
		j := indexByte(rest, '/')
		seg := rest
		if j >= 0 {
			seg = rest[:j]
		}
		b = append(b, '/')
		if ph := placeholder(seg); ph != "" {
			b = append(b, ph...)
		} else {
			b = append(b, seg...)
		}
		if j < 0 {
			break
		}
		rest = rest[j+1:]
	}
	return b
}

// placeholder returns the placeholder a segment folds into, or "" to keep it.
func placeholder(seg []byte) string {
	n := len(seg)
	if n == 0 {
		return ""
	}
	digits, hex, letters, other := 0, 0, 0, 0
	for _, c := range seg {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
			hex++
		case c >= 'g' && c <= 'z', c >= 'G' && c <= 'Z':
			letters++
		case c == '-' || c == '_' || c == '.' || c == '~' || c == '%':
			other++
		default:
			other++
		}
	}
	switch {
	case digits == n:
		return "{id}"
	case isUUID(seg):
		return "{uuid}"
	case n >= 16 && digits+hex == n && digits > 0:
		return "{hash}"
	case n >= 8 && digits >= 2 && letters+hex+digits == n:
		// mixed letters and digits, e.g. "ab12cd34ef", base62 ids
		return "{id}"
	}
	return ""
}

func isUUID(s []byte) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if _, ok := unhex(c | 0x20); !ok {
				return false
			}
		}
	}
	return true
}

// spanNameKey names one span name: method and route.
type spanNameKey struct {
	method Method
	route  string
}

// SpanName is "METHOD target" ("HTTP target" for _OTHER methods), or the
// method alone when target is "" or the overflow route: target is
// http.route (server) or url.template (client), and a span name must have
// low cardinality. Interned: bounded by the route caps, allocated once per
// method and target.
func (r *Routes) SpanName(m Method, target string) string {
	if target == OverflowRoute {
		target = ""
	}
	k := spanNameKey{m, target}
	if n, ok := r.names[k]; ok {
		return n
	}
	method := m.String()
	if m == MethodOther {
		method = "HTTP"
	}
	n := method
	if target != "" {
		n = method + " " + target
	}
	if r.names == nil {
		r.names = map[spanNameKey]string{}
	}
	r.names[k] = n
	return n
}

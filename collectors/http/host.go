package httpc

import (
	"bytes"
	"net/netip"

	"github.com/otelbee/otelbee/collectors/attrs"
)

// defaultPort is the port of an http URI origin whose Host names none.
const defaultPort = 80

// splitHost splits a Host header value (RFC 9110 7.2: host [":" port]) into
// the name server.address carries and the port server.port carries, the
// scheme's default when the header names none. Userinfo, which a Host must
// not carry but a careless client may, is dropped: it is a credential.
// ok is false for an empty host or a port that is not one.
func splitHost(h []byte) (host []byte, port uint16, ok bool) {
	h = stripUserinfo(h)
	port = defaultPort
	if len(h) > 0 && h[0] == '[' { // an IPv6 literal
		end := bytes.IndexByte(h, ']')
		if end < 0 {
			return nil, 0, false
		}
		host, h = h[1:end], h[end+1:]
		if len(h) > 0 {
			if h[0] != ':' {
				return nil, 0, false
			}
			if port, ok = parsePort(h[1:]); !ok {
				return nil, 0, false
			}
		}
		return host, port, len(host) > 0
	}
	host = h
	if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		host = h[:i]
		if port, ok = parsePort(h[i+1:]); !ok {
			return nil, 0, false
		}
	}
	return host, port, len(host) > 0
}

// stripUserinfo drops "user:password@" from an authority.
func stripUserinfo(h []byte) []byte {
	if i := bytes.LastIndexByte(h, '@'); i >= 0 {
		return h[i+1:]
	}
	return h
}

func parsePort(b []byte) (uint16, bool) {
	if len(b) == 0 {
		return defaultPort, true // "host:" is allowed, and means the default
	}
	if len(b) > 5 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// Redacted stands for every query parameter's value in url.query and
// url.full: parameter names tell what a request did, values may be
// tokens, session ids or personal data.
const Redacted = "REDACTED"

// appendRedactedQuery appends query (without its '?') with each
// parameter's value replaced by Redacted, as valid UTF-8: "a=1&b" becomes
// "a=REDACTED&b".
func appendRedactedQuery(dst, query []byte) []byte {
	first := true
	for len(query) > 0 {
		pair := query
		if i := bytes.IndexByte(query, '&'); i >= 0 {
			pair, query = query[:i], query[i+1:]
		} else {
			query = nil
		}
		if len(pair) == 0 {
			continue
		}
		if !first {
			dst = append(dst, '&')
		}
		first = false
		if i := bytes.IndexByte(pair, '='); i >= 0 {
			dst = attrs.AppendValid(dst, pair[:i])
			dst = append(dst, '=')
			dst = append(dst, Redacted...)
		} else {
			dst = attrs.AppendValid(dst, pair)
		}
	}
	return dst
}

// appendURLFull appends a client request's url.full: http://, the
// authority from the Host header (the socket peer without one), the
// cleaned path and, when query is not nil, the redacted query. Never
// credentials: userinfo is dropped, the path has no ';' parameters.
func appendURLFull(dst, host []byte, peer netip.Addr, peerPort uint16, path, query []byte) []byte {
	dst = append(dst, "http://"...)
	if h := stripUserinfo(host); len(h) > 0 {
		dst = attrs.AppendValid(dst, h)
	} else if peer.IsValid() {
		dst = netip.AddrPortFrom(peer, peerPort).AppendTo(dst)
	} else {
		dst = append(dst, "localhost"...) // a Unix domain socket
	}
	var clean [maxPath]byte
	p := CleanPath(clean[:0], path)
	if len(p) == 0 || p[0] != '/' {
		dst = append(dst, '/')
	}
	dst = append(dst, p...)
	if len(query) > 0 {
		dst = append(dst, '?')
		dst = appendRedactedQuery(dst, query)
	}
	return dst
}

package http2

import (
	"encoding/base64"
	"encoding/binary"
)

// Upgraded is the HTTP/1.1 request that upgraded its connection to h2c
// ("Upgrade: h2c", answered with 101): it becomes stream 1.
type Upgraded struct {
	Method, Path, Authority, Scheme []byte
	// HTTP2Settings is the request's HTTP2-Settings header value: the
	// client's SETTINGS, base64url-encoded.
	HTTP2Settings []byte
}

// Upgrade hands the parser a connection upgraded from HTTP/1.1, after the
// server's 101 and before any HTTP/2 byte: the upgrade request is stream 1,
// already complete on the client side (RFC 7540 3.2: its body
// was sent in HTTP/1.1), and its response comes as HTTP/2 on stream 1.
// Call it once, on a new parser.
func (p *Parser) Upgrade(req Upgraded, t Times) {
	if p.maxClientID != 0 || p.dirs[FromClient].started || p.dirs[FromServer].started {
		return
	}
	p.now = t
	p.maxClientID = 1
	st := p.alloc(1)
	st.start = t.Start
	max := p.lim.MaxField
	st.method.set(string(req.Method), max)
	st.path.set(string(cutQuery(req.Path)), max)
	st.authority.set(string(req.Authority), max)
	st.scheme.set(string(req.Scheme), max)
	st.reqHeaders, st.reqDone = true, true
	p.stats.Streams++
	// The settings in the header count as the client's first SETTINGS,
	// acknowledged by the 101 itself.
	if s, err := base64.RawURLEncoding.DecodeString(trimPad(string(req.HTTP2Settings))); err == nil {
		for ; len(s) >= 6; s = s[6:] {
			p.setting(FromClient, binary.BigEndian.Uint16(s), binary.BigEndian.Uint32(s[2:]))
		}
		p.settingsAck(FromServer)
	}
}

func trimPad(s string) string {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	return s
}

// cutQuery drops a path's query string: it may hold secrets.
func cutQuery[T string | []byte](v T) T {
	for i := 0; i < len(v); i++ {
		if v[i] == '?' {
			return v[:i]
		}
	}
	return v
}

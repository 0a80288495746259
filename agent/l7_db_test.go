package agent

import (
	"testing"

	"github.com/otelbee/otelbee/collectors/l7"
)

type textSink struct{ text []string }

func (s *textSink) Exchange(_ *l7.Conn, x *l7.Exchange) {
	for _, a := range x.SpanAttrs[:x.NSpanAttr] {
		if a.Key == "db.query.text" {
			s.text = append(s.text, a.Value.AsString())
		}
	}
}
func (s *textSink) Drop(*l7.Conn, string, int) {}

// --db.query-text reaches both SQL protocols; without it no text leaves.
func TestDBQueryTextOption(t *testing.T) {
	query := map[string][2][]byte{
		"postgresql": {[]byte("Q\x00\x00\x00\x1bSELECT 'secret' FROM t\x00"), []byte("C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05I")},
		"mysql":      {[]byte("\x17\x00\x00\x00\x03SELECT 'secret' FROM t"), []byte("\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00")},
	}
	for _, on := range []bool{false, true} {
		c := DefaultConfig()
		c.DB.QueryText = on
		for name, q := range query {
			s := &textSink{}
			ps := l7Protocols[name](&c).NewParser(&l7.Conn{Role: l7.RoleClient, Midstream: true})
			ps.Feed(&l7.Record{Dir: l7.ToServer, Data: q[0], Total: uint64(len(q[0]))}, s)
			ps.Feed(&l7.Record{Dir: l7.ToClient, Data: q[1], Total: uint64(len(q[1]))}, s)
			want := 0
			if on {
				want = 1
			}
			if len(s.text) != want || (on && s.text[0] != "SELECT ? FROM t") {
				t.Errorf("%s, query text %v: %q", name, on, s.text)
			}
		}
	}
}

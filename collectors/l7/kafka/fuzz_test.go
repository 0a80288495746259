package kafka

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/otelbee/otelbee/collectors/l7"
)

// FuzzParser feeds arbitrary byte streams, whole, cut and with
// head-and-tail gaps: the parser never panics, and when neither run gave
// anything up, both saw the same.
func FuzzParser(f *testing.F) {
	fr := kmsg.NewPtrFetchRequest()
	fr.Version = 13
	f.Add(append(reqFrame(&kmsg.MetadataRequest{Version: 12}, 1), reqFrame(fr, 2)...),
		append(respFrame(metadataResp(12), 1), respFrame(fetchResp(13), 2)...), uint16(9), uint16(30), uint16(0))
	f.Add(reqFrame(produceReq(9, -1), 3), respFrame(produceResp(9), 3), uint16(50), uint16(11), uint16(64))
	f.Add(reqFrame(&kmsg.JoinGroupRequest{Version: 9}, 4), respFrame(&kmsg.JoinGroupResponse{Version: 9}, 4), uint16(3), uint16(3), uint16(20))
	f.Fuzz(func(t *testing.T, reqs, rsps []byte, i, j, gap uint16) {
		whole := feedFuzz(reqs, rsps, len(reqs), len(rsps), 0)
		cut := feedFuzz(reqs, rsps, int(i)%(len(reqs)+1), int(j)%(len(rsps)+1), 0)
		if len(whole.drops) == 0 && len(cut.drops) == 0 && whole.String() != cut.String() {
			t.Fatalf("whole %s, cut %s", whole, cut)
		}
		feedFuzz(reqs, rsps, int(i)%(len(reqs)+1), int(j)%(len(rsps)+1), int(gap))
	})
}

func feedFuzz(reqs, rsps []byte, i, j, gap int) *sink {
	s := newSink()
	p := New(Options{MaxTopics: 2}).NewParser(&l7.Conn{PID: 1})
	rec := func(d l7.Dir, b []byte) {
		r := l7.Record{Dir: d, Data: b, Total: uint64(len(b))}
		if h := gap / 2; gap > 0 && len(b) > 2*h {
			r.Data, r.Tail = b[:h], b[len(b)-h:]
		}
		p.Feed(&r, s)
	}
	rec(l7.ToServer, reqs[:i])
	rec(l7.ToServer, reqs[i:])
	rec(l7.ToClient, rsps[:j])
	rec(l7.ToClient, rsps[j:])
	p.Lost(l7.ToClient, s)
	rec(l7.ToServer, reqs)
	rec(l7.ToClient, rsps)
	p.Close(0, s)
	return s
}

package kafka

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/otelbee/otelbee/collectors/l7"
)

type sink struct {
	n     map[string]int64
	drops map[string]int
	spans []string
}

func newSink() *sink { return &sink{n: map[string]int64{}, drops: map[string]int{}} }

var metricNames = map[int]string{MetricDuration: "dur", MetricSent: "sent", MetricConsumed: "consumed", MetricOverflow: "overflow"}

func (s *sink) Exchange(_ *l7.Conn, x *l7.Exchange) {
	k := []string{metricNames[x.Metric]}
	for _, a := range x.Attrs[:x.NAttr] {
		switch a.Key {
		case "messaging.operation.name", "messaging.destination.name", "messaging.destination.partition.id":
			k = append(k, a.Value.AsString())
		case "messaging.system":
			if a.Value.AsString() != "kafka" {
				panic("system")
			}
		}
	}
	if x.Error != "" {
		k = append(k, "!"+x.Error)
	}
	if x.Metric == MetricDuration {
		s.n[strings.Join(k, " ")]++
		s.spans = append(s.spans, x.SpanName)
	} else {
		s.n[strings.Join(k, " ")] += x.Messages
	}
}

func (s *sink) Drop(_ *l7.Conn, reason string, n int) { s.drops[reason] += n }

func (s *sink) String() string {
	var keys []string
	for k, v := range s.n {
		keys = append(keys, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(keys)
	return strings.Join(keys, "; ")
}

// batch is a record batch header (magic 2) claiming count records, with
// filler standing for them.
func batch(count int32, filler int) []byte {
	b := make([]byte, 61+filler)
	binary.BigEndian.PutUint64(b[0:], 0)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	b[16] = 2
	binary.BigEndian.PutUint32(b[57:], uint32(count))
	return b
}

func reqFrame(r kmsg.Request, corr int32) []byte {
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID("test")).AppendRequest(nil, r, corr)
}

func respFrame(r kmsg.Response, corr int32) []byte {
	body := []byte{0, 0, 0, 0}
	body = binary.BigEndian.AppendUint32(body, uint32(corr))
	if r.IsFlexible() && r.Key() != apiVersions {
		body = append(body, 0) // no tagged fields
	}
	body = r.AppendTo(body)
	binary.BigEndian.PutUint32(body, uint32(len(body)-4))
	return body
}

var topicID = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func produceReq(v int16, acks int16) *kmsg.ProduceRequest {
	r := kmsg.NewPtrProduceRequest()
	r.Version, r.Acks = v, acks
	for _, name := range []string{"orders", "users"} {
		t := kmsg.NewProduceRequestTopic()
		t.Topic = name
		if v >= 13 {
			t.TopicID = topicID
			if name == "users" {
				t.TopicID[0] = 99 // an id no Metadata named
			}
		}
		for pi := int32(0); pi < 2; pi++ {
			p := kmsg.NewProduceRequestTopicPartition()
			p.Partition = pi
			p.Records = append(batch(3, 20), batch(2+pi, 10)...)
			t.Partitions = append(t.Partitions, p)
		}
		r.Topics = append(r.Topics, t)
	}
	return r
}

func produceResp(v int16) *kmsg.ProduceResponse {
	r := kmsg.NewPtrProduceResponse()
	r.Version = v
	for _, name := range []string{"orders", "users"} {
		t := kmsg.NewProduceResponseTopic()
		t.Topic, t.TopicID = name, topicID
		for pi := int32(0); pi < 2; pi++ {
			p := kmsg.NewProduceResponseTopicPartition()
			p.Partition = pi
			t.Partitions = append(t.Partitions, p)
		}
		r.Topics = append(r.Topics, t)
	}
	return r
}

func metadataResp(v int16) *kmsg.MetadataResponse {
	r := kmsg.NewPtrMetadataResponse()
	r.Version = v
	b := kmsg.NewMetadataResponseBroker()
	b.Host, b.Port = "localhost", 9092
	r.Brokers = append(r.Brokers, b)
	t := kmsg.NewMetadataResponseTopic()
	name := "orders"
	t.Topic, t.TopicID = &name, topicID
	p := kmsg.NewMetadataResponseTopicPartition()
	p.Replicas, p.ISR = []int32{1}, []int32{1}
	t.Partitions = append(t.Partitions, p)
	r.Topics = append(r.Topics, t)
	return r
}

func fetchResp(v int16) *kmsg.FetchResponse {
	r := kmsg.NewPtrFetchResponse()
	r.Version = v
	t := kmsg.NewFetchResponseTopic()
	t.Topic, t.TopicID = "orders", topicID
	for pi := int32(0); pi < 3; pi++ {
		p := kmsg.NewFetchResponseTopicPartition()
		p.Partition = pi
		if pi < 2 {
			p.RecordBatches = append(batch(4, 30), batch(1, 5)...)
		}
		t.Partitions = append(t.Partitions, p)
	}
	r.Topics = append(r.Topics, t)
	return r
}

type rec struct {
	dir  l7.Dir
	b    []byte
	head int // 0: all kept
}

func feed(p l7.Parser, s *sink, recs ...rec) {
	for i, r := range recs {
		x := l7.Record{Dir: r.dir, Data: r.b, Total: uint64(len(r.b)), Start: uint64(2 * i), End: uint64(2*i + 1)}
		if r.head > 0 && r.head < len(r.b) {
			x.Data, x.Tail = r.b[:r.head], r.b[len(r.b)-min(32, len(r.b)-r.head):]
		}
		p.Feed(&x, s)
	}
}

func TestProduceFetchEveryVersion(t *testing.T) {
	maxProduce := kmsg.NewPtrProduceRequest().MaxVersion()
	for v := int16(3); v <= maxProduce; v++ {
		t.Run(fmt.Sprintf("produce v%d", v), func(t *testing.T) {
			s := newSink()
			p := New(Options{}).NewParser(&l7.Conn{PID: 1})
			feed(p, s,
				rec{l7.ToServer, reqFrame(&kmsg.MetadataRequest{Version: 12}, 1), 0},
				rec{l7.ToClient, respFrame(metadataResp(12), 1), 0},
				rec{l7.ToServer, reqFrame(produceReq(v, -1), 2), 0},
				rec{l7.ToClient, respFrame(produceResp(v), 2), 0},
			)
			p.Close(0, s)
			want := "dur metadata=1; dur send=1; sent send orders 0=5; sent send orders 1=6; sent send users 0=5; sent send users 1=6"
			wantDrops := 0
			if v >= 13 {
				// The users topic's id was never named by Metadata.
				want = "dur metadata=1; dur send=1; sent send 0=5; sent send 1=6; sent send orders 0=5; sent send orders 1=6"
			}
			if got := s.String(); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			if len(s.drops) != wantDrops {
				t.Errorf("drops %v", s.drops)
			}
		})
	}
	maxFetch := kmsg.NewPtrFetchRequest().MaxVersion()
	for v := int16(4); v <= maxFetch; v++ {
		t.Run(fmt.Sprintf("fetch v%d", v), func(t *testing.T) {
			s := newSink()
			p := New(Options{}).NewParser(&l7.Conn{PID: 1})
			fr := kmsg.NewPtrFetchRequest()
			fr.Version = v
			feed(p, s,
				rec{l7.ToServer, reqFrame(&kmsg.MetadataRequest{Version: 12}, 7), 0},
				rec{l7.ToClient, respFrame(metadataResp(12), 7), 0},
				rec{l7.ToServer, reqFrame(fr, 8), 0},
				rec{l7.ToClient, respFrame(fetchResp(v), 8), 0},
			)
			p.Close(0, s)
			want := "consumed poll orders 0=5; consumed poll orders 1=5; dur metadata=1; dur poll orders=1"
			if got := s.String(); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			if len(s.drops) != 0 {
				t.Errorf("drops %v", s.drops)
			}
			if s.spans[1] != "poll orders" {
				t.Errorf("span %q", s.spans[1])
			}
		})
	}
}

func TestGroupAPIs(t *testing.T) {
	s := newSink()
	p := New(Options{}).NewParser(&l7.Conn{})
	var recs []rec
	corr := int32(100)
	add := func(req kmsg.Request, resp kmsg.Response) {
		corr++
		recs = append(recs, rec{l7.ToServer, reqFrame(req, corr), 0}, rec{l7.ToClient, respFrame(resp, corr), 0})
	}
	for _, v := range []int16{0, 3, 5, 9} {
		add(&kmsg.JoinGroupRequest{Version: v}, &kmsg.JoinGroupResponse{Version: v, ErrorCode: 79})
	}
	for _, v := range []int16{0, 4, 5} {
		add(&kmsg.SyncGroupRequest{Version: v}, &kmsg.SyncGroupResponse{Version: v})
		add(&kmsg.HeartbeatRequest{Version: v}, &kmsg.HeartbeatResponse{Version: v, ErrorCode: 27})
		add(&kmsg.LeaveGroupRequest{Version: v}, &kmsg.LeaveGroupResponse{Version: v})
	}
	for _, v := range []int16{1, 3, 4, 6} {
		add(&kmsg.FindCoordinatorRequest{Version: v}, &kmsg.FindCoordinatorResponse{Version: v})
	}
	for _, v := range []int16{2, 8, 9} {
		add(&kmsg.OffsetCommitRequest{Version: v}, &kmsg.OffsetCommitResponse{Version: v, Topics: []kmsg.OffsetCommitResponseTopic{{Topic: "t", Partitions: []kmsg.OffsetCommitResponseTopicPartition{{ErrorCode: 25}}}}})
		add(&kmsg.OffsetFetchRequest{Version: v - 1}, &kmsg.OffsetFetchResponse{Version: v - 1})
	}
	add(&kmsg.ApiVersionsRequest{Version: 3}, &kmsg.ApiVersionsResponse{Version: 3})
	feed(p, s, recs...)
	p.Close(0, s)
	want := "dur api_versions=1; dur commit !UNKNOWN_MEMBER_ID=3; dur find_coordinator=4; dur heartbeat !REBALANCE_IN_PROGRESS=3; " +
		"dur join_group !MEMBER_ID_REQUIRED=4; dur leave_group=3; dur offset_fetch=3; dur sync_group=3"
	if got := s.String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if len(s.drops) != 0 {
		t.Errorf("drops %v", s.drops)
	}
}

func TestAcksZero(t *testing.T) {
	s := newSink()
	p := New(Options{}).NewParser(&l7.Conn{})
	feed(p, s, rec{l7.ToServer, reqFrame(produceReq(7, 0), 1), 0}, rec{l7.ToServer, reqFrame(&kmsg.MetadataRequest{Version: 7}, 2), 0},
		rec{l7.ToClient, respFrame(&kmsg.MetadataResponse{Version: 7}, 2), 0})
	p.Close(0, s)
	if got := s.String(); got != "dur metadata=1; sent send orders 0=5; sent send orders 1=6; sent send users 0=5; sent send users 1=6" || len(s.drops) != 0 {
		t.Errorf("%s %v", s, s.drops)
	}
}

// TestCapture: a fetch response read in chunks whose middles are lost:
// batches whose headers were kept are counted, the others are counted as
// given up, and the pairing holds.
func TestCapture(t *testing.T) {
	r := kmsg.NewPtrFetchResponse()
	r.Version = 11
	tp := kmsg.NewFetchResponseTopic()
	tp.Topic = "big"
	p0 := kmsg.NewFetchResponseTopicPartition()
	p0.RecordBatches = append(batch(10, 9000), batch(7, 100)...) // the second header is past the first chunk's head
	p1 := kmsg.NewFetchResponseTopicPartition()
	p1.Partition = 1
	p1.RecordBatches = batch(3, 100)
	tp.Partitions = append(tp.Partitions, p0, p1)
	r.Topics = append(r.Topics, tp)
	frame := respFrame(r, 5)
	fr := kmsg.NewPtrFetchRequest()
	fr.Version = 11
	for _, tc := range []struct {
		name  string
		chunk int
		head  int
		want  string
		drops int
	}{
		{"whole", len(frame), 0, "consumed poll big 0=17; consumed poll big 1=3; dur poll big=1", 0},
		{"heads kept", 8192, 4096, "consumed poll big 0=17; consumed poll big 1=3; dur poll big=1", 0},
		// A 4096-byte head of a 12000-byte read: the second batch of
		// partition 0 and partition 1 are in the gap.
		{"heads lost", 12000, 4096, "consumed poll big 0=10; dur poll big=1", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink()
			p := New(Options{}).NewParser(&l7.Conn{})
			recs := []rec{{l7.ToServer, reqFrame(fr, 5), 0}}
			for off := 0; off < len(frame); off += tc.chunk {
				recs = append(recs, rec{l7.ToClient, frame[off:min(off+tc.chunk, len(frame))], tc.head})
			}
			feed(p, s, recs...)
			p.Close(0, s)
			if got := s.String(); got != tc.want || s.drops["incomplete"] != tc.drops {
				t.Errorf("got  %s %v\nwant %s", got, s.drops, tc.want)
			}
		})
	}
}

func TestTopicCap(t *testing.T) {
	s := newSink()
	proto := New(Options{MaxTopics: 1})
	p := proto.NewParser(&l7.Conn{PID: 9})
	feed(p, s, rec{l7.ToServer, reqFrame(produceReq(7, -1), 1), 0}, rec{l7.ToClient, respFrame(produceResp(7), 1), 0})
	p.Close(0, s)
	want := "dur send=1; overflow=2; sent send _OTHER 0=5; sent send _OTHER 1=6; sent send orders 0=5; sent send orders 1=6"
	if got := s.String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestLostResponse(t *testing.T) {
	s := newSink()
	p := New(Options{}).NewParser(&l7.Conn{})
	feed(p, s, rec{l7.ToServer, reqFrame(&kmsg.MetadataRequest{Version: 7}, 1), 0}, rec{l7.ToServer, reqFrame(&kmsg.MetadataRequest{Version: 7}, 2), 0})
	p.Lost(l7.ToClient, s)
	feed(p, s, rec{l7.ToClient, respFrame(&kmsg.MetadataResponse{Version: 7}, 2)[3:], 0}, rec{l7.ToClient, respFrame(&kmsg.MetadataResponse{Version: 7}, 2), 0})
	p.Close(0, s)
	if s.String() != "dur metadata=1" || s.drops["lost"] != 1 || len(s.drops) != 1 {
		t.Errorf("%s %v", s, s.drops)
	}
}

// TestSettingBound: kafka.max_topics reaches the protocol.
func TestSettingBound(t *testing.T) {
	c := DefaultConfig()
	for _, s := range Settings(&c) {
		if s.Key == "kafka.max_topics" {
			if err := s.Value.Set("1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if New(c.Options()).topics.max != 1 {
		t.Fatalf("max topics %d", New(c.Options()).topics.max)
	}
}

// TestCapturePolicy: Kafka is recorded from the client's side and keeps
// 4 KiB of each call by default (the record batch headers), or what
// kafka.capture_bytes says.
func TestCapturePolicy(t *testing.T) {
	if c := New(Options{}).Capture(); !c.ClientSide || c.Bytes != 4096 {
		t.Errorf("default capture %+v, want client side and 4096 bytes", c)
	}
	if c := DefaultConfig().Options(); c.CaptureBytes != 4096 {
		t.Errorf("default kafka.capture_bytes %d, want 4096", c.CaptureBytes)
	}
	if c := New(Options{CaptureBytes: 2048}).Capture(); c.Bytes != 2048 {
		t.Errorf("capture %+v, want 2048 bytes", c)
	}
}

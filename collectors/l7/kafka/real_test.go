package kafka

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
)

// pipeListener hands kfake the relay's connections as in-memory pipes, and
// says it listens at the relay's address, so the broker advertises the
// relay and every client connection goes through it.
type pipeListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *pipeListener) Addr() net.Addr { return l.addr }

func (l *pipeListener) dial() (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- b:
		return a, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// broker is a kfake cluster of one broker behind the capturing relay, and
// the requests per API the broker handled.
type broker struct {
	r       *relay.Relay
	tally   *relay.Tally
	mu      sync.Mutex
	handled map[string]int64
}

func startBroker(t *testing.T, topics ...string) *broker {
	t.Helper()
	b := &broker{handled: map[string]int64{}}
	b.tally = relay.NewTally(New(Options{}), "messaging.operation.name", "messaging.destination.name", "messaging.destination.partition.id", "error.type")
	// Message counts need the batch headers: the largest capture
	// (--http.capture-bytes=4096), and fetches within it.
	b.r = relay.Listen(t, New(Options{}), b.tally, relay.KernelMax)
	tcp, _ := net.ResolveTCPAddr("tcp", b.r.Addr)
	pl := &pipeListener{addr: tcp, conns: make(chan net.Conn), closed: make(chan struct{})}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(string, string) (net.Listener, error) { return pl, nil }),
		kfake.SeedTopics(3, topics...))
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	c.Control(func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		b.mu.Lock()
		b.handled["messaging.client.operation.duration "+opNames[r.Key()]]++
		b.mu.Unlock()
		return nil, nil, false
	})
	b.r.Serve(t, pl.dial)
	return b
}

// durations returns the parser's requests per API (every attribute but the
// operation summed).
func (b *broker) durations() map[string]int64 {
	n := map[string]int64{}
	for k, v := range b.tally.N {
		f := strings.Fields(k)
		if f[0] == "messaging.client.operation.duration" {
			n[f[0]+" "+f[1]] += v
		}
	}
	return n
}

// messages returns the parser's message counts of metric per topic and
// partition.
func (b *broker) messages(metric string) map[string]int64 {
	n := map[string]int64{}
	for k, v := range b.tally.N {
		f := strings.Fields(k)
		if f[0] == metric {
			n[f[2]+"/"+f[3]] += v
		}
	}
	return n
}

func (b *broker) check(t *testing.T, sent, consumed map[string]int64) {
	t.Helper()
	if !b.r.Idle(15 * time.Second) {
		t.Fatal("connections still open")
	}
	b.mu.Lock()
	handled := relay.Format(b.handled)
	b.mu.Unlock()
	got := b.durations()
	// A consumer closes with its long-poll Fetch in flight: the broker
	// handled it, the parser counts it as given up at close.
	if n := b.tally.Drops["incomplete"]; n > 0 {
		got["messaging.client.operation.duration poll"] += int64(n)
		delete(b.tally.Drops, "incomplete")
	}
	if got := relay.Format(got); got != handled {
		t.Errorf("requests per API: parser\n%s\nbroker\n%s", got, handled)
	}
	if got, want := relay.Format(b.messages("messaging.client.sent.messages")), relay.Format(sent); got != want {
		t.Errorf("sent messages: parser\n%s\nproducer\n%s", got, want)
	}
	if got, want := relay.Format(b.messages("messaging.client.consumed.messages")), relay.Format(consumed); got != want {
		t.Errorf("consumed messages: parser\n%s\nconsumer\n%s", got, want)
	}
	if len(b.tally.Drops) != 0 {
		t.Errorf("drops %v", b.tally.Drops)
	}
}

// TestRealFranzGo produces with franz-go and consumes in a consumer group
// (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetFetch,
// OffsetCommit, LeaveGroup), all through the relay to kfake: requests per
// API equal what the broker handled, messages per topic and partition what
// the producer had acknowledged and the consumer received.
func TestRealFranzGo(t *testing.T) {
	b := startBroker(t, "orders")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(b.r.Addr), kgo.DefaultProduceTopic("orders"), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]int64{}
	const n = 600
	for i := 0; i < n; i += 20 {
		var rs []*kgo.Record
		for j := 0; j < 20; j++ {
			rs = append(rs, &kgo.Record{Key: []byte(strconv.Itoa(i + j)), Value: []byte(strings.Repeat("v", (i+j)%100))})
		}
		for _, res := range prod.ProduceSync(ctx, rs...) {
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			sent[fmt.Sprintf("orders/%d", res.Record.Partition)]++
		}
	}
	prod.Close()

	cons, err := kgo.NewClient(kgo.SeedBrokers(b.r.Addr), kgo.ConsumerGroup("g1"), kgo.ConsumeTopics("orders"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.HeartbeatInterval(100*time.Millisecond),
		// Fetch responses within one 4 KiB capture: every batch header is
		// kept (larger ones are the capture's limit, docs/databases.md).
		kgo.FetchMaxBytes(3500), kgo.FetchMaxPartitionBytes(1000))
	if err != nil {
		t.Fatal(err)
	}
	consumed := map[string]int64{}
	total := 0
	for total < n {
		fs := cons.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			consumed[fmt.Sprintf("orders/%d", r.Partition)]++
			total++
		})
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few heartbeats
	cons.Close()
	b.check(t, sent, consumed)
	for _, op := range []string{"find_coordinator", "join_group", "sync_group", "heartbeat", "offset_fetch", "commit", "leave_group", "send", "poll", "metadata"} {
		if b.durations()["messaging.client.operation.duration "+op] == 0 {
			t.Errorf("no %s requests seen", op)
		}
	}
}

// TestRealKcat produces and consumes with kcat (librdkafka).
func TestRealKcat(t *testing.T) {
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("kcat not installed (Debian package kcat; make deps)")
	}
	b := startBroker(t, "events")
	var in strings.Builder
	const n = 300
	for i := 0; i < n; i++ {
		fmt.Fprintf(&in, "k%d:message %d %s\n", i, i, strings.Repeat("x", i%50))
	}
	// One small Produce per write (librdkafka otherwise pipelines them
	// into writes larger than the 4 KiB capture).
	p := exec.Command("kcat", "-b", b.r.Addr, "-P", "-t", "events", "-K:", "-X", "acks=all",
		"-X", "batch.num.messages=20", "-X", "max.in.flight=1")
	p.Stdin = strings.NewReader(in.String())
	if out, err := p.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	c := exec.Command("kcat", "-b", b.r.Addr, "-C", "-t", "events", "-o", "beginning", "-e", "-f", "%p\\n",
		"-X", "fetch.max.bytes=3500", "-X", "max.partition.fetch.bytes=1000",
		"-X", "message.max.bytes=3500", "-X", "receive.message.max.bytes=4500")
	out, err := c.Output()
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, out)
	}
	consumed := map[string]int64{}
	for _, l := range strings.Fields(string(out)) {
		consumed["events/"+l]++
	}
	if len(strings.Fields(string(out))) != n {
		t.Fatalf("kcat consumed %d of %d", len(strings.Fields(string(out))), n)
	}
	// kcat's producer does not print where each message went: what the
	// consumer read back from the beginning is what was produced.
	b.check(t, consumed, consumed)
}

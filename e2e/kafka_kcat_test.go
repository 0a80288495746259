package e2e

import (
	"fmt"
	"maps"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/otelbee/otelbee/e2e/harness"
)

// startKfake runs a one-broker kfake cluster with topic (3 partitions)
// on a free port: its address, and what the broker has handled so far per
// API (the ground truth the Kafka tests compare with).
func startKfake(t *testing.T, topic string) (broker string, handled func() map[string]uint64) {
	t.Helper()
	port := harness.FreePort(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	var mu sync.Mutex
	seen := map[string]uint64{}
	c.Control(func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		seen[kafkaOpName(r.Key())]++
		mu.Unlock()
		return nil, nil, false
	})
	return fmt.Sprintf("127.0.0.1:%d", port), func() map[string]uint64 {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(seen)
	}
}

// kafkaOpName is the agent's messaging.operation.name of a Kafka API.
func kafkaOpName(key int16) string {
	switch key {
	case 0:
		return "send"
	case 1:
		return "poll"
	case 8:
		return "commit"
	}
	var b strings.Builder
	prevLower := false
	for _, r := range kmsg.NameForKey(key) {
		if r >= 'A' && r <= 'Z' {
			if prevLower {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
			prevLower = false
		} else {
			prevLower = true
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestKafkaKcat: kcat (librdkafka) producing 300 messages and consuming
// them back, against franz-go's kfake broker run by this test, with the
// agent running: the clients' requests per API equal what the broker
// handled, sent messages per partition what the consumer read back, and
// consumed messages per partition what it printed.
func TestKafkaKcat(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("skipping: kcat not installed")
	}
	// The defaults: Kafka's own capture (kafka.capture_bytes, 4 KiB) keeps
	// the record batch headers the message counts come from.
	agent := harness.StartAgent(t, nil, "--collectors=kafka")
	broker, handled := startKfake(t, "events")
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	prod, cons := "kcatp-"+sfx, "kcatc-"+sfx
	const n = 300
	var in strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&in, "k%d:message %d %s\n", i, i, strings.Repeat("x", i%50))
	}
	// Small produce requests, one at a time, and fetches under 4 KiB: the
	// batch headers are within the capture (docs/databases.md).
	p := exec.Command("kcat", "-b", broker, "-P", "-t", "events", "-K:", "-X", "acks=all",
		"-X", "batch.num.messages=20", "-X", "max.in.flight=1")
	p.Stdin = strings.NewReader(in.String())
	p.Env = append(p.Environ(), "OTEL_SERVICE_NAME="+prod)
	if err := harness.StartProcess(t, prod, p).Wait(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	out := runClient(t, cons, "kcat", "-b", broker, "-C", "-t", "events", "-o", "beginning", "-e", "-f", "%p\\n",
		"-X", "fetch.max.bytes=3500", "-X", "max.partition.fetch.bytes=1000", "-X", "message.max.bytes=3500", "-X", "receive.message.max.bytes=4500")
	perPart := map[string]uint64{}
	for _, l := range strings.Fields(out) {
		perPart[l]++
	}
	if len(strings.Fields(out)) != n {
		t.Fatalf("kcat consumed %d of %d", len(strings.Fields(out)), n)
	}
	wantReqs := sum(handled())
	reqs := func(mfs map[string]*dto.MetricFamily) map[string]uint64 { return kafkaRequests(mfs, prod, cons) }
	msgs := func(mfs map[string]*dto.MetricFamily, name, service string) map[string]uint64 {
		return kafkaMessages(mfs, name, service, "events")
	}
	// Every request (the consumer's last Fetch given up at its close
	// counts as one) and every message, both sides: the counters can reach
	// the exposition a scrape apart from the histogram.
	inflightOf := func(mfs map[string]*dto.MetricFamily) uint64 {
		return uint64(rpCounter(mfs, "otelbee_l7_exchanges_dropped", svc(cons, "protocol", "kafka", "reason", "incomplete")))
	}
	mfs := kvWait(t, agent, func(mfs map[string]*dto.MetricFamily) bool {
		return sum(reqs(mfs))+inflightOf(mfs) >= wantReqs &&
			sum(msgs(mfs, "messaging_client_sent_messages_total", prod)) >= n &&
			sum(msgs(mfs, "messaging_client_consumed_messages_total", cons)) >= n
	})
	got := reqs(mfs)
	inflight := inflightOf(mfs)
	if inflight > 1 {
		t.Errorf("%v of the consumer's requests given up, want at most its last Fetch", inflight)
	}
	got["poll"] += inflight
	if got, want := fmt.Sprint(got), fmt.Sprint(handled()); got != want {
		t.Errorf("requests per API: agent %s\nbroker %s", got, want)
	}
	if got, want := fmt.Sprint(msgs(mfs, "messaging_client_sent_messages_total", prod)), fmt.Sprint(perPart); got != want {
		t.Errorf("sent messages per partition: agent %s\nread back %s", got, want)
	}
	if got, want := fmt.Sprint(msgs(mfs, "messaging_client_consumed_messages_total", cons)), fmt.Sprint(perPart); got != want {
		t.Errorf("consumed messages per partition: agent %s\nkcat %s", got, want)
	}
	kvNoDrops(t, mfs, prod)
	for _, r := range []string{"lost", "malformed", "overflow", "unpaired"} {
		if v := rpCounter(mfs, "otelbee_l7_exchanges_dropped", svc(cons, "reason", r)); v != 0 {
			t.Errorf("consumer: %v given up (%s)", v, r)
		}
	}
	if t.Failed() {
		for name, mf := range mfs {
			if strings.HasPrefix(name, "otelbee_l7") || strings.HasPrefix(name, "otelbee_events_dropped") {
				for _, m := range mf.GetMetric() {
					t.Logf("%s %v %v %v", name, m.GetLabel(), m.GetCounter().GetValue(), m.GetGauge().GetValue())
				}
			}
		}
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/e2e/harness"
)

// kafkaRequests is the agent's messaging.client.operation.duration count
// per messaging.operation.name over the services.
func kafkaRequests(mfs map[string]*dto.MetricFamily, services ...string) map[string]uint64 {
	m := map[string]uint64{}
	for _, s := range services {
		if mf := mfs["messaging_client_operation_duration_seconds"]; mf != nil {
			for _, x := range mf.GetMetric() {
				if !rpMatch(x, svc(s, "messaging_system", "kafka")) {
					continue
				}
				for _, l := range x.GetLabel() {
					if l.GetName() == "messaging_operation_name" {
						m[l.GetValue()] += x.GetHistogram().GetSampleCount()
					}
				}
			}
		}
	}
	return m
}

// kafkaMessages is a message counter (sent or consumed) of a service's
// topic per partition id.
func kafkaMessages(mfs map[string]*dto.MetricFamily, name, service, topic string) map[string]uint64 {
	m := map[string]uint64{}
	if mf := mfs[name]; mf != nil {
		for _, x := range mf.GetMetric() {
			if rpMatch(x, svc(service, "messaging_destination_name", topic)) {
				for _, l := range x.GetLabel() {
					if l.GetName() == "messaging_destination_partition_id" {
						m[l.GetValue()] += uint64(x.GetCounter().GetValue())
					}
				}
			}
		}
	}
	return m
}

// TestKafkaFranzGo: franz-go (kgo, e2e/cmd/kafkaclient) producing 600
// records with acks=all and consuming them in a consumer group (group
// coordination, heartbeats, offset commit, leave) against franz-go's kfake
// broker run by this test, with the agent's defaults: requests per API
// equal what the broker handled, sent messages per partition what the
// producer had acknowledged, consumed ones what the consumer received.
func TestKafkaFranzGo(t *testing.T) {
	harness.RequireRoot(t)
	client := buildTool(t, "./e2e/cmd/kafkaclient")
	agent := harness.StartAgent(t, nil, "--collectors=kafka")
	broker, handled := startKfake(t, "orders")
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	prod, cons := "franzp-"+sfx, "franzc-"+sfx
	const n = 600
	counts := func(service string, args ...string) map[string]uint64 {
		t.Helper()
		var m map[string]uint64
		out := runClient(t, service, append([]string{client, "-broker", broker, "-topic", "orders", "-n", strconv.Itoa(n)}, args...)...)
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("%s: %v: %q", service, err, out)
		}
		if sum(m) != n {
			t.Fatalf("%s: %v records, want %d", service, m, n)
		}
		return m
	}
	sent := counts(prod, "-mode", "produce")
	consumed := counts(cons, "-mode", "consume", "-group", "g-"+sfx)
	wantReqs := sum(handled())
	// A request in flight when the consumer closed (a long-poll Fetch) was
	// handled by the broker and given up by the agent at the close
	// (counted as incomplete). The wait covers every request and both
	// message counts.
	given := func(mfs map[string]*dto.MetricFamily) uint64 {
		return uint64(rpCounter(mfs, "otelbee_l7_exchanges_dropped", svc(cons, "protocol", "kafka", "reason", "incomplete")))
	}
	waited := time.Now()
	mfs := kvWait(t, agent, func(mfs map[string]*dto.MetricFamily) bool {
		return sum(kafkaRequests(mfs, prod, cons))+given(mfs) >= wantReqs &&
			sum(kafkaMessages(mfs, "messaging_client_sent_messages_total", prod, "orders")) >= n &&
			sum(kafkaMessages(mfs, "messaging_client_consumed_messages_total", cons, "orders")) >= n
	})
	got := kafkaRequests(mfs, prod, cons)
	inflight := given(mfs)
	t.Logf("requests per API %v (%d given up at the close), after %v", got, inflight, time.Since(waited).Round(time.Millisecond))
	if inflight > 1 {
		t.Errorf("%v of the consumer's requests given up, want at most its last Fetch", inflight)
	}
	got["poll"] += inflight
	if got, want := fmt.Sprint(got), fmt.Sprint(handled()); got != want {
		t.Errorf("requests per API: agent %s\nbroker %s", got, want)
	}
	for _, op := range []string{"send", "poll", "metadata", "find_coordinator", "join_group", "sync_group", "heartbeat", "offset_fetch", "commit", "leave_group"} {
		if got[op] == 0 {
			t.Errorf("no %s requests recorded", op)
		}
	}
	if got, want := fmt.Sprint(kafkaMessages(mfs, "messaging_client_sent_messages_total", prod, "orders")), fmt.Sprint(sent); got != want {
		t.Errorf("sent messages per partition: agent %s\nproducer %s", got, want)
	}
	if got, want := fmt.Sprint(kafkaMessages(mfs, "messaging_client_consumed_messages_total", cons, "orders")), fmt.Sprint(consumed); got != want {
		t.Errorf("consumed messages per partition: agent %s\nconsumer %s", got, want)
	}
	kvNoDrops(t, mfs, prod)
	for _, r := range []string{"lost", "malformed", "overflow", "unpaired"} {
		if v := rpCounter(mfs, "otelbee_l7_exchanges_dropped", svc(cons, "reason", r)); v != 0 {
			t.Errorf("consumer: %v given up (%s)", v, r)
		}
	}
}

// Command kafkaclient is a franz-go (kgo) Kafka client for the e2e tests:
// it produces -n records to -topic, or consumes -n records of it in the
// consumer group -group (committing its offsets), and prints its own count
// of records per partition as JSON: the ground truth the agent's message
// counts are compared with.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	broker := flag.String("broker", "127.0.0.1:9092", "seed broker")
	topic := flag.String("topic", "orders", "topic")
	mode := flag.String("mode", "produce", "produce or consume")
	group := flag.String("group", "g1", "consumer group (consume)")
	n := flag.Int("n", 600, "records")
	batch := flag.Int("batch", 20, "records per ProduceSync (produce)")
	flag.Parse()
	counts, err := run(*broker, *topic, *mode, *group, *n, *batch)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafkaclient:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(counts)
}

// run returns records per partition ("0", "1", ...): acknowledged by the
// broker (produce) or delivered to the application (consume).
func run(broker, topic, mode, group string, n, batch int) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	counts := map[string]int{}
	switch mode {
	case "produce":
		// Small produce requests, one at a time: every record batch header
		// within Kafka's 4 KiB capture (docs/databases.md).
		cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0),
			kgo.MaxProduceRequestsInflightPerBroker(1), kgo.RequiredAcks(kgo.AllISRAcks()))
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		for i := 0; i < n; i += batch {
			var rs []*kgo.Record
			for j := i; j < i+batch && j < n; j++ {
				rs = append(rs, &kgo.Record{Key: []byte(strconv.Itoa(j)), Value: []byte(strings.Repeat("v", j%100))})
			}
			for _, res := range cl.ProduceSync(ctx, rs...) {
				if res.Err != nil {
					return nil, fmt.Errorf("producing: %w", res.Err)
				}
				counts[strconv.Itoa(int(res.Record.Partition))]++
			}
		}
	case "consume":
		// Fetch responses within the 4 KiB capture.
		cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
			kgo.HeartbeatInterval(100*time.Millisecond), kgo.FetchMaxBytes(3500), kgo.FetchMaxPartitionBytes(1000))
		if err != nil {
			return nil, err
		}
		total := 0
		for total < n {
			fs := cl.PollFetches(ctx)
			if err := fs.Err0(); err != nil {
				cl.Close()
				return nil, fmt.Errorf("fetching: %w", err)
			}
			fs.EachRecord(func(r *kgo.Record) {
				counts[strconv.Itoa(int(r.Partition))]++
				total++
			})
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			cl.Close()
			return nil, fmt.Errorf("committing: %w", err)
		}
		time.Sleep(300 * time.Millisecond) // a few heartbeats
		cl.Close()                         // leaves the group
	default:
		return nil, fmt.Errorf("mode %q: want produce or consume", mode)
	}
	return counts, nil
}

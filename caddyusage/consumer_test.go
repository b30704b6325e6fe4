package caddyusage

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/tenantgate/tenantgate/internal/usagetest"
	"github.com/tenantgate/tenantgate/usagestore"
)

func records(evs []usagestore.Event) []*kgo.Record {
	out := make([]*kgo.Record, len(evs))
	for i := range evs {
		out[i] = &kgo.Record{Topic: testTopic, Key: []byte(evs[i].OrgID), Value: evs[i].AppendCloudEvent(nil)}
	}
	return out
}

// The same events on the topic twice, a poison record among them and an
// event stamped 26 hours ago: exactly N counted, the back-dated one in its
// own buckets, the poison record dead-lettered with its position, and the
// consumer goes on past it.
func TestConsumerReplayPoisonAndBackdated(t *testing.T) {
	_, brokers := usagetest.Kafka(t, testTopic, 2)
	store, _ := usagetest.FreshStore(t, usagestore.Options{})
	org := usagetest.UniqueOrg("org_replay_")
	now := time.Now()
	evs := usagetest.Events(300, org, now.Add(-time.Minute), time.Second)
	old := usagetest.Events(1, org, now.Add(-26*time.Hour), 0)
	recs := records(evs)
	poison := &kgo.Record{Topic: testTopic, Key: []byte(org), Value: []byte(`{"specversion":"1.0","type":"something.else"}`), Partition: 0}
	produce(t, brokers, testTopic, recs[:150]...)
	produce(t, brokers, testTopic, poison)
	produce(t, brokers, testTopic, recs[150:]...)
	produce(t, brokers, testTopic, records(old)...)
	produce(t, brokers, testTopic, records(evs)...) // everything again

	consumeAll(t, brokers, testTopic, "g-replay", store, org, 301)
	reconcileN(t, store, org, 301)

	var n int
	var topic string
	var offset int64
	if err := store.Pool().QueryRow(context.Background(), `SELECT count(*), min(topic), min(kafka_offset) FROM usage_dead_letters
		WHERE reason = 'poison'`).Scan(&n, &topic, &offset); err != nil {
		t.Fatal(err)
	}
	if n != 1 || topic != testTopic {
		t.Fatalf("%d poison dead letters (topic %q), want 1", n, topic)
	}
	rows, err := store.Report(context.Background(), usagestore.ReportQuery{OrgID: org, From: now.Add(-48 * time.Hour), To: now.Add(time.Hour), Granularity: usagestore.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 2 || !rows[0].Bucket.Equal(old[0].Time.UTC().Truncate(time.Hour)) || rows[0].Requests != 1 {
		t.Fatalf("the back-dated event is not alone in its own hour: %+v", rows)
	}
}

// Two consumers of one group and rebalances while they work (the second
// joins, then the first leaves): exactly N.
func TestConsumerRebalanceExactlyN(t *testing.T) {
	_, brokers := usagetest.Kafka(t, testTopic, 4)
	store, _ := usagetest.FreshStore(t, usagestore.Options{})
	org := usagetest.UniqueOrg("org_rebalance_")
	evs := usagetest.Events(4000, org, time.Now().Add(-time.Minute), time.Minute)
	recs := records(evs)
	for i, r := range recs {
		r.Partition = int32(i % 4)
	}
	produce(t, brokers, testTopic, recs...)

	start := func() (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- runConsumer(ctx, consumerConfig{Brokers: []string{brokers}, Topic: testTopic, Group: "g-rebalance", Store: store,
				MaxBatch: 100, Logger: zaptest.NewLogger(t), FetchMaxWait: 100 * time.Millisecond})
		}()
		return cancel, done
	}
	count := func() int64 {
		r, _ := store.Reconcile(context.Background(), org)
		return r.Raw
	}
	stopA, doneA := start()
	eventually(t, 30*time.Second, func() bool { return count() > 0 }, func() string { return "consumer A ingested nothing" })
	stopB, doneB := start()
	eventually(t, 30*time.Second, func() bool { return count() > 1000 }, func() string { return "no progress with two consumers" })
	stopA()
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() bool { return count() >= 4000 }, func() string { return "consumer B did not finish: " + itoa(count()) })
	stopB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	reconcileN(t, store, org, 4000)
	offsets, err := store.Offsets(context.Background(), "g-rebalance", testTopic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, next := range offsets {
		sum += next
	}
	if len(offsets) != 4 || sum != 4000 {
		t.Fatalf("stored offsets %v, want 4 partitions summing to 4000", offsets)
	}
}

// BenchmarkConsumerIngest measures consumer throughput into PostgreSQL:
// events/s from a topic into the store (b.N batches of 5000).
func BenchmarkConsumerIngest(b *testing.B) {
	_, brokers := usagetest.Kafka(b, testTopic, 4)
	store, _ := usagetest.FreshStore(b, usagestore.Options{MaxConns: 4})
	org := usagetest.UniqueOrg("org_bench_")
	const perOp = 5000
	total := int64(0)
	for i := 0; i < b.N; i++ {
		evs := usagetest.Events(perOp, org, time.Now().Add(-time.Minute), time.Minute)
		recs := records(evs)
		for j, r := range recs {
			r.Partition = int32(j % 4)
		}
		produce(b, brokers, testTopic, recs...)
		total += perOp
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() {
		done <- runConsumer(ctx, consumerConfig{Brokers: []string{brokers}, Topic: testTopic, Group: "g-bench", Store: store, FetchMaxWait: 50 * time.Millisecond})
	}()
	for {
		// The stored offsets, not a count: polling must not compete with
		// the consumer for the CPU.
		offsets, _ := store.Offsets(ctx, "g-bench", testTopic)
		var sum int64
		for _, next := range offsets {
			sum += next
		}
		if sum >= total {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
}

package caddyusage

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/tenantgate/tenantgate/internal/usagetest"
	"github.com/tenantgate/tenantgate/usagestore"
)

const testTopic = "tenantgate.usage.v1"

func kafkaPipeline(t *testing.T, brokers string, deliveryTimeout time.Duration) *pipeline {
	t.Helper()
	return testPipeline(t, 10_000, 64<<20, func(m *metrics) (sink, error) {
		return newKafkaSink(kafkaSettings{brokers: []string{brokers}, topic: testTopic, deliveryTimeout: deliveryTimeout,
			maxBuffered: 10_000}, m, zaptest.NewLogger(t))
	})
}

// readTopic reads every record of the topic with an independent consumer.
func readTopic(t *testing.T, brokers string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(testTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(recs) < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	// Anything beyond want would be a duplicate: look a moment longer.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	cl.PollFetches(ctx2).EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	return recs
}

// The Kafka sink writes one record per event: key org_id, value the
// CloudEvents JSON, header content-type, and never the API key.
func TestKafkaSinkWritesCloudEventsKeyedByOrg(t *testing.T) {
	_, brokers := usagetest.Kafka(t, testTopic, 3)
	p := kafkaPipeline(t, brokers, 5*time.Second)
	evs := append(usagetest.Events(60, "org_k1", time.Now(), time.Second), usagetest.Events(40, "org_k2", time.Now(), time.Second)...)
	for _, e := range pointers(evs) {
		p.emit(e)
	}
	recs := readTopic(t, brokers, len(evs))
	if len(recs) != len(evs) {
		t.Fatalf("%d records on the topic, want %d", len(recs), len(evs))
	}
	ids := map[string]bool{}
	for _, r := range recs {
		var ce map[string]any
		if err := json.Unmarshal(r.Value, &ce); err != nil {
			t.Fatalf("record is not JSON: %v", err)
		}
		e, err := usagestore.ParseCloudEvent(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != e.OrgID || ce["subject"] != e.OrgID || ce["specversion"] != "1.0" || ce["type"] != "tenantgate.request.v1" {
			t.Fatalf("record key %q, event %+v", r.Key, ce)
		}
		if len(r.Headers) != 1 || r.Headers[0].Key != "content-type" || string(r.Headers[0].Value) != "application/cloudevents+json" {
			t.Fatalf("headers %+v", r.Headers)
		}
		if ids[e.ID.String()] {
			t.Fatalf("event %s twice", e.ID)
		}
		ids[e.ID.String()] = true
	}
	if d := testutil.ToFloat64(p.metrics.delivered.WithLabelValues("kafka")); d != float64(len(evs)) {
		t.Fatalf("delivered metric %v", d)
	}
}

// The broker applies produce requests but their responses are lost
// (REQUEST_TIMED_OUT after the write): the client retries, the idempotent
// producer keeps the topic free of duplicates, and the store holds exactly N.
func TestKafkaLostProduceResponsesStoreExactlyN(t *testing.T) {
	cluster, brokers := usagetest.Kafka(t, testTopic, 2)
	store, _ := usagetest.FreshStore(t, usagestore.Options{})
	cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, Count: 5})
	p := kafkaPipeline(t, brokers, 20*time.Second)
	org := usagetest.UniqueOrg("org_lost_")
	evs := usagetest.Events(500, org, time.Now(), time.Second)
	for _, e := range pointers(evs) {
		p.emit(e)
	}
	consumeAll(t, brokers, testTopic, "g-lost", store, org, 500)
	reconcileN(t, store, org, 500)
}

// The broker stalls for 30 s: events keep being handed off, records time out
// into the spool, and once the broker answers again the spool drains; the
// store then holds exactly N.
func TestKafkaStallSpoolsThenDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s broker stall")
	}
	cluster, brokers := usagetest.Kafka(t, testTopic, 1)
	store, _ := usagetest.FreshStore(t, usagestore.Options{})
	p := kafkaPipeline(t, brokers, 2*time.Second)
	org := usagetest.UniqueOrg("org_stall_")
	evs := pointers(usagetest.Events(400, org, time.Now(), time.Second))
	for _, e := range evs[:100] {
		p.emit(e)
	}
	eventually(t, 20*time.Second, func() bool { return testutil.ToFloat64(p.metrics.delivered.WithLabelValues("kafka")) == 100 },
		func() string { return "the first 100 events were not delivered" })

	stallUntil := time.Now().Add(30 * time.Second)
	var stalled atomic.Int32
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if time.Now().After(stallUntil) {
			cluster.DropControl()
			return nil, nil, false
		}
		stalled.Add(1)
		cluster.SleepControl(func() { time.Sleep(time.Until(stallUntil)) })
		return nil, nil, false
	})
	var slowest time.Duration
	for i, e := range evs[100:] {
		start := time.Now()
		p.emit(e)
		slowest = max(slowest, time.Since(start))
		if i%50 == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("slowest hand-off during the stall: %s", slowest) // a measurement, not asserted
	eventually(t, 25*time.Second, func() bool { return testutil.ToFloat64(p.metrics.spooled) > 0 },
		func() string {
			return "nothing was spooled during the stall; buffered " + itoa(p.sink.Load().sink.(*kafkaSink).client.BufferedProduceRecords()) + " failing " + errString(p.sink.Load().failing())
		})
	if st, _ := p.state(); st == "ok" {
		t.Errorf("health ok while spooling")
	}
	eventually(t, 90*time.Second, func() bool { return p.spool.records() == 0 && time.Now().After(stallUntil) },
		func() string { return "the spool did not drain: " + itoa(p.spool.records()) + " events left" })
	consumeAll(t, brokers, testTopic, "g-stall", store, org, 400)
	reconcileN(t, store, org, 400)
	if stalled.Load() == 0 {
		t.Fatal("the broker never stalled a produce request")
	}
}

func reconcileN(t *testing.T, store *usagestore.Store, org string, n int64) {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // let a late duplicate show up, if any
	r, err := store.Reconcile(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(n); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkKafkaSink is the cost of one event through the Kafka sink:
// dispatch, encoding, compression, producing and its acknowledgement, for
// each compression codec. Events are paced at BENCH_KAFKA_RATE per second
// (default 5 000, about what a busy gateway on two cores serves), so
// batches are as large as in production rather than as large as a tight
// loop makes them. cpu-µs/event
// is the CPU time of this process per event (getrusage); with the broker
// in another process (BENCH_KAFKA_BROKERS=host:port, e.g. the one of
// scripts/kafkabroker) that is the gateway's own cost, otherwise the
// in-process broker's work is included.
func BenchmarkKafkaSink(b *testing.B) {
	brokers := os.Getenv("BENCH_KAFKA_BROKERS")
	rate := 5000
	if v := os.Getenv("BENCH_KAFKA_RATE"); v != "" {
		var err error
		if rate, err = strconv.Atoi(v); err != nil || rate < 1 {
			b.Fatalf("BENCH_KAFKA_RATE=%q: want a positive number of events per second", v)
		}
	}
	if brokers == "" {
		_, brokers = usagetest.Kafka(b, testTopic, 4)
	}
	for _, codec := range compressionCodecs {
		b.Run(codec, func(b *testing.B) {
			m := newMetrics()
			p, err := newPipeline(1<<16, b.TempDir(), 64<<20, m, nopLogger())
			if err != nil {
				b.Fatal(err)
			}
			defer p.Destruct()
			err = p.use("kafka", func() (sink, error) {
				return newKafkaSink(kafkaSettings{brokers: []string{brokers}, topic: testTopic, compression: codec,
					deliveryTimeout: 30 * time.Second, maxBuffered: 1 << 16}, m, nopLogger())
			})
			if err != nil {
				b.Fatal(err)
			}
			evs := pointers(usagetest.Events(1000, "org_bench", time.Now(), time.Second))
			delivered := func() float64 { return testutil.ToFloat64(m.delivered.WithLabelValues("kafka")) }
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, start := processCPU(b), time.Now()
			for i := 0; i < b.N; i++ {
				p.emit(evs[i%len(evs)])
				if i%50 == 49 {
					time.Sleep(time.Until(start.Add(time.Duration(i+1) * time.Second / time.Duration(rate))))
				}
			}
			for delivered() < float64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The compression setting reaches the wire: every produced batch carries
// the codec's attribute, and an independent consumer reads every event.
func TestKafkaCompressionSetting(t *testing.T) {
	// The codec numbers of a record batch's attributes (Kafka protocol).
	want := map[string]int16{"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
	for _, codec := range []string{"", "none", "zstd"} {
		cluster, brokers := usagetest.Kafka(t, testTopic, 1)
		var mu sync.Mutex
		seen := map[int16]int{}
		cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
			cluster.KeepControl()
			for _, topic := range req.(*kmsg.ProduceRequest).Topics {
				for _, part := range topic.Partitions {
					var batch kmsg.RecordBatch
					if err := batch.ReadFrom(part.Records); err != nil {
						t.Errorf("produced batch: %v", err)
						continue
					}
					mu.Lock()
					seen[batch.Attributes&0x07]++
					mu.Unlock()
				}
			}
			return nil, nil, false
		})
		p := testPipeline(t, 10_000, 64<<20, func(m *metrics) (sink, error) {
			return newKafkaSink(kafkaSettings{brokers: []string{brokers}, topic: testTopic, deliveryTimeout: 5 * time.Second,
				maxBuffered: 10_000, compression: codec}, m, zaptest.NewLogger(t))
		})
		evs := pointers(usagetest.Events(200, "org_z", time.Now(), time.Millisecond))
		for _, e := range evs {
			p.emit(e)
		}
		if recs := readTopic(t, brokers, len(evs)); len(recs) != len(evs) {
			t.Fatalf("compression %q: %d records on the topic, want %d", codec, len(recs), len(evs))
		}
		expected := want[codec]
		if codec == "" {
			expected = want["snappy"] // the default
		}
		mu.Lock()
		if len(seen) != 1 || seen[expected] == 0 {
			t.Errorf("compression %q: batches by codec %v, want all %d", codec, seen, expected)
		}
		mu.Unlock()
	}
}

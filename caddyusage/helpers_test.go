package caddyusage

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tenantgate/tenantgate/usagestore"
)

// testPipeline starts a pipeline on a temporary spool with the sink mk
// makes, and stops it when the test ends.
func testPipeline(t *testing.T, buffer int, spoolSize int64, mk func(m *metrics) (sink, error)) *pipeline {
	t.Helper()
	return testPipelineIn(t, t.TempDir(), buffer, spoolSize, mk)
}

func testPipelineIn(t *testing.T, dir string, buffer int, spoolSize int64, mk func(m *metrics) (sink, error)) *pipeline {
	t.Helper()
	m := newMetrics()
	p, err := newPipeline(buffer, dir, spoolSize, m, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Destruct() })
	if err := p.use("test", func() (sink, error) { return mk(m) }); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually waits (up to limit) for cond, failing with what() otherwise.
func eventually(t *testing.T, limit time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s: %s", limit, what())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pointers returns pointers to fresh copies of evs, as the handler emits.
func pointers(evs []usagestore.Event) []*usagestore.Event {
	out := make([]*usagestore.Event, len(evs))
	for i := range evs {
		e := evs[i]
		out[i] = &e
	}
	return out
}

// consumeAll runs the consumer into store until it holds want events (or
// the limit passes), then stops it.
func consumeAll(t *testing.T, brokers, topic, group string, store *usagestore.Store, org string, want int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runConsumer(ctx, consumerConfig{Brokers: []string{brokers}, Topic: topic, Group: group, Store: store,
			Logger: zaptest.NewLogger(t), FetchMaxWait: 100 * time.Millisecond})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()
	eventually(t, 60*time.Second, func() bool {
		r, err := store.Reconcile(context.Background(), org)
		return err == nil && r.Raw >= want
	}, func() string {
		r, err := store.Reconcile(context.Background(), org)
		return "store holds " + itoa(r.Raw) + " events, want " + itoa(want) + errString(err)
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func errString(err error) string {
	if err != nil {
		return ": " + err.Error()
	}
	return ""
}

// produce writes raw records to the topic, each to its Partition, and
// waits for the broker.
func produce(t testing.TB, brokers, topic string, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
}

func nopLogger() *zap.Logger { return zap.NewNop() }

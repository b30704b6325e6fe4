package caddyusage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/sharedmetrics"
	"github.com/tenantgate/tenantgate/usagestore"
)

// Consumer defaults.
const (
	defaultGroup         = "tenantgate-usage-ingest"
	defaultConsumerBatch = 5000
	consumerRetryMax     = 30 * time.Second
)

// consumerConfig configures a usage consumer.
type consumerConfig struct {
	Brokers []string
	Topic   string
	Group   string
	// MaxBatch bounds the records of one transaction. Default 5000.
	MaxBatch int
	// FetchMaxWait bounds how long a fetch waits for records (freshness).
	// Default 250ms.
	FetchMaxWait time.Duration
	Store        *usagestore.Store
	Logger       *zap.Logger
	// Metrics, when set, receives the consumer's collectors.
	Metrics prometheus.Registerer
	// SessionTimeout is how long the group waits for a silent member (a
	// killed consumer) before giving its partitions to others. Default:
	// franz-go's (45s).
	SessionTimeout time.Duration
	// ClientOpts are extra franz-go options (TLS, SASL).
	ClientOpts []kgo.Opt
}

// consumerMetrics are the consumer's collectors.
type consumerMetrics struct {
	records *prometheus.CounterVec
	lag     *prometheus.GaugeVec
	batch   prometheus.Histogram
}

func newConsumerMetrics() *consumerMetrics {
	const ns, sub = "tenantgate", "usage_consumer"
	return &consumerMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_total",
			Help: "Kafka records ingested, by result: inserted, duplicate, late, future, poison."}, []string{"result"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "lag_records",
			Help: "Records between the consumer's position and the partition's high watermark."}, []string{"partition"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "batch_seconds",
			Help:    "Time to write one batch (one transaction) into the usage store.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
	}
}

// runConsumer is `caddy tenant usage ingest`: a consumer group member that
// writes the topic into the usage store, one transaction per polled batch
// (events, rollups, dead letters and the next offsets together). On start
// and on every partition assignment it resumes from the offsets stored in
// PostgreSQL, not from Kafka's committed offsets (autocommit is off), so a
// crash anywhere repeats at most an uncommitted batch, which the store
// recognises. It returns when ctx ends.
func runConsumer(ctx context.Context, cfg consumerConfig) error {
	if cfg.Group == "" {
		cfg.Group = defaultGroup
	}
	if cfg.Topic == "" {
		cfg.Topic = defaultTopic
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = defaultConsumerBatch
	}
	if cfg.FetchMaxWait <= 0 {
		cfg.FetchMaxWait = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	m := newConsumerMetrics()
	if cfg.Metrics != nil {
		if err := sharedmetrics.Register(cfg.Metrics, m.records, m.lag, m.batch); err != nil {
			return err
		}
	}
	store, log := cfg.Store, cfg.Logger
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(cfg.FetchMaxWait),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.ClientID("tenantgate-usage-ingest"),
		kgo.WithLogger(kafkaLogger{log.Named("kafka")}),
		// Resume every assigned partition at the offset stored with the
		// last committed batch; the beginning when there is none.
		kgo.AdjustFetchOffsetsFn(func(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
			for topic, parts := range assigned {
				stored, err := store.Offsets(ctx, cfg.Group, topic)
				if err != nil {
					return nil, err
				}
				for p := range parts {
					if next, ok := stored[p]; ok {
						parts[p] = kgo.NewOffset().At(next).WithEpoch(-1)
					} else {
						parts[p] = kgo.NewOffset().AtStart()
					}
				}
				log.Info("partitions assigned", zap.String("topic", topic), zap.Any("resume_at", stored))
			}
			return assigned, nil
		}),
	}, cfg.ClientOpts...)
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	defer client.CloseAllowingRebalance()

	// One batch is written while the next is polled and decoded; batches
	// are still written one after the other, in order. A rebalance may
	// happen only once the written batch is committed.
	var writing chan error
	finish := func() error {
		if writing == nil {
			return nil
		}
		err := <-writing
		writing = nil
		if err == nil {
			client.AllowRebalance()
		}
		return err
	}
	for {
		fetches := client.PollRecords(ctx, cfg.MaxBatch)
		if ctx.Err() != nil {
			_ = finish()
			return nil
		}
		if fetches.IsClientClosed() {
			_ = finish()
			return errors.New("kafka consumer: client closed")
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				log.Warn("fetch failed", zap.String("topic", topic), zap.Int32("partition", p), zap.Error(err))
			}
		})
		batch, n := buildBatch(fetches, cfg.Group)
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if k := len(p.Records); k > 0 {
				m.lag.WithLabelValues(strconv.Itoa(int(p.Partition))).Set(float64(p.HighWatermark - p.Records[k-1].Offset - 1))
			}
		})
		if err := finish(); err != nil {
			return nil // ctx ended: the batch is redone by whoever resumes
		}
		if n == 0 {
			client.AllowRebalance()
			continue
		}
		writing = make(chan error, 1)
		go func(b usagestore.Batch, done chan<- error) {
			done <- ingestWithRetry(ctx, store, b, m, log)
		}(batch, writing)
	}
}

// buildBatch turns polled records into one ingestion batch: events,
// poison records as dead letters, and each partition's next offset.
func buildBatch(fetches kgo.Fetches, group string) (usagestore.Batch, int) {
	var b usagestore.Batch
	next := make(map[string]map[int32]int64)
	n := 0
	fetches.EachRecord(func(r *kgo.Record) {
		n++
		if next[r.Topic] == nil {
			next[r.Topic] = make(map[int32]int64)
		}
		next[r.Topic][r.Partition] = r.Offset + 1
		e, err := usagestore.ParseCloudEvent(r.Value)
		if err != nil {
			b.DeadLetters = append(b.DeadLetters, usagestore.DeadLetter{Reason: usagestore.ReasonPoison, Error: err.Error(),
				Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Payload: r.Value})
			return
		}
		b.Events = append(b.Events, e)
	})
	for topic, parts := range next {
		for p, off := range parts {
			b.Offsets = append(b.Offsets, usagestore.Offset{Group: group, Topic: topic, Partition: p, Next: off})
		}
	}
	return b, n
}

// ingestWithRetry writes the batch, retrying with backoff until it
// succeeds or ctx ends (records are never skipped).
func ingestWithRetry(ctx context.Context, store *usagestore.Store, b usagestore.Batch, m *consumerMetrics, log *zap.Logger) error {
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		res, err := store.Ingest(ctx, b)
		if err == nil {
			m.batch.Observe(time.Since(start).Seconds())
			for result, n := range map[string]int{"inserted": res.Inserted, "duplicate": res.Duplicates,
				"late": res.Late, "future": res.Future, "poison": res.Poison} {
				m.records.WithLabelValues(result).Add(float64(n))
			}
			if res.Poison > 0 {
				log.Warn("poison records dead-lettered", zap.Int("count", res.Poison))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Error("writing a usage batch failed; retrying", zap.Int("events", len(b.Events)), zap.Duration("backoff", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, consumerRetryMax)
	}
}

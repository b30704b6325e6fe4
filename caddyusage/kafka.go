package caddyusage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/usagestore"
)

// Kafka producer defaults.
const (
	DefaultTopic           = "tenantgate.usage.v1"
	DefaultDeliveryTimeout = 10 * time.Second
	kafkaLinger            = 5 * time.Millisecond
)

// contentTypeHeader marks records as structured CloudEvents (the Kafka
// protocol binding of CloudEvents).
var contentTypeHeader = []kgo.RecordHeader{{Key: "content-type", Value: []byte(usagestore.ContentType)}}

// kafkaSink produces events to a Kafka topic, keyed by organization, with
// an idempotent producer (acks=all). It never blocks: TryProduce fails at
// once when the producer's buffer is full, and records not acknowledged
// within the delivery timeout fail; both go to the spool.
type kafkaSink struct {
	client  *kgo.Client
	metrics *metrics
	logger  *zap.Logger

	mu      sync.Mutex
	err     error
	lastErr atomic.Int64
}

// kafkaSettings are the resolved settings of a Kafka sink.
type kafkaSettings struct {
	brokers         []string
	topic           string
	deliveryTimeout time.Duration
	maxBuffered     int
	tls             bool
	saslMechanism   string
	saslUser        string
	saslPassword    string
}

func (k kafkaSettings) key() string {
	return fmt.Sprintf("kafka|%s|%s|%s|%d|%t|%s|%s|%s", strings.Join(k.brokers, ","), k.topic, k.deliveryTimeout, k.maxBuffered,
		k.tls, k.saslMechanism, k.saslUser, k.saslPassword)
}

func newKafkaSink(k kafkaSettings, m *metrics, logger *zap.Logger) (*kafkaSink, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(k.brokers...),
		kgo.DefaultProduceTopic(k.topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotent producer: acks=all
		kgo.ProducerLinger(kafkaLinger),
		kgo.MaxBufferedRecords(k.maxBuffered),
		kgo.RecordDeliveryTimeout(k.deliveryTimeout),
		kgo.ProduceRequestTimeout(min(k.deliveryTimeout, 10*time.Second)),
		kgo.ProducerBatchCompression(kgo.SnappyCompression(), kgo.NoCompression()),
		kgo.AllowAutoTopicCreation(),
		kgo.ClientID("tenantgate"),
		kgo.WithLogger(kafkaLogger{logger.Named("kafka")}),
	}
	if k.tls {
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	if k.saslMechanism != "" {
		mech, err := saslMechanism(k.saslMechanism, k.saslUser, k.saslPassword)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(mech))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	return &kafkaSink{client: client, metrics: m, logger: logger}, nil
}

func saslMechanism(name, user, pass string) (sasl.Mechanism, error) {
	switch strings.ToLower(name) {
	case "plain":
		return plain.Auth{User: user, Pass: pass}.AsMechanism(), nil
	case "scram-sha-256":
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(), nil
	case "scram-sha-512":
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kafka sasl: mechanism must be plain, scram-sha-256 or scram-sha-512, got %q", name)
}

func (*kafkaSink) name() string { return "kafka" }

func record(e *usagestore.Event) *kgo.Record {
	return &kgo.Record{
		Key:     []byte(e.OrgID),
		Value:   e.AppendCloudEvent(make([]byte, 0, 512)),
		Headers: contentTypeHeader,
	}
}

func (s *kafkaSink) deliver(batch []*usagestore.Event, failed func([]*usagestore.Event)) {
	for _, e := range batch {
		e := e
		s.client.TryProduce(context.Background(), record(e), func(_ *kgo.Record, err error) {
			if err != nil {
				s.setErr(err)
				failed([]*usagestore.Event{e})
				return
			}
			s.setErr(nil)
			s.metrics.delivered.WithLabelValues("kafka").Inc()
		})
	}
}

func (s *kafkaSink) deliverAll(ctx context.Context, events []*usagestore.Event) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	wg.Add(len(events))
	for _, e := range events {
		s.client.TryProduce(ctx, record(e), func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
			s.metrics.delivered.WithLabelValues("kafka").Inc()
		})
	}
	wg.Wait()
	s.setErr(first)
	if first != nil {
		return fmt.Errorf("kafka sink: %w", first)
	}
	return nil
}

func (s *kafkaSink) setErr(err error) {
	if err == nil {
		// Keep a failure visible for a moment: a success of another
		// partition does not mean the outage is over.
		if last := s.lastErr.Load(); last != 0 && time.Since(time.Unix(0, last)) < time.Second {
			return
		}
	} else {
		s.lastErr.Store(time.Now().UnixNano())
	}
	s.mu.Lock()
	prev := s.err
	s.err = err
	s.mu.Unlock()
	switch {
	case err != nil && prev == nil && !errors.Is(err, kgo.ErrClientClosed):
		s.logger.Warn("kafka does not acknowledge usage events; spooling to disk until it does", zap.Error(err))
	case err == nil && prev != nil:
		s.logger.Info("kafka acknowledges usage events again")
	}
}

func (s *kafkaSink) failing() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// close waits (within ctx) for the records in flight, then closes the
// client: records still unacknowledged fail with ErrClientClosed and their
// promises spool them.
func (s *kafkaSink) close(ctx context.Context, _ func([]*usagestore.Event)) {
	if err := s.client.Flush(ctx); err != nil {
		s.logger.Warn("kafka did not acknowledge every usage event before the stop; the rest is spooled", zap.Error(err))
	}
	s.client.Close()
}

// kafkaLogger sends franz-go's warnings and errors to Caddy's log.
type kafkaLogger struct{ l *zap.Logger }

func (kafkaLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kafkaLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(keyvals[i]), keyvals[i+1]))
	}
	if level == kgo.LogLevelError {
		k.l.Error(msg, fields...)
		return
	}
	k.l.Warn(msg, fields...)
}

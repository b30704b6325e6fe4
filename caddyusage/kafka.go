package caddyusage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/usagestore"
)

// Kafka producer defaults.
const (
	defaultTopic           = "tenantgate.usage.v1"
	defaultDeliveryTimeout = 10 * time.Second
	// kafkaLinger lets a partition's records gather into one produce
	// request. At 5 000 events/s, 25 ms here and 10 ms of dispatchLinger,
	// instead of 5 ms and 2 ms, cut the process's CPU per event from about
	// 15 µs to 10 µs (BenchmarkKafkaSink), for about 30 ms more delay
	// before an event is in Kafka.
	kafkaLinger = 25 * time.Millisecond
)

// contentTypeHeader marks records as structured CloudEvents (the Kafka
// protocol binding of CloudEvents).
var contentTypeHeader = []kgo.RecordHeader{{Key: "content-type", Value: []byte(usagestore.ContentType)}}

// kafkaSink produces events to a Kafka topic, keyed by organization, with
// an idempotent producer (acks=all). It never blocks: TryProduce fails at
// once when the producer's buffer is full, and records not acknowledged
// within the delivery timeout fail; both go to the spool.
type kafkaSink struct {
	client          *kgo.Client
	delivered       prometheus.Counter
	logger          *zap.Logger
	deliveryTimeout time.Duration
	failed          func([]*usagestore.Event)
	stop            chan struct{}
	done            chan struct{}

	mu      sync.Mutex
	err     error
	lastErr atomic.Int64

	// inflight holds the records produced and not yet acknowledged, oldest
	// first. franz-go cannot fail a record whose produce request is in
	// flight to a stalled broker (that would break the idempotent
	// sequence), so the watchdog spools every record older than the
	// delivery timeout itself; if the broker acknowledges it later, the
	// store's deduplication absorbs the replayed copy.
	inflightMu sync.Mutex
	inflight   []*inflight
}

// inflight is one produced record and its fate: pending until the broker
// acknowledges it (done) or the watchdog or a failure spools it (spooled).
// The record is its first field, so the one promise function of the sink
// finds the inflight from the record it is given: one allocation per
// event for record and bookkeeping, and no closure.
type inflight struct {
	rec      kgo.Record // first: see fromRecord
	e        *usagestore.Event
	sink     *kafkaSink
	failed   func([]*usagestore.Event)
	deadline int64
	state    atomic.Int32
}

// fromRecord returns the inflight whose record r is. Only records made by
// deliver (always the rec field of an inflight) reach the promise.
func fromRecord(r *kgo.Record) *inflight {
	return (*inflight)(unsafe.Pointer(r))
}

const (
	recordPending int32 = iota
	recordDone
	recordSpooled
)

// watchdogInterval is how often records past the delivery timeout are
// looked for.
const watchdogInterval = 200 * time.Millisecond

// kafkaSettings are the resolved settings of a Kafka sink.
type kafkaSettings struct {
	brokers         []string
	topic           string
	deliveryTimeout time.Duration
	maxBuffered     int
	tls             bool
	compression     string
	saslMechanism   string
	saslUser        string
	saslPassword    string
}

func (k kafkaSettings) key() string {
	return fmt.Sprintf("kafka|%s|%s|%s|%d|%t|%s|%s|%s|%s", strings.Join(k.brokers, ","), k.topic, k.deliveryTimeout, k.maxBuffered,
		k.tls, k.compression, k.saslMechanism, k.saslUser, k.saslPassword)
}

// compressionCodecs are the accepted values of the kafka block's
// compression setting; "" means none.
var compressionCodecs = []string{"snappy", "lz4", "zstd", "gzip", "none"}

func validCompression(name string) bool {
	return name == "" || slices.Contains(compressionCodecs, name)
}

// compressionCodec is the franz-go codec named by a validated setting.
func compressionCodec(name string) kgo.CompressionCodec {
	switch name {
	case "none":
		return kgo.NoCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	case "gzip":
		return kgo.GzipCompression()
	}
	return kgo.SnappyCompression()
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
		kgo.ProducerBatchCompression(compressionCodec(k.compression)),
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
	s := &kafkaSink{client: client, delivered: m.delivered.WithLabelValues("kafka"), logger: logger, deliveryTimeout: k.deliveryTimeout,
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.watchdog()
	return s, nil
}

// watchdog spools the records the broker has not acknowledged within the
// delivery timeout.
func (s *kafkaSink) watchdog() {
	defer close(s.done)
	t := time.NewTicker(watchdogInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		var late []*usagestore.Event
		var failed func([]*usagestore.Event)
		s.inflightMu.Lock()
		failed = s.failed
		i := 0
		for ; i < len(s.inflight); i++ {
			r := s.inflight[i]
			if r.state.Load() != recordPending {
				continue
			}
			if r.deadline > now {
				break
			}
			if r.state.CompareAndSwap(recordPending, recordSpooled) {
				late = append(late, r.e)
			}
		}
		// Forget the settled prefix.
		j := 0
		for j < len(s.inflight) && s.inflight[j].state.Load() != recordPending {
			j++
		}
		s.inflight = append(s.inflight[:0:0], s.inflight[j:]...)
		s.inflightMu.Unlock()
		if len(late) > 0 && failed != nil {
			s.setErr(errors.New("no acknowledgement within the delivery timeout " + s.deliveryTimeout.String()))
			failed(late)
		}
	}
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

// fillRecord makes rec the Kafka record of e: key org_id, value the
// CloudEvents JSON. The key is never modified by the client, so it shares
// the string's bytes.
func fillRecord(rec *kgo.Record, e *usagestore.Event) {
	rec.Key = unsafe.Slice(unsafe.StringData(e.OrgID), len(e.OrgID))
	rec.Value = e.AppendCloudEvent(make([]byte, 0, 512))
	rec.Headers = contentTypeHeader
}

func (s *kafkaSink) deliver(batch []*usagestore.Event, failed func([]*usagestore.Event)) {
	deadline := time.Now().Add(s.deliveryTimeout).UnixNano()
	records := make([]*inflight, len(batch))
	for i, e := range batch {
		r := &inflight{e: e, sink: s, failed: failed, deadline: deadline}
		fillRecord(&r.rec, e)
		records[i] = r
	}
	s.inflightMu.Lock()
	s.failed = failed
	s.inflight = append(s.inflight, records...)
	s.inflightMu.Unlock()
	for _, r := range records {
		s.client.TryProduce(context.Background(), &r.rec, deliveredOrSpooled)
	}
}

// deliveredOrSpooled is the promise of every record deliver produces.
func deliveredOrSpooled(rec *kgo.Record, err error) {
	r := fromRecord(rec)
	if !r.state.CompareAndSwap(recordPending, recordDone) {
		return // already spooled by the watchdog
	}
	s := r.sink
	if err != nil {
		r.state.Store(recordSpooled)
		s.setErr(err)
		r.failed([]*usagestore.Event{r.e})
		return
	}
	s.setErr(nil)
	s.delivered.Inc()
}

func (s *kafkaSink) deliverAll(ctx context.Context, events []*usagestore.Event) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	wg.Add(len(events))
	for _, e := range events {
		rec := new(kgo.Record)
		fillRecord(rec, e)
		s.client.TryProduce(ctx, rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
			s.delivered.Inc()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * s.deliveryTimeout):
		// A stalled broker: give up on this replay (the segment stays);
		// records it acknowledges later are duplicates the store absorbs.
		mu.Lock()
		if first == nil {
			first = errors.New("no acknowledgement within twice the delivery timeout")
		}
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
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
		if last := s.lastErr.Load(); last != 0 && time.Since(time.Unix(0, last)) < watchdogInterval {
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
func (s *kafkaSink) close(ctx context.Context, failed func([]*usagestore.Event)) {
	close(s.stop)
	<-s.done
	if err := s.client.Flush(ctx); err != nil {
		s.logger.Warn("kafka did not acknowledge every usage event before the stop; the rest is spooled", zap.Error(err))
	}
	s.client.Close()
	// Whatever is still pending (a promise not called yet) is spooled.
	s.inflightMu.Lock()
	var rest []*usagestore.Event
	for _, r := range s.inflight {
		if r.state.CompareAndSwap(recordPending, recordSpooled) {
			rest = append(rest, r.e)
		}
	}
	s.inflight = nil
	s.inflightMu.Unlock()
	if len(rest) > 0 {
		failed(rest)
	}
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

// Interface guard
var _ sink = (*kafkaSink)(nil)

package caddyusage

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/usagestore"
)

// postgresTimeout bounds one batch's ingestion by the postgres sink.
const postgresTimeout = 10 * time.Second

// postgresSink ingests events straight into the usage store, one
// transaction per batch, for operators without Kafka. A failed batch is
// spooled whole and replayed later; the store counts every event once.
type postgresSink struct {
	store   *usagestore.Store
	metrics *metrics
	logger  *zap.Logger
	cancel  context.CancelFunc
	done    chan struct{}

	mu  sync.Mutex
	err error
}

func newPostgresSink(dsn string, rawRetention time.Duration, m *metrics, logger *zap.Logger) (*postgresSink, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := usagestore.Open(ctx, dsn, usagestore.Options{RawRetention: rawRetention, ApplicationName: "tenantgate-usage-sink"})
	if err != nil {
		return nil, err
	}
	s := &postgresSink{store: store, metrics: m, logger: logger, done: make(chan struct{})}
	var mctx context.Context
	mctx, s.cancel = context.WithCancel(context.Background())
	go func() {
		defer close(s.done)
		store.MaintainEvery(mctx, time.Hour, func(err error) {
			logger.Warn("usage partition maintenance failed (is the schema migrated? run `caddy tenant migrate`)", zap.Error(err))
		})
	}()
	return s, nil
}

func (*postgresSink) name() string { return "postgres" }

func (s *postgresSink) deliver(batch []*usagestore.Event, failed func([]*usagestore.Event)) {
	ctx, cancel := context.WithTimeout(context.Background(), postgresTimeout)
	defer cancel()
	if err := s.deliverAll(ctx, batch); err != nil {
		failed(append([]*usagestore.Event(nil), batch...))
	}
}

func (s *postgresSink) deliverAll(ctx context.Context, events []*usagestore.Event) error {
	b := usagestore.Batch{Events: make([]usagestore.Event, len(events))}
	for i, e := range events {
		b.Events[i] = *e
	}
	_, err := s.store.Ingest(ctx, b)
	s.mu.Lock()
	prev := s.err
	s.err = err
	s.mu.Unlock()
	if err != nil {
		if prev == nil {
			s.logger.Error("usage ingestion into PostgreSQL failed; spooling to disk until it works again", zap.Error(err))
		}
		return fmt.Errorf("postgres sink: %w", err)
	}
	if prev != nil {
		s.logger.Info("usage ingestion into PostgreSQL works again")
	}
	s.metrics.delivered.WithLabelValues("postgres").Add(float64(len(events)))
	return nil
}

func (s *postgresSink) failing() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *postgresSink) close(context.Context, func([]*usagestore.Event)) {
	s.cancel()
	<-s.done
	s.store.Close()
}

// Interface guard
var _ sink = (*postgresSink)(nil)

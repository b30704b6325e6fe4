// Package usagestore is Tenantgate's usage store in PostgreSQL (TimescaleDB
// when the extension is there): one-transaction batch ingestion that counts
// every event exactly once, partition maintenance, and the report query the
// CLI and the admin API serve. The tables come from the migrations in
// migrations/ (docs/usage.md describes them).
package usagestore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// defaultRawRetention is how long raw events are kept when Options leaves it
// unset. Events older than that are dead-lettered as late, not counted.
const defaultRawRetention = 7 * 24 * time.Hour

// maxFutureSkew bounds how far ahead of the store's clock an event may be
// stamped; later ones are dead-lettered (a gateway with a broken clock).
const maxFutureSkew = 24 * time.Hour

// Options tune a Store.
type Options struct {
	// RawRetention: raw events older than this are dropped by maintenance,
	// and arriving ones are dead-lettered as late. Default 7 days.
	RawRetention time.Duration
	// MaxConns bounds the connection pool. Default 4.
	MaxConns int32
	// Now is the clock (tests inject one). Default time.Now.
	Now func() time.Time
	// ApplicationName is reported to PostgreSQL. Default tenantgate-usage.
	ApplicationName string
}

// Store reads and writes the usage tables.
type Store struct {
	pool         *pgxpool.Pool
	rawRetention time.Duration
	now          func() time.Time

	mu         sync.Mutex
	partitions map[int64]bool // UTC days (Unix day numbers) known to have a partition
}

// Open connects to the usage database. The schema must exist
// (migrations.Up, which `caddy tenant migrate` runs).
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("usage database URL: %w", err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	name := opts.ApplicationName
	if name == "" {
		name = "tenantgate-usage"
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = name
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the usage database: %w", err)
	}
	return NewStore(pool, opts), nil
}

// NewStore uses an existing pool (closed by Close).
func NewStore(pool *pgxpool.Pool, opts Options) *Store {
	s := &Store{pool: pool, rawRetention: opts.RawRetention, now: opts.Now, partitions: make(map[int64]bool)}
	if s.rawRetention <= 0 {
		s.rawRetention = defaultRawRetention
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Pool is the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Timescale reports whether usage_events is a TimescaleDB hypertable.
func (s *Store) Timescale(ctx context.Context) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
		AND EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		            WHERE n.nspname = '_timescaledb_catalog' AND c.relname = 'hypertable')`).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("looking for TimescaleDB: %w", err)
	}
	if !ok {
		return false, nil
	}
	err = s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
		WHERE hypertable_schema = current_schema() AND hypertable_name = 'usage_events')`).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("looking for the usage_events hypertable: %w", err)
	}
	return ok, nil
}

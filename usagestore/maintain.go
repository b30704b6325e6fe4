package usagestore

import (
	"context"
	"fmt"
	"time"
)

// partitionsAhead is how many days of partitions maintenance makes ahead.
const partitionsAhead = 3

// unixDay is the UTC day number of t.
func unixDay(t time.Time) int64 { return t.Unix() / 86400 }

// ensurePartitions makes sure every day the events fall on has a partition
// (plain PostgreSQL; a no-op on TimescaleDB). Known days are remembered, so
// this costs no query in the steady state.
func (s *Store) ensurePartitions(ctx context.Context, events []*Event) error {
	var lo, hi int64
	s.mu.Lock()
	for _, e := range events {
		d := unixDay(e.Time)
		if s.partitions[d] {
			continue
		}
		if lo == 0 || d < lo {
			lo = d
		}
		if d > hi {
			hi = d
		}
	}
	s.mu.Unlock()
	if lo == 0 {
		return nil
	}
	return s.createPartitions(ctx, lo, hi)
}

func (s *Store) createPartitions(ctx context.Context, lo, hi int64) error {
	from, to := time.Unix(lo*86400, 0).UTC(), time.Unix(hi*86400, 0).UTC()
	if _, err := s.pool.Exec(ctx, `SELECT usage_ensure_partitions($1::date, $2::date)`, from, to); err != nil {
		return fmt.Errorf("creating usage partitions %s..%s: %w", from.Format(time.DateOnly), to.Format(time.DateOnly), err)
	}
	s.mu.Lock()
	for d := lo; d <= hi; d++ {
		s.partitions[d] = true
	}
	s.mu.Unlock()
	return nil
}

// Maintain creates the partitions of today and the next days and drops
// those past the raw retention (minute and hour rollups past theirs too, on
// plain PostgreSQL; TimescaleDB's policies do that there). It returns the
// number of partitions or chunks dropped.
func (s *Store) Maintain(ctx context.Context) (int, error) {
	today := unixDay(s.now())
	if err := s.createPartitions(ctx, today-1, today+partitionsAhead); err != nil {
		return 0, err
	}
	var dropped int
	if err := s.pool.QueryRow(ctx, `SELECT usage_drop_expired($1, $2 * interval '1 second')`, s.now(), int64(s.rawRetention/time.Second)).Scan(&dropped); err != nil {
		return 0, fmt.Errorf("dropping expired usage data: %w", err)
	}
	s.mu.Lock()
	for d := range s.partitions {
		if d < today-int64(s.rawRetention/(24*time.Hour))-1 {
			delete(s.partitions, d)
		}
	}
	s.mu.Unlock()
	return dropped, nil
}

// MaintainEvery runs Maintain now and then every interval until ctx ends,
// reporting errors to onError.
func (s *Store) MaintainEvery(ctx context.Context, interval time.Duration, onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.Maintain(ctx); err != nil && ctx.Err() == nil && onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

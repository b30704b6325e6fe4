package keystore

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
)

// refreshLoop re-reads the cached keys every refresh_interval, so changes
// that no notification announced (the LISTEN connection was down, a key
// expired) reach the cache, and keys in use never go stale.
func (s *Store) refreshLoop() {
	defer s.wg.Done()
	for {
		t := time.NewTimer(s.settings.Load().RefreshInterval)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := s.revalidate(); err != nil {
			s.logger().Warn("key cache refresh failed; serving cached keys", zap.Error(err))
		}
	}
}

// revalidate reads every cached key again, in batches, and replaces or
// evicts it; keys no longer in the database become refusals.
func (s *Store) revalidate() error {
	hashes := s.keys.hashes()
	for len(hashes) > 0 {
		batch := hashes[:min(len(hashes), refreshBatchSz)]
		hashes = hashes[len(batch):]
		if err := s.revalidateBatch(batch); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) revalidateBatch(batch []KeyHash) error {
	gens := s.snapshotGens()
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.queryTimeout)
	defer cancel()
	rows, err := queryKeys(ctx, s.pool, batch)
	if err != nil {
		s.queryFailed(err)
		return fmt.Errorf("reading cached keys: %w", err)
	}
	s.state.keyQueriesWork()
	now := s.now()
	found := make(map[KeyHash]struct{}, len(rows))
	for _, r := range rows {
		found[r.hash] = struct{}{}
		s.remember(r.hash, decide(r, true, now), gens[r.hash[0]%cacheShards], now)
	}
	for _, h := range batch {
		if _, ok := found[h]; !ok {
			s.remember(h, decide(keyRow{}, false, now), gens[h[0]%cacheShards], now)
		}
	}
	return nil
}

// Retry backoff of the maintenance loop, and how long a streaming read
// (filter build, warm start) may go without a row before it is abandoned.
// There is no deadline on the whole read: it takes as long as the key table
// is large, and the LISTEN connection applies changes meanwhile.
const (
	maintainMinBackoff = time.Second
	maintainMaxBackoff = 15 * time.Second
	streamStallTimeout = 15 * time.Second
)

// maintainLoop does the work the LISTEN connection asks for once it is up:
// re-read the cached keys, rebuild the key filter, warm the cache the first
// time. It is best effort: a failure is logged and retried while the LISTEN
// connection stays up (a reconnection asks again anyway), and it never
// marks PostgreSQL as failing by itself: a slow warm-up is not an outage.
func (s *Store) maintainLoop() {
	defer s.wg.Done()
	var retry <-chan time.Time
	backoff := maintainMinBackoff
	needResync, needFilter := false, false
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.resync:
			needResync, needFilter = true, true
		case <-s.rebuild:
			needFilter = true
		case <-retry:
		}
		retry = nil
		err := s.maintain(&needResync, &needFilter)
		switch {
		case err == nil:
			backoff = maintainMinBackoff
		case s.ctx.Err() != nil:
			return
		default:
			s.logger().Warn("key store maintenance failed; cached keys are served meanwhile", zap.Error(err),
				zap.Duration("retry_in", backoff))
			if s.state.listening.Load() {
				retry = time.After(backoff)
				backoff = min(2*backoff, maintainMaxBackoff)
			}
		}
	}
}

// maintain does what is pending, clearing each flag once done.
func (s *Store) maintain(resync, filter *bool) error {
	if *resync {
		if err := s.revalidate(); err != nil {
			return fmt.Errorf("re-reading the cached keys: %w", err)
		}
		*resync = false
	}
	if *filter {
		if err := s.buildFilter(); err != nil {
			return fmt.Errorf("building the key filter: %w", err)
		}
		*filter = false
	}
	if !s.warmed.Load() {
		if err := s.warm(); err != nil {
			return fmt.Errorf("warming the key cache: %w", err)
		}
		s.warmed.Store(true)
	}
	return nil
}

// buildFilter streams the hash of every key that is not revoked into a new
// key filter and puts it in place. Keys announced while it runs go into it
// too, so none created meanwhile is missed.
func (s *Store) buildFilter() error {
	ctx, progress, stop := s.streamContext()
	defer stop()
	var expected int
	if err := s.pool.QueryRow(ctx, sqlCountFilterKeys).Scan(&expected); err != nil {
		return s.streamFailed(ctx, err)
	}
	f := newKeyFilter(expected)
	s.building.Store(f)
	defer s.building.Store(nil)
	if err := forEachFilterKey(ctx, s.pool, func(h KeyHash) { f.add(h); progress() }); err != nil {
		return s.streamFailed(ctx, err)
	}
	s.state.keyQueriesWork()
	s.filter.Store(f) // before building is cleared: no notification is lost
	keys, bytes := f.size()
	s.logger().Info("key filter built", zap.Uint("keys", keys), zap.Uint("bytes", bytes))
	return nil
}

// warm loads the newest active keys, up to the cache size, so that a fresh
// gateway does not send its first requests to PostgreSQL.
func (s *Store) warm() error {
	gens := s.snapshotGens()
	ctx, progress, stop := s.streamContext()
	defer stop()
	now := s.now()
	loaded := 0
	err := forEachActiveKey(ctx, s.pool, s.keys.capacity(), func(r keyRow) {
		s.remember(r.hash, decide(r, true, now), gens[r.hash[0]%cacheShards], now)
		loaded++
		progress()
	})
	if err != nil {
		return s.streamFailed(ctx, err)
	}
	if loaded >= largeWarmStart {
		// Reading many rows leaves their buffers behind; give that memory
		// back now rather than carry it until the next collection.
		debug.FreeOSMemory()
	}
	s.logger().Info("key cache warmed", zap.Int("keys", loaded))
	return nil
}

// largeWarmStart is the number of keys loaded at start above which the
// warm-up's garbage is returned to the operating system at once.
const largeWarmStart = 100_000

// errStalled is the cause of a streaming read abandoned for lack of rows.
var errStalled = fmt.Errorf("no row from PostgreSQL for %s", streamStallTimeout)

// streamContext returns the context of a streaming read: it ends with the
// store, or when progress has not been called for streamStallTimeout.
func (s *Store) streamContext() (ctx context.Context, progress, stop func()) {
	ctx, cancel := context.WithCancelCause(s.ctx)
	watchdog := time.AfterFunc(streamStallTimeout, func() { cancel(errStalled) })
	rows := 0
	progress = func() {
		if rows++; rows%1024 == 0 {
			watchdog.Reset(streamStallTimeout)
		}
	}
	return ctx, progress, func() { watchdog.Stop(); cancel(nil) }
}

// streamFailed explains why a streaming read failed. A missing schema is
// recorded for the health check; nothing else marks PostgreSQL failing.
func (s *Store) streamFailed(ctx context.Context, err error) error {
	if isSchemaMissing(err) {
		s.state.failure(s.now(), err)
	}
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
		return cause
	}
	return err
}

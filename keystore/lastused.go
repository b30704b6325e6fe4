package keystore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Recording api_keys.last_used_at. A request accepted with a cached key
// marks the key's cache record with the current Unix second (a load, and a
// store at most once a second per key: no allocation, no lock, no query). A
// background flusher writes the keys used since their last flush every
// minute, in batches, and never moves last_used_at backwards, so several
// gateways can share the database. The migration's trigger does not
// announce a change of last_used_at alone, so flushing empties no cache.
const (
	lastUseFlushInterval = time.Minute
	lastUseBatchSize     = 1000
	// lastUseFinalFlushTimeout bounds the flush made when the store is
	// destroyed (shutdown, or a reload that drops its database).
	lastUseFinalFlushTimeout = 2 * time.Second
	// maxPendingLastUses bounds the uses kept for keys no longer cached
	// while flushes fail; beyond it, such uses are dropped (last_used_at
	// is best effort, memory is not).
	maxPendingLastUses = 100_000

	sqlRecordLastUse = `UPDATE api_keys k
		SET last_used_at = GREATEST(coalesce(k.last_used_at, '-infinity'), u.t)
		FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, t)
		WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.t)`
)

// cachedKey is what the cache holds for a usable key: its identity, shared
// by every request made with the key, and when the key was last used. It
// costs 16 bytes more than the identity alone.
type cachedKey struct {
	tenant.Identity
	// lastUsed is the Unix second of the latest request accepted with the key.
	lastUsed atomic.Int64
	// flushed is the latest lastUsed written to PostgreSQL.
	flushed atomic.Int64
}

// touch records a use at Unix second sec.
func (k *cachedKey) touch(sec int64) {
	if k.lastUsed.Load() < sec {
		k.lastUsed.Store(sec)
	}
}

// unflushed returns the use not written yet, or 0.
func (k *cachedKey) unflushed() int64 {
	if t := k.lastUsed.Load(); t > k.flushed.Load() {
		return t
	}
	return 0
}

// storeMax raises a to v if v is greater.
func storeMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if cur >= v || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// lastUseLog holds the unflushed uses of keys that left the cache
// (evicted, invalidated, refused), until the next flush.
type lastUseLog struct {
	flushing sync.Mutex // one flush at a time
	mu       sync.Mutex
	pending  map[string]int64 // key ID → Unix second
}

// keep records key ID id as used at Unix second t.
func (u *lastUseLog) keep(id string, t int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if prev, ok := u.pending[id]; ok {
		u.pending[id] = max(prev, t)
		return
	}
	if len(u.pending) >= maxPendingLastUses {
		return
	}
	if u.pending == nil {
		u.pending = make(map[string]int64)
	}
	u.pending[id] = t
}

// take removes and returns the pending uses.
func (u *lastUseLog) take() map[string]int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.pending
	u.pending = nil
	return p
}

// keyRemoved is the key cache's removal hook: a key leaving the cache
// leaves its unflushed use behind for the next flush.
func (s *Store) keyRemoved(old keyEntry) {
	if t := old.rec.unflushed(); t != 0 {
		s.lastUse.keep(old.rec.KeyID, t)
	}
}

// keyReplaced is the key cache's replacement hook (refresh, a re-read
// after a change): an unchanged identity keeps its record, so requests
// that hold it keep marking the cached one; a changed one inherits its
// marks.
func (s *Store) keyReplaced(old, next keyEntry) keyEntry {
	switch {
	case old.rec.KeyID != next.rec.KeyID:
		s.keyRemoved(old)
	case old.rec.Identity == next.rec.Identity:
		storeMax(&old.rec.lastUsed, next.rec.lastUsed.Load())
		storeMax(&old.rec.flushed, next.rec.flushed.Load())
		next.rec = old.rec
	default:
		storeMax(&next.rec.lastUsed, old.rec.lastUsed.Load())
		storeMax(&next.rec.flushed, old.rec.flushed.Load())
	}
	return next
}

// keyUse is one key's use to write.
type keyUse struct {
	keyID string
	at    int64      // Unix second
	rec   *cachedKey // nil for a key no longer cached
}

// lastUseLoop flushes the recorded uses every minute until the store is
// destroyed.
func (s *Store) lastUseLoop() {
	defer s.wg.Done()
	failures := 0
	for {
		// Jitter: gateways started together do not write in step.
		t := time.NewTimer(lastUseFlushInterval - lastUseFlushInterval/10 + rand.N(lastUseFlushInterval/5))
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		n, err := s.flushLastUse(s.ctx)
		switch {
		case err == nil:
			failures = 0
			s.logger().Debug("recorded api_keys.last_used_at", zap.Int("keys", n))
		case s.ctx.Err() != nil:
			return
		default:
			// The first failure of a streak is a warning; the retries are not.
			if failures++; failures == 1 {
				s.logger().Warn("recording api_keys.last_used_at failed; keeping it for the next try", zap.Error(err))
			} else {
				s.logger().Debug("recording api_keys.last_used_at still failing", zap.Error(err))
			}
		}
	}
}

// finalLastUseFlush is the last, best-effort flush when the store is
// destroyed.
func (s *Store) finalLastUseFlush() {
	ctx, cancel := context.WithTimeout(context.Background(), lastUseFinalFlushTimeout)
	defer cancel()
	if _, err := s.flushLastUse(ctx); err != nil {
		s.logger().Warn("recording api_keys.last_used_at on shutdown failed; the latest uses are lost", zap.Error(err))
	}
}

// flushLastUse writes last_used_at for every key used since its last flush
// and returns how many keys it wrote. Nothing used, no query. After a
// failure what was not written stays marked for the next flush.
func (s *Store) flushLastUse(ctx context.Context) (int, error) {
	s.lastUse.flushing.Lock()
	defer s.lastUse.flushing.Unlock()
	uses := s.collectLastUses()
	written := 0
	for len(uses) > 0 {
		batch := uses[:min(len(uses), lastUseBatchSize)]
		if err := s.writeLastUses(ctx, batch); err != nil {
			for _, u := range uses {
				if u.rec == nil {
					s.lastUse.keep(u.keyID, u.at)
				}
			}
			return written, fmt.Errorf("updating api_keys.last_used_at: %w", err)
		}
		for _, u := range batch {
			if u.rec != nil {
				storeMax(&u.rec.flushed, u.at)
			}
		}
		written += len(batch)
		uses = uses[len(batch):]
	}
	return written, nil
}

// collectLastUses gathers the cached keys used since their last flush and
// the pending uses of keys that left the cache, one per key.
func (s *Store) collectLastUses() []keyUse {
	pending := s.lastUse.take()
	var uses []keyUse
	s.keys.forEach(func(_ KeyHash, e keyEntry) {
		t := e.rec.unflushed()
		if t == 0 {
			return
		}
		if p, ok := pending[e.rec.KeyID]; ok {
			t = max(t, p)
			delete(pending, e.rec.KeyID)
		}
		uses = append(uses, keyUse{keyID: e.rec.KeyID, at: t, rec: e.rec})
	})
	for id, t := range pending {
		uses = append(uses, keyUse{keyID: id, at: t})
	}
	return uses
}

// writeLastUses writes one batch with one statement.
func (s *Store) writeLastUses(ctx context.Context, batch []keyUse) error {
	ids := make([]string, len(batch))
	times := make([]time.Time, len(batch))
	for i, u := range batch {
		ids[i], times[i] = u.keyID, time.Unix(u.at, 0)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.queryTimeout)
	defer cancel()
	_, err := s.pool.Exec(ctx, sqlRecordLastUse, ids, times)
	if err == nil {
		s.state.keyQueriesWork()
	}
	return err
}

package keystore

import (
	"context"
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
		s.state.failure(s.now(), err)
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

// warm loads the newest active keys, up to the cache size, so that a fresh
// gateway does not send its first requests to Postgres.
func (s *Store) warm() error {
	gens := s.snapshotGens()
	ctx, cancel := context.WithTimeout(s.ctx, 4*queryTimeout)
	defer cancel()
	now := s.now()
	loaded := 0
	err := forEachActiveKey(ctx, s.pool, s.keys.capacity(), func(r keyRow) {
		s.remember(r.hash, decide(r, true, now), gens[r.hash[0]%cacheShards], now)
		loaded++
	})
	if err != nil {
		return fmt.Errorf("loading active keys: %w", err)
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

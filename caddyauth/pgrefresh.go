package caddyauth

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
func (b *pgBackend) refreshLoop() {
	defer b.wg.Done()
	for {
		t := time.NewTimer(b.settings.Load().refreshInterval)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := b.revalidate(); err != nil {
			b.logger().Warn("key cache refresh failed; serving cached keys", zap.Error(err))
		}
	}
}

// revalidate reads every cached key again, in batches, and replaces or
// evicts it; keys no longer in the database become refusals.
func (b *pgBackend) revalidate() error {
	hashes := b.keys.hashes()
	for len(hashes) > 0 {
		batch := hashes[:min(len(hashes), refreshBatchSz)]
		hashes = hashes[len(batch):]
		if err := b.revalidateBatch(batch); err != nil {
			return err
		}
	}
	return nil
}

func (b *pgBackend) revalidateBatch(batch []KeyHash) error {
	gens := b.snapshotGens()
	ctx, cancel := context.WithTimeout(b.ctx, pgQueryTimeout)
	defer cancel()
	rows, err := queryKeys(ctx, b.pool, batch)
	if err != nil {
		b.state.failure(b.now())
		return fmt.Errorf("reading cached keys: %w", err)
	}
	b.state.success()
	now := b.now()
	found := make(map[KeyHash]struct{}, len(rows))
	for _, r := range rows {
		found[r.hash] = struct{}{}
		b.remember(r.hash, decide(r, true, now), gens[r.hash[0]%cacheShards], now)
	}
	for _, h := range batch {
		if _, ok := found[h]; !ok {
			b.remember(h, decide(keyRow{}, false, now), gens[h[0]%cacheShards], now)
		}
	}
	return nil
}

// warm loads the newest active keys, up to the cache size, so that a fresh
// gateway does not send its first requests to Postgres.
func (b *pgBackend) warm() error {
	gens := b.snapshotGens()
	ctx, cancel := context.WithTimeout(b.ctx, 4*pgQueryTimeout)
	defer cancel()
	now := b.now()
	loaded := 0
	err := forEachActiveKey(ctx, b.pool, b.keys.capacity(), func(r keyRow) {
		b.remember(r.hash, decide(r, true, now), gens[r.hash[0]%cacheShards], now)
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
	b.logger().Info("key cache warmed", zap.Int("keys", loaded))
	return nil
}

// largeWarmStart is the number of keys loaded at start above which the
// warm-up's garbage is returned to the operating system at once.
const largeWarmStart = 100_000

// snapshotGens returns every shard's generation, taken before a query.
func (b *pgBackend) snapshotGens() (gens [cacheShards]uint64) {
	for i := range b.gens {
		gens[i] = b.gens[i].Load()
	}
	return gens
}

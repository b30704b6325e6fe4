package caddyratelimit

import "sync"

// numShards splits per-organization maps so that concurrent requests for
// different organizations rarely contend for one lock.
const numShards = 32

// shard is one lock-protected part of a shardedMap.
type shard[V any] struct {
	mu sync.Mutex
	m  map[string]V
}

// shardedMap is a map from organization ID to V, split into numShards
// shards, each bounded to perShard entries by its users.
type shardedMap[V any] struct {
	shards   [numShards]shard[V]
	perShard int
}

// newShardedMap returns a map that holds at most about maxEntries entries.
func newShardedMap[V any](maxEntries int) *shardedMap[V] {
	s := &shardedMap[V]{perShard: max(1, maxEntries/numShards)}
	for i := range s.shards {
		s.shards[i].m = make(map[string]V)
	}
	return s
}

// shardOf returns the shard that holds key (FNV-1a; allocation-free).
func (s *shardedMap[V]) shardOf(key string) *shard[V] {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return &s.shards[h%numShards]
}

// full reports whether the shard, whose lock the caller holds, is at its bound.
func (s *shardedMap[V]) full(sh *shard[V]) bool { return len(sh.m) >= s.perShard }

// len counts the entries (locking each shard in turn).
func (s *shardedMap[V]) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// sweep deletes, shard by shard, the entries for which drop returns true.
// It runs off the request path (a background ticker, or a full shard).
func (s *shardedMap[V]) sweep(drop func(V) bool) (removed int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		removed += sweepShard(sh, drop)
		sh.mu.Unlock()
	}
	return removed
}

// sweepShard deletes the entries of a locked shard for which drop is true.
func sweepShard[V any](sh *shard[V], drop func(V) bool) (removed int) {
	for k, v := range sh.m {
		if drop(v) {
			delete(sh.m, k)
			removed++
		}
	}
	return removed
}

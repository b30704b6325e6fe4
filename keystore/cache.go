package keystore

import (
	"sync"
	"sync/atomic"
)

// cacheShards splits a cache so that concurrent requests rarely share a
// lock; lookups take only a shard's read lock.
const cacheShards = 64

// cacheValue is what a shardedCache holds: each value says until when it
// is fresh, and the entry fresh for the shortest time is evicted first.
type cacheValue interface {
	deadline() int64
}

// shardedCache is a size-bounded map from key hash to V. Key hashes are
// SHA-256 outputs, so their first byte spreads them evenly over the shards.
// When a shard is full, inserting evicts the sampled entry with the
// earliest deadline (a few entries are sampled, in Go's random map order).
type shardedCache[V cacheValue] struct {
	perShard atomic.Int64
	shards   [cacheShards]cacheShard[V]

	// Optional hooks, set before the cache is used and called under the
	// shard's lock. replaced is called when put replaces a value, and
	// returns the value to store; removed is called for each value that
	// is deleted or evicted.
	replaced func(old, next V) V
	removed  func(old V)
}

type cacheShard[V cacheValue] struct {
	mu sync.RWMutex
	m  map[KeyHash]V
	_  [32]byte // keep hot shard locks on separate cache lines
}

// evictionSamples is how many entries a full shard looks at to pick a victim.
const evictionSamples = 4

func newShardedCache[V cacheValue](size int) *shardedCache[V] {
	c := new(shardedCache[V])
	for i := range c.shards {
		c.shards[i].m = make(map[KeyHash]V)
	}
	c.setSize(size)
	return c
}

// setSize sets the bound: size rounded up to a multiple of cacheShards.
// Shrinking takes effect as entries are inserted.
func (c *shardedCache[V]) setSize(size int) {
	c.perShard.Store(int64(max(1, (size+cacheShards-1)/cacheShards)))
}

// capacity is the most entries the cache holds.
func (c *shardedCache[V]) capacity() int {
	return int(c.perShard.Load()) * cacheShards
}

func (c *shardedCache[V]) shard(h KeyHash) *cacheShard[V] {
	return &c.shards[h[0]%cacheShards]
}

func (c *shardedCache[V]) get(h KeyHash) (V, bool) {
	s := c.shard(h)
	s.mu.RLock()
	v, ok := s.m[h]
	s.mu.RUnlock()
	return v, ok
}

// put stores v unless valid reports false under the shard's lock (used to
// drop results that an invalidation overtook).
func (c *shardedCache[V]) put(h KeyHash, v V, valid func() bool) bool {
	s := c.shard(h)
	limit := int(c.perShard.Load())
	s.mu.Lock()
	defer s.mu.Unlock()
	if valid != nil && !valid() {
		return false
	}
	if old, exists := s.m[h]; exists {
		if c.replaced != nil {
			v = c.replaced(old, v)
		}
	} else {
		for len(s.m) >= limit {
			c.evictOne(s)
		}
	}
	s.m[h] = v
	return true
}

// evictOne removes the entry with the earliest deadline among a few sampled.
func (c *shardedCache[V]) evictOne(s *cacheShard[V]) {
	var victim KeyHash
	var earliest int64
	n := 0
	for h, v := range s.m {
		if d := v.deadline(); n == 0 || d < earliest {
			victim, earliest = h, d
		}
		if n++; n == evictionSamples {
			break
		}
	}
	c.remove(s, victim)
}

// remove deletes h from s, whose lock is held.
func (c *shardedCache[V]) remove(s *cacheShard[V], h KeyHash) {
	if old, ok := s.m[h]; ok {
		delete(s.m, h)
		if c.removed != nil {
			c.removed(old)
		}
	}
}

func (c *shardedCache[V]) delete(h KeyHash) {
	s := c.shard(h)
	s.mu.Lock()
	c.remove(s, h)
	s.mu.Unlock()
}

// deleteFunc removes every entry for which drop reports true.
func (c *shardedCache[V]) deleteFunc(drop func(KeyHash, V) bool) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for h, v := range s.m {
			if drop(h, v) {
				c.remove(s, h)
			}
		}
		s.mu.Unlock()
	}
}

// clear removes every entry.
func (c *shardedCache[V]) clear() {
	c.deleteFunc(func(KeyHash, V) bool { return true })
}

// forEach calls fn for every entry, one shard at a time under its read
// lock: fn must not use the cache.
func (c *shardedCache[V]) forEach(fn func(KeyHash, V)) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		for h, v := range s.m {
			fn(h, v)
		}
		s.mu.RUnlock()
	}
}

// hashes returns a snapshot of the cached key hashes.
func (c *shardedCache[V]) hashes() []KeyHash {
	out := make([]KeyHash, 0, c.len())
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		for h := range s.m {
			out = append(out, h)
		}
		s.mu.RUnlock()
	}
	return out
}

func (c *shardedCache[V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

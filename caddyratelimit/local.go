package caddyratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// defaultMaxLocalOrgs bounds the organizations the in-process limiter keeps
// state for (about 150 bytes each).
const defaultMaxLocalOrgs = 1_000_000

// localSweepInterval is how often idle organizations are forgotten.
const localSweepInterval = 30 * time.Second

// localEntry is one organization's state in process.
type localEntry struct {
	st     bucketState
	limits limits // as of the last decision, to tell when the state is idle
	seen   int64  // µs of the last decision
}

// localLimiter is the in-process limiter: the same bucket and daily quota as
// the Lua script, kept in a sharded map. It decides when no Redis is
// configured, and for on_redis_error local while Redis is failing; each
// Redis server has one of its own for that, which learns every
// organization's state from Redis's answers.
//
// Memory is bounded: organizations whose state equals a fresh one (full
// bucket, nothing used today) are forgotten by a background sweep, and when
// the map is full the least recently seen of a few sampled entries makes
// room (which forgets that organization's usage; counted in evictions).
type localLimiter struct {
	clock     func() time.Time
	orgs      *shardedMap[*localEntry]
	evictions atomic.Int64
	stop      chan struct{}
	stopped   atomic.Bool
}

// newLocalLimiter returns an in-process limiter keeping at most about
// maxOrgs organizations, reading time from clock (time.Now when nil). It
// starts a background sweep; call Destruct to stop it.
func newLocalLimiter(maxOrgs int, clock func() time.Time) *localLimiter {
	if clock == nil {
		clock = time.Now
	}
	if maxOrgs <= 0 {
		maxOrgs = defaultMaxLocalOrgs
	}
	l := &localLimiter{clock: clock, orgs: newShardedMap[*localEntry](maxOrgs), stop: make(chan struct{})}
	go l.sweepLoop()
	return l
}

// Allow implements limiter. It never fails.
func (l *localLimiter) Allow(_ context.Context, orgID string, p *policy) (decision, error) {
	d := l.allow(orgID, p.Limits, l.clock().UnixMicro())
	d.Source = sourceLocal
	return d, nil
}

func (l *localLimiter) allow(orgID string, lim limits, now int64) decision {
	sh := l.orgs.shardOf(orgID)
	sh.mu.Lock()
	e := sh.m[orgID]
	if e == nil {
		e = l.addLocked(sh, orgID, now)
		e.st = newBucket(now, lim)
	}
	d := e.st.take(now, lim)
	e.limits, e.seen = lim, now
	sh.mu.Unlock()
	return d
}

// learn records the state Redis reported for an organization at local
// time now (tokens in micro-tokens, dayUsed on Redis's day redisNow), so
// that a fallback decision, should Redis fail, continues from it instead of
// from a fresh bucket and quota. It costs one shard lock per Redis answer,
// and an allocation the first time an organization is seen.
func (l *localLimiter) learn(orgID string, lim limits, tokens, dayUsed, redisNow, now int64) {
	sh := l.orgs.shardOf(orgID)
	sh.mu.Lock()
	e := sh.m[orgID]
	if e == nil {
		e = l.addLocked(sh, orgID, now)
	}
	e.st = bucketState{tokens: tokens, ts: now, day: redisNow / usPerDay, used: dayUsed}
	e.limits, e.seen = lim, now
	sh.mu.Unlock()
}

// addLocked adds an empty entry for orgID to the locked shard sh, making
// room in a full shard first, and returns it. Callers look the entry up
// first themselves, so that a known organization costs no call.
func (l *localLimiter) addLocked(sh *shard[*localEntry], orgID string, now int64) *localEntry {
	if l.orgs.full(sh) {
		l.makeRoom(sh, now)
	}
	e := new(localEntry)
	sh.m[orgID] = e
	return e
}

// makeRoom frees a slot in a full, locked shard: idle entries first, else
// the least recently seen of a sample (map iteration order is random).
func (l *localLimiter) makeRoom(sh *shard[*localEntry], now int64) {
	if sweepShard(sh, func(e *localEntry) bool { return e.st.idle(now, e.limits) }) > 0 {
		return
	}
	const sample = 8
	var victim string
	oldest, n := int64(0), 0
	for k, e := range sh.m {
		if n == 0 || e.seen < oldest {
			victim, oldest = k, e.seen
		}
		if n++; n == sample {
			break
		}
	}
	delete(sh.m, victim)
	l.evictions.Add(1)
}

// sweep forgets every organization whose state equals a fresh one, and
// returns how many it forgot.
func (l *localLimiter) sweep() int {
	now := l.clock().UnixMicro()
	return l.orgs.sweep(func(e *localEntry) bool { return e.st.idle(now, e.limits) })
}

func (l *localLimiter) sweepLoop() {
	t := time.NewTicker(localSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.sweep()
		case <-l.stop:
			return
		}
	}
}

// Destruct stops the background sweep (caddy.Destructor).
func (l *localLimiter) Destruct() error {
	if l.stopped.CompareAndSwap(false, true) {
		close(l.stop)
	}
	return nil
}

// localPool shares the in-process limiter across reloads, so a reload
// keeps every organization's state.
var localPool = caddy.NewUsagePool()

const localPoolKey = "local"

func loadLocal() (*localLimiter, error) {
	v, _, err := localPool.LoadOrNew(localPoolKey, func() (caddy.Destructor, error) {
		return newLocalLimiter(defaultMaxLocalOrgs, nil), nil
	})
	if err != nil {
		return nil, fmt.Errorf("sharing the in-process limiter: %w", err)
	}
	return v.(*localLimiter), nil
}

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

// Interface guards
var (
	_ limiter          = (*localLimiter)(nil)
	_ caddy.Destructor = (*localLimiter)(nil)
)

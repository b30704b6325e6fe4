package caddyratelimit

import (
	"context"
	"sync/atomic"
	"time"
)

// DefaultMaxLocalOrgs bounds the organizations the in-process limiter keeps
// state for (about 150 bytes each).
const DefaultMaxLocalOrgs = 1_000_000

// localSweepInterval is how often idle organizations are forgotten.
const localSweepInterval = 30 * time.Second

// localEntry is one organization's state in process.
type localEntry struct {
	st     bucketState
	limits Limits // as of the last decision, to tell when the state is idle
	seen   int64  // µs of the last decision
}

// LocalLimiter is the in-process limiter: the same bucket and daily quota as
// the Lua script, kept in a sharded map. It decides when no Redis is
// configured, and for on_redis_error local while Redis is failing.
//
// Memory is bounded: organizations whose state equals a fresh one (full
// bucket, nothing used today) are forgotten by a background sweep, and when
// the map is full the least recently seen of a few sampled entries makes
// room (which forgets that organization's usage; counted in Evictions).
type LocalLimiter struct {
	clock     func() time.Time
	orgs      *shardedMap[*localEntry]
	evictions atomic.Int64
	stop      chan struct{}
	stopped   atomic.Bool
}

// NewLocalLimiter returns an in-process limiter keeping at most about
// maxOrgs organizations, reading time from clock (time.Now when nil). It
// starts a background sweep; call Destruct to stop it.
func NewLocalLimiter(maxOrgs int, clock func() time.Time) *LocalLimiter {
	if clock == nil {
		clock = time.Now
	}
	if maxOrgs <= 0 {
		maxOrgs = DefaultMaxLocalOrgs
	}
	l := &LocalLimiter{clock: clock, orgs: newShardedMap[*localEntry](maxOrgs), stop: make(chan struct{})}
	go l.sweepLoop()
	return l
}

// Allow implements Limiter. It never fails.
func (l *LocalLimiter) Allow(_ context.Context, orgID string, p *Policy) (Decision, error) {
	d := l.allow(orgID, p.Limits, l.clock().UnixMicro())
	d.Source = SourceLocal
	return d, nil
}

func (l *LocalLimiter) allow(orgID string, lim Limits, now int64) Decision {
	sh := l.orgs.shardOf(orgID)
	sh.mu.Lock()
	e := sh.m[orgID]
	if e == nil {
		if l.orgs.full(sh) {
			l.makeRoom(sh, now)
		}
		e = &localEntry{st: newBucket(now, lim)}
		sh.m[orgID] = e
	}
	d := e.st.take(now, lim)
	e.limits, e.seen = lim, now
	sh.mu.Unlock()
	return d
}

// makeRoom frees a slot in a full, locked shard: idle entries first, else
// the least recently seen of a sample (map iteration order is random).
func (l *LocalLimiter) makeRoom(sh *shard[*localEntry], now int64) {
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

// Sweep forgets every organization whose state equals a fresh one, and
// returns how many it forgot.
func (l *LocalLimiter) Sweep() int {
	now := l.clock().UnixMicro()
	return l.orgs.sweep(func(e *localEntry) bool { return e.st.idle(now, e.limits) })
}

// Len is the number of organizations held.
func (l *LocalLimiter) Len() int { return l.orgs.len() }

// Evictions counts organizations forgotten while not idle, because the map
// was full.
func (l *LocalLimiter) Evictions() int64 { return l.evictions.Load() }

func (l *LocalLimiter) sweepLoop() {
	t := time.NewTicker(localSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.Sweep()
		case <-l.stop:
			return
		}
	}
}

// Destruct stops the background sweep (caddy.Destructor).
func (l *LocalLimiter) Destruct() error {
	if l.stopped.CompareAndSwap(false, true) {
		close(l.stop)
	}
	return nil
}

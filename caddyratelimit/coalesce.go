package caddyratelimit

import (
	"context"
	"sync"
)

// coalescer groups concurrent Redis decisions for one organization into one
// script call ("group commit"). While a call for an organization is in
// flight, its further requests join a batch; when the call returns, the
// batch runs as a single EVALSHA for all of them, deciding them exactly as
// one-by-one calls would (limiter.lua's ARGV[4]). A lone request goes
// straight to Redis, so nothing waits when there is nothing to share; a
// busy organization makes one Redis call, and one pair of system calls, per
// round trip instead of per request. Limits stay exact across instances:
// every batch is one atomic script call.
//
// The zero value is ready to use.
type coalescer struct {
	mu sync.Mutex
	// inFlight has an entry while a call for the key runs; its value is
	// the batch waiting for that call to end (nil: none yet).
	inFlight map[batchKey]*batch
}

// batchKey separates organizations, and requests of one organization
// decided with different limits (keys with their own plan).
type batchKey struct {
	org    string
	policy *Policy
}

// batch is requests waiting to be decided by one call. The first member
// runs the call once the previous one has ended; the others wait for it.
type batch struct {
	n     int64         // members; fixed once ready is closed
	ready chan struct{} // closed when the batch may run
	done  chan struct{} // closed when res and err are set
	res   Batch
	err   error
}

// redisBatchRunner makes one bounded Redis call for n requests.
type redisBatchRunner interface {
	runRedis(ctx context.Context, orgID string, p *Policy, n int64) (Batch, error)
}

// decide returns this request's decision, sharing a Redis call with the
// organization's concurrent requests.
func (c *coalescer) decide(ctx context.Context, run redisBatchRunner, orgID string, p *Policy) (Decision, error) {
	key := batchKey{org: orgID, policy: p}
	c.mu.Lock()
	waiting, busy := c.inFlight[key]
	if !busy {
		if c.inFlight == nil {
			c.inFlight = make(map[batchKey]*batch)
		}
		c.inFlight[key] = nil
		c.mu.Unlock()
		res, err := run.runRedis(ctx, orgID, p, 1)
		c.finished(key)
		if err != nil {
			return Decision{}, err
		}
		return res.Decision(0), nil
	}
	b := waiting
	if b == nil {
		b = &batch{ready: make(chan struct{}), done: make(chan struct{})}
		c.inFlight[key] = b
	}
	i := b.n
	b.n++
	c.mu.Unlock()

	if i == 0 {
		<-b.ready
		// This call decides for the whole batch: one member's client
		// going away must not fail it for the others.
		b.res, b.err = run.runRedis(context.WithoutCancel(ctx), orgID, p, b.n)
		close(b.done)
		c.finished(key)
	} else {
		<-b.done
	}
	if b.err != nil {
		return Decision{}, b.err
	}
	return b.res.Decision(i), nil
}

// finished ends the call in flight for key and starts the waiting batch,
// if any.
func (c *coalescer) finished(key batchKey) {
	c.mu.Lock()
	next := c.inFlight[key]
	if next == nil {
		delete(c.inFlight, key)
	} else {
		c.inFlight[key] = nil // next is now in flight; newcomers form a new batch
		close(next.ready)
	}
	c.mu.Unlock()
}

package caddyratelimit

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Probe backoff after a Redis failure: the first retry comes after
// minBackoff, each further failure doubles the wait up to maxBackoff.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// breaker keeps a failing Redis off the request path. While Redis answers,
// every decision goes to it. After a failure, requests are decided by the
// fallback policy without calling Redis; once the backoff has passed, one
// request at a time (a probe) tries Redis again. A success ends the outage.
// So a hung Redis costs one redis_timeout per backoff period, not one per
// request. State changes are logged once, not per request.
type breaker struct {
	clock  func() time.Time
	logger *atomic.Pointer[zap.Logger]
	gauge  interface {
		Inc()
		Dec()
	}
	onTrip func() // called when an outage begins

	failing   atomic.Bool
	nextProbe atomic.Int64 // unix ns before which no probe is made
	probing   atomic.Bool  // a probe is in flight

	mu      sync.Mutex // serializes state changes
	backoff time.Duration
	since   time.Time // start of the current outage
	lastErr string
}

// acquire says whether this request may call Redis, and whether the call
// is a probe (which must be reported back with probe=true).
func (b *breaker) acquire() (call, probe bool) {
	if !b.failing.Load() {
		return true, false
	}
	if b.clock().UnixNano() < b.nextProbe.Load() {
		return false, false
	}
	if b.probing.CompareAndSwap(false, true) {
		return true, true
	}
	return false, false
}

// succeeded records a Redis answer: the outage, if any, is over.
func (b *breaker) succeeded(probe bool) {
	if probe {
		b.probing.Store(false)
	}
	if !b.failing.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.failing.Load() {
		return
	}
	b.failing.Store(false)
	b.backoff = 0
	b.gauge.Dec()
	b.logger.Load().Info("Redis is answering again; the rate limiter decides on Redis",
		zap.Duration("outage", b.clock().Sub(b.since)))
}

// failed records a failed Redis call. The first failure starts an outage;
// a failed probe doubles the backoff. Failures of calls that started before
// the outage was known change nothing.
func (b *breaker) failed(err error, probe bool, policy string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock()
	b.lastErr = err.Error()
	switch {
	case !b.failing.Load():
		b.failing.Store(true)
		b.backoff = minBackoff
		b.since = now
		b.gauge.Inc()
		b.onTrip()
		b.logger.Load().Warn("Redis failed; the rate limiter applies on_redis_error until it answers again",
			zap.String("on_redis_error", policy), zap.Error(err))
	case probe:
		b.backoff = min(2*b.backoff, maxBackoff)
	default:
		return
	}
	b.nextProbe.Store(now.Add(b.backoff).UnixNano())
	if probe {
		b.probing.Store(false)
	}
}

// retryIn is how long until the next probe may run (0 when not failing).
func (b *breaker) retryIn() time.Duration {
	if !b.failing.Load() {
		return 0
	}
	return max(0, time.Duration(b.nextProbe.Load()-b.clock().UnixNano()))
}

// state reports whether an outage is on, since when, and the last error.
func (b *breaker) state() (failing bool, since time.Time, lastErr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failing.Load(), b.since, b.lastErr
}

// close ends the breaker's contribution to the fallback gauge.
func (b *breaker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failing.Load() {
		b.failing.Store(false)
		b.gauge.Dec()
	}
}

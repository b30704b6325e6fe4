package caddyratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// What on_redis_error does while Redis is failing.
const (
	// onErrorLocal decides in process (the default): limits stay enforced,
	// per gateway instance instead of across all of them.
	onErrorLocal = "local"
	// onErrorAllow admits every request without a limit.
	onErrorAllow = "allow"
	// onErrorDeny answers 503 with the error envelope.
	onErrorDeny = "deny"
)

// unavailableError is returned under on_redis_error deny while Redis is
// failing: the request cannot be decided (a 503, never a 429).
type unavailableError struct {
	// retryIn is how long until Redis is tried again.
	retryIn time.Duration
}

func (e *unavailableError) Error() string {
	return fmt.Sprintf("rate limiter unavailable: Redis is failing (retry in %s)", e.retryIn)
}

// failoverLimiter decides on Redis and applies the failure policy around
// it: the over-limit fast path, the Redis call bounded by redis_timeout
// (shared by an organization's concurrent requests), and the breaker that
// keeps a failing Redis off the request path. Every Redis answer is also
// recorded in the in-process limiter, so on_redis_error local continues
// from the state Redis last reported instead of granting a fresh quota.
type failoverLimiter struct {
	redis   redisBatcher
	batches coalescer
	breaker *breaker
	denied  *deniedOrgs
	local   *localLimiter
	onError string
	timeout time.Duration
	m       *metrics
	clock   func() time.Time
}

// Allow implements limiter.
func (f *failoverLimiter) Allow(ctx context.Context, orgID string, p *policy) (decision, error) {
	if d, ok := f.denied.lookup(orgID, f.clock().UnixMicro(), p.Limits); ok {
		return d, nil
	}
	if call, probe := f.breaker.acquire(); call {
		d, err := f.callRedis(ctx, orgID, p)
		switch {
		case err == nil:
			f.breaker.succeeded(probe)
			if !d.Allowed {
				f.denied.remember(orgID, d, f.clock().UnixMicro(), p.Limits)
			}
			return d, nil
		case ctx.Err() != nil:
			// The client went away: not Redis's fault.
			if probe {
				f.breaker.probing.Store(false)
			}
		default:
			// A failure inherited from the call this request waited for
			// was counted with that call.
			var inherited *inheritedError
			if errors.As(err, &inherited) {
				err = inherited.err
			} else {
				f.m.redisErrors.Inc()
			}
			f.breaker.failed(err, probe, f.onError)
		}
	}
	return f.fallback(ctx, orgID, p)
}

// redisBatcher decides n concurrent requests of an organization in one
// Redis call (redisLimiter).
type redisBatcher interface {
	allowN(ctx context.Context, orgID string, p *policy, n int64) (batchResult, error)
}

// callRedis decides on Redis, in one round trip shared with the
// organization's concurrent requests (see coalescer).
func (f *failoverLimiter) callRedis(ctx context.Context, orgID string, p *policy) (decision, error) {
	return f.batches.decide(ctx, f, orgID, p)
}

// runRedis makes one Redis round trip for n requests, bounded by
// redis_timeout from when it starts.
func (f *failoverLimiter) runRedis(ctx context.Context, orgID string, p *policy, n int64) (batchResult, error) {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, f.timeout)
	b, err := f.redis.allowN(cctx, orgID, p, n)
	cancel()
	f.m.redisDuration.Observe(time.Since(start).Seconds())
	if err == nil && f.onError == onErrorLocal {
		f.local.learn(orgID, p.Limits, b.tokens, b.dayUsed, b.now, f.clock().UnixMicro())
	}
	return b, err
}

// redisFailing implements redisBatchRunner with the breaker's state.
func (f *failoverLimiter) redisFailing() error {
	if failing, _, lastErr := f.breaker.state(); failing {
		return errors.New("Redis failing: " + lastErr)
	}
	return nil
}

// fallback decides without Redis, as on_redis_error says.
func (f *failoverLimiter) fallback(ctx context.Context, orgID string, p *policy) (decision, error) {
	switch f.onError {
	case onErrorAllow:
		return decision{Allowed: true, Source: sourceFailOpen, Now: f.clock().UnixMicro()}, nil
	case onErrorDeny:
		return decision{}, &unavailableError{retryIn: f.breaker.retryIn()}
	default:
		d, err := f.local.Allow(ctx, orgID, p)
		d.Source = sourceFallback
		return d, err
	}
}

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
// A batch does not call a Redis that has just failed: when the call it
// waited for failed (say it timed out on a hung Redis), the batch inherits
// that failure at once, and when that call was abandoned by its client,
// the batch runs only if the breaker does not consider Redis failing. So
// an organization pays at most one redis_timeout per outage detection,
// not one per batch queued behind it.
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
	policy *policy
}

// batch is requests waiting to be decided by one call. The first member
// runs the call once the previous one has ended; the others wait for it.
type batch struct {
	n     int64         // members; fixed once ready is closed
	ready chan struct{} // closed when the batch may run
	prev  error         // how the previous call ended; set before ready is closed
	done  chan struct{} // closed when res and err are set
	res   batchResult
	err   error
}

// errAbandoned is how a call ended whose client went away before Redis
// answered: no verdict on Redis.
var errAbandoned = errors.New("rate-limit call abandoned by its client")

// inheritedError is the failure a batch takes over instead of calling
// Redis: the failure of the call it waited for, or the breaker's.
type inheritedError struct{ err error }

func (e *inheritedError) Error() string { return "not sent to Redis: " + e.err.Error() }
func (e *inheritedError) Unwrap() error { return e.err }

// inherit wraps a failure for a batch that takes it over; a failure that
// was itself inherited is passed on as it is.
func inherit(err error) error {
	var inherited *inheritedError
	if errors.As(err, &inherited) {
		return inherited
	}
	return &inheritedError{err}
}

// redisBatchRunner makes one bounded Redis call for n requests, and says
// whether Redis is known to be failing.
type redisBatchRunner interface {
	runRedis(ctx context.Context, orgID string, p *policy, n int64) (batchResult, error)
	// redisFailing returns the current outage's error, or nil.
	redisFailing() error
}

// decide returns this request's decision, sharing a Redis call with the
// organization's concurrent requests.
func (c *coalescer) decide(ctx context.Context, run redisBatchRunner, orgID string, p *policy) (decision, error) {
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
		outcome := err
		if err != nil && ctx.Err() != nil {
			outcome = errAbandoned
		}
		c.finished(key, outcome)
		if err != nil {
			return decision{}, err
		}
		return res.decision(0), nil
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
		switch {
		case b.prev == errAbandoned:
			if err := run.redisFailing(); err != nil {
				b.err = inherit(err)
				break
			}
			fallthrough
		case b.prev == nil:
			// This call decides for the whole batch: one member's client
			// going away must not fail it for the others.
			b.res, b.err = run.runRedis(context.WithoutCancel(ctx), orgID, p, b.n)
		default:
			b.err = inherit(b.prev)
		}
		close(b.done)
		c.finished(key, b.err)
	} else {
		<-b.done
	}
	if b.err != nil {
		return decision{}, b.err
	}
	return b.res.decision(i), nil
}

// finished ends the call in flight for key, which ended with outcome (nil:
// Redis answered), and starts the waiting batch, if any.
func (c *coalescer) finished(key batchKey, outcome error) {
	c.mu.Lock()
	next := c.inFlight[key]
	if next == nil {
		delete(c.inFlight, key)
	} else {
		c.inFlight[key] = nil // next is now in flight; newcomers form a new batch
		next.prev = outcome
		close(next.ready)
	}
	c.mu.Unlock()
}

// maxDeniedOrgs bounds the organizations remembered as denied.
const maxDeniedOrgs = 100_000

// deniedEntry remembers a denial by Redis.
type deniedEntry struct {
	dec    decision // Redis's answer
	limits limits   // the limits it was decided with
	at     int64    // local µs when it was received
	until  int64    // local µs before which no request can be admitted
}

// deniedOrgs is the over-limit fast path: once Redis has denied an
// organization until T, this instance denies it locally until T without
// calling Redis. That is exact, not an approximation: no token can appear
// sooner. So a flood from one abusive tenant does not multiply Redis load.
// Times are local (a span measured on this clock, added to Redis's answer),
// so clock skew between the gateway and Redis does not matter.
type deniedOrgs struct {
	m *shardedMap[deniedEntry]
}

func newDeniedOrgs() *deniedOrgs {
	return &deniedOrgs{m: newShardedMap[deniedEntry](maxDeniedOrgs)}
}

// lookup returns the standing denial of the organization at local time now,
// advanced to now so that its headers stay exact.
func (d *deniedOrgs) lookup(orgID string, now int64, l limits) (decision, bool) {
	sh := d.m.shardOf(orgID)
	sh.mu.Lock()
	e, ok := sh.m[orgID]
	if ok && (now >= e.until || e.limits != l) {
		delete(sh.m, orgID)
		ok = false
	}
	sh.mu.Unlock()
	if !ok {
		return decision{}, false
	}
	dec := e.dec.advance(e.dec.Now+(now-e.at), l)
	dec.Source = sourceFastPath
	return dec, true
}

// remember records a denial by Redis received at local time now. When the
// organization's shard is full of live entries it is not remembered (the
// next request asks Redis again).
func (d *deniedOrgs) remember(orgID string, dec decision, now int64, l limits) {
	e := deniedEntry{dec: dec, limits: l, at: now, until: now + (dec.retryAt(l) - dec.Now)}
	sh := d.m.shardOf(orgID)
	sh.mu.Lock()
	_, present := sh.m[orgID]
	if !present && d.m.full(sh) {
		sweepShard(sh, func(e deniedEntry) bool { return now >= e.until })
	}
	if present || !d.m.full(sh) {
		sh.m[orgID] = e
	}
	sh.mu.Unlock()
}

// Probe backoff after a Redis failure: the first retry comes after
// minBackoff, each further failure doubles the wait up to maxBackoff. The
// cap is what a Redis that is back may wait for its first probe (under
// on_redis_error deny: how long 503s go on), so it stays near a second; a
// hung Redis then costs one redis_timeout per second per gateway.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = time.Second
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

// probeRedis pings Redis, bounded by redis_timeout, and feeds the answer
// to the breaker, which logs an outage once when it begins and once when it
// ends. It takes the breaker's probe slot, so a failing Redis is not
// pinged more often than the request path would call it. A ping cut short
// by ctx (the caller went away, or the config was unloaded, as after
// caddy validate) changes nothing.
func (rl *RateLimit) probeRedis(ctx context.Context, onError string) {
	b := rl.shared.breaker
	call, probe := b.acquire()
	if !call {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, rl.timeout)
	err := rl.shared.client.Ping(cctx)
	cancel()
	switch {
	case err == nil:
		b.succeeded(probe)
	case ctx.Err() == nil:
		rl.metrics.redisErrors.Inc()
		b.failed(err, probe, onError)
	case probe:
		b.probing.Store(false)
	}
}

// redisHealth is the "redis" check of /health/ready. It pings Redis
// (bounded by redis_timeout), feeds the answer to the breaker, and reports
// ok; degraded while a fallback serves (on_redis_error local or allow); or
// down under on_redis_error deny, when requests cannot be served.
func (rl *RateLimit) redisHealth(onError string) tenant.Check {
	return func(ctx context.Context) tenant.CheckResult {
		rl.probeRedis(ctx, onError)
		failing, since, lastErr := rl.shared.breaker.state()
		if !failing {
			return tenant.CheckResult{Status: tenant.StatusOK}
		}
		detail := "Redis failing since " + since.UTC().Format(time.RFC3339) + " (" + lastErr + "); "
		switch onError {
		case onErrorDeny:
			return tenant.CheckResult{Status: tenant.StatusDown, Detail: detail + "rate-limited requests are answered 503 (on_redis_error deny)"}
		case onErrorAllow:
			return tenant.CheckResult{Status: tenant.StatusDegraded, Detail: detail + "requests are admitted without limits (on_redis_error allow)"}
		default:
			return tenant.CheckResult{Status: tenant.StatusDegraded, Detail: detail + "limits are enforced per instance, in process (on_redis_error local)"}
		}
	}
}

// Interface guards
var (
	_ limiter          = (*failoverLimiter)(nil)
	_ redisBatchRunner = (*failoverLimiter)(nil)
	_ redisBatcher     = (*redisLimiter)(nil)
)

package caddyratelimit

import (
	"context"
	"fmt"
	"time"
)

// What on_redis_error does while Redis is failing.
const (
	// OnErrorLocal decides in process (the default): limits stay enforced,
	// per gateway instance instead of across all of them.
	OnErrorLocal = "local"
	// OnErrorAllow admits every request without a limit.
	OnErrorAllow = "allow"
	// OnErrorDeny answers 503 with the error envelope.
	OnErrorDeny = "deny"
)

// UnavailableError is returned under on_redis_error deny while Redis is
// failing: the request cannot be decided (a 503, never a 429).
type UnavailableError struct {
	// RetryIn is how long until Redis is tried again.
	RetryIn time.Duration
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("rate limiter unavailable: Redis is failing (retry in %s)", e.RetryIn)
}

// failoverLimiter decides on Redis and applies the failure policy around
// it: the over-limit fast path, the Redis call bounded by redis_timeout, and
// the breaker that keeps a failing Redis off the request path.
type failoverLimiter struct {
	redis   redisBatcher
	batches coalescer
	breaker *breaker
	denied  *deniedOrgs
	local   *LocalLimiter
	onError string
	timeout time.Duration
	m       *metrics
	clock   func() time.Time
}

// Allow implements Limiter.
func (f *failoverLimiter) Allow(ctx context.Context, orgID string, p *Policy) (Decision, error) {
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
			f.m.redisErrors.Inc()
			f.breaker.failed(err, probe, f.onError)
		}
	}
	return f.fallback(ctx, orgID, p)
}

// redisBatcher decides n concurrent requests of an organization in one
// Redis call (RedisLimiter).
type redisBatcher interface {
	AllowN(ctx context.Context, orgID string, p *Policy, n int64) (Batch, error)
}

// callRedis decides on Redis, in one round trip shared with the
// organization's concurrent requests (see coalescer).
func (f *failoverLimiter) callRedis(ctx context.Context, orgID string, p *Policy) (Decision, error) {
	return f.batches.decide(ctx, f, orgID, p)
}

// runRedis makes one Redis round trip for n requests, bounded by
// redis_timeout from when it starts.
func (f *failoverLimiter) runRedis(ctx context.Context, orgID string, p *Policy, n int64) (Batch, error) {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, f.timeout)
	b, err := f.redis.AllowN(cctx, orgID, p, n)
	cancel()
	f.m.redisDuration.Observe(time.Since(start).Seconds())
	return b, err
}

// fallback decides without Redis, as on_redis_error says.
func (f *failoverLimiter) fallback(ctx context.Context, orgID string, p *Policy) (Decision, error) {
	switch f.onError {
	case OnErrorAllow:
		return Decision{Allowed: true, Source: SourceFailOpen, Now: f.clock().UnixMicro()}, nil
	case OnErrorDeny:
		return Decision{}, &UnavailableError{RetryIn: f.breaker.retryIn()}
	default:
		d, err := f.local.Allow(ctx, orgID, p)
		d.Source = SourceFallback
		return d, err
	}
}

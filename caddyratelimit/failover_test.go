package caddyratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tenantgate/tenantgate/internal/faultproxy"
	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

// countingLimiter counts the calls that reach Redis.
type countingLimiter struct {
	inner *RedisLimiter
	calls atomic.Int64
}

func (c *countingLimiter) AllowN(ctx context.Context, org string, p *Policy, n int64) (Batch, error) {
	c.calls.Add(1)
	return c.inner.AllowN(ctx, org, p, n)
}

// failoverFixture is a failoverLimiter whose Redis is reached through a
// fault-injecting proxy, on a fake clock for the breaker and fast path.
type failoverFixture struct {
	f      *failoverLimiter
	shared *sharedRedis
	proxy  *faultproxy.Proxy
	redis  *countingLimiter
	clock  *testenv.Clock
	direct *redis.Client // straight to Redis, for inspecting keys
	prefix string
}

func newFailoverFixture(t *testing.T, onError string, timeout time.Duration) *failoverFixture {
	t.Helper()
	direct, prefix := newTestRedis(t)
	proxy, err := faultproxy.New(testenv.RedisAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	// The production client options, pointed at the proxy.
	opts, err := redisConfig{addr: proxy.Addr()}.options()
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	shared := newSharedRedis(opts, m, zaptest.NewLogger(t))
	t.Cleanup(func() { _ = shared.Destruct() })
	clock := testenv.NewClock(time.Now())
	shared.breaker.clock = clock.Now
	counting := &countingLimiter{inner: NewRedisLimiter(shared.client, prefix)}
	local := newTestLocal(t, clock)
	return &failoverFixture{
		f: &failoverLimiter{
			redis: counting, breaker: shared.breaker, denied: shared.denied, local: local,
			onError: onError, timeout: timeout, m: m, clock: clock.Now,
		},
		shared: shared, proxy: proxy, redis: counting, clock: clock, direct: direct, prefix: prefix,
	}
}

func (fx *failoverFixture) allow(t *testing.T, org string, p *Policy) (Decision, error) {
	t.Helper()
	return fx.f.Allow(context.Background(), org, p)
}

// restoreAndExpectRedis ends the outage, lets the backoff pass, and checks
// that the next decision comes from Redis.
func (fx *failoverFixture) restoreAndExpectRedis(t *testing.T, p *Policy) {
	t.Helper()
	fx.proxy.Restore()
	fx.clock.Advance(minBackoff)
	if d := decide(t, fx.f, "org", p); d.Source != SourceRedis {
		t.Fatalf("after restore: %+v, want a decision by Redis", d)
	}
}

func TestFailoverLocalKeepsDeciding(t *testing.T) {
	fx := newFailoverFixture(t, OnErrorLocal, 200*time.Millisecond)
	p := NewPolicy("tiny", tinyLimits)
	if d := decide(t, fx.f, "org", p); d.Source != SourceRedis || !d.Allowed {
		t.Fatalf("healthy Redis: %+v", d)
	}

	fx.proxy.Cut()
	ok, denied := 0, 0
	for i := 0; i < 30; i++ {
		d := decide(t, fx.f, "org", p) // an error would fail the test
		if d.Source != SourceFallback {
			t.Fatalf("request %d during the outage decided by %s, want fallback", i, d.Source)
		}
		if d.Allowed {
			ok++
		} else {
			denied++
		}
	}
	if ok != 10 || denied != 20 {
		t.Fatalf("during the outage: %d admitted, %d denied; want the in-process bucket's 10 and 20", ok, denied)
	}
	if !fx.shared.breaker.failing.Load() {
		t.Fatal("breaker not failing during the outage")
	}

	fx.proxy.Restore()
	fx.clock.Advance(minBackoff)
	d := decide(t, fx.f, "org", p)
	if d.Source != SourceRedis {
		t.Fatalf("after restore and backoff: decided by %s, want redis", d.Source)
	}
	if d.DayUsed != 2 {
		t.Errorf("Redis day counter %d, want 2 (fallback decisions stay in process)", d.DayUsed)
	}
	if fx.shared.breaker.failing.Load() {
		t.Fatal("breaker still failing after Redis answered")
	}
	if d := decide(t, fx.f, "org", p); d.Source != SourceRedis {
		t.Fatalf("second request after recovery decided by %s", d.Source)
	}
}

func TestFailoverAllowAdmits(t *testing.T) {
	fx := newFailoverFixture(t, OnErrorAllow, 200*time.Millisecond)
	p := NewPolicy("tiny", tinyLimits)
	fx.proxy.Cut()
	for i := 0; i < 30; i++ {
		d := decide(t, fx.f, "org", p)
		if !d.Allowed || d.Source != SourceFailOpen {
			t.Fatalf("request %d: %+v, want admitted fail-open", i, d)
		}
	}
	fx.restoreAndExpectRedis(t, p)
}

func TestFailoverDenyAnswersUnavailable(t *testing.T) {
	fx := newFailoverFixture(t, OnErrorDeny, 200*time.Millisecond)
	p := NewPolicy("tiny", tinyLimits)
	fx.proxy.Cut()
	for i := 0; i < 5; i++ {
		_, err := fx.allow(t, "org", p)
		var ue *UnavailableError
		if !errors.As(err, &ue) {
			t.Fatalf("request %d: err %v, want UnavailableError", i, err)
		}
		if ue.RetryIn <= 0 || ue.RetryIn > minBackoff {
			t.Errorf("RetryIn %s, want (0, %s]", ue.RetryIn, minBackoff)
		}
	}
	fx.restoreAndExpectRedis(t, p)
}

// TestHungRedisCostsOneTimeoutPerBackoff: Redis accepts connections but
// never answers. Only the first request and then one probe per backoff
// period reach it (each costing one redis_timeout); every other request is
// decided in process at once. Counted, not timed.
func TestHungRedisCostsOneTimeoutPerBackoff(t *testing.T) {
	fx := newFailoverFixture(t, OnErrorLocal, 50*time.Millisecond)
	p := NewPolicy("big", Limits{PerMinute: 1000, PerDay: 100000})
	decide(t, fx.f, "org", p)
	base := fx.redis.calls.Load()

	fx.proxy.SetMode(faultproxy.Hang)
	concurrently := func(n int) {
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := fx.allow(t, "org", p); err != nil {
					t.Errorf("decision failed: %v", err)
				}
			}()
		}
		wg.Wait()
	}
	calls := func() int64 { return fx.redis.calls.Load() - base }

	for i := 0; i < 30; i++ {
		decide(t, fx.f, "org", p)
	}
	if got := calls(); got != 1 {
		t.Fatalf("30 requests to a hung Redis made %d calls, want 1", got)
	}
	concurrently(20)
	if got := calls(); got != 1 {
		t.Fatalf("20 concurrent requests within the backoff made %d more calls, want 0", got-1)
	}

	fx.clock.Advance(minBackoff) // first backoff over: one probe
	concurrently(20)
	if got := calls(); got != 2 {
		t.Fatalf("after one backoff period: %d calls, want 2 (one probe)", got)
	}
	fx.clock.Advance(minBackoff) // backoff doubled to 2×minBackoff: not yet
	concurrently(20)
	if got := calls(); got != 2 {
		t.Fatalf("before the doubled backoff ended: %d calls, want 2", got)
	}
	fx.clock.Advance(minBackoff)
	concurrently(20)
	if got := calls(); got != 3 {
		t.Fatalf("after the doubled backoff: %d calls, want 3", got)
	}

	fx.proxy.Restore()
	fx.clock.Advance(maxBackoff)
	if d := decide(t, fx.f, "org", p); d.Source != SourceRedis {
		t.Fatalf("after Redis came back: decided by %s", d.Source)
	}
	for i := 0; i < 10; i++ {
		if d := decide(t, fx.f, "org", p); d.Source != SourceRedis {
			t.Fatalf("request %d after recovery decided by %s", i, d.Source)
		}
	}
	if got := calls(); got != 14 {
		t.Fatalf("after recovery: %d calls, want 14 (every request on Redis again)", got)
	}
}

func TestOverLimitFastPath(t *testing.T) {
	fx := newFailoverFixture(t, OnErrorLocal, time.Second)
	p := NewPolicy("tiny", tinyLimits)
	for i := 0; i < 10; i++ {
		decide(t, fx.f, "org", p)
	}
	first := decide(t, fx.f, "org", p)
	if first.Allowed || first.Source != SourceRedis {
		t.Fatalf("11th request: %+v, want denied by Redis", first)
	}
	calls := fx.redis.calls.Load()
	for i := 0; i < 100; i++ {
		d := decide(t, fx.f, "org", p)
		if d.Allowed || d.Source != SourceFastPath {
			t.Fatalf("repeat %d: %+v, want a fast-path denial", i, d)
		}
		if d.DayUsed != 10 || d.RemainingMinute() != 0 {
			t.Fatalf("fast-path state day_used=%d remaining=%d, want 10 and 0", d.DayUsed, d.RemainingMinute())
		}
	}
	if got := fx.redis.calls.Load(); got != calls {
		t.Fatalf("100 repeated denials made %d Redis calls, want 0", got-calls)
	}
	// Another organization still goes to Redis.
	if d := decide(t, fx.f, "other", p); d.Source != SourceRedis || !d.Allowed {
		t.Fatalf("other organization: %+v", d)
	}
	// The standing denial counts down on the local clock...
	fx.clock.Advance(4 * time.Second)
	d := decide(t, fx.f, "org", p)
	if d.Source != SourceFastPath || d.RetryAfter(p.Limits) != first.RetryAfter(p.Limits)-4 {
		t.Fatalf("4 s later: source %s, Retry-After %d; want fast path, %d", d.Source, d.RetryAfter(p.Limits), first.RetryAfter(p.Limits)-4)
	}
	// ...and ends when a token is due: Redis decides again.
	fx.clock.Advance(6 * time.Second)
	calls = fx.redis.calls.Load()
	if d := decide(t, fx.f, "org", p); d.Source != SourceRedis {
		t.Fatalf("after the denial expired: decided by %s", d.Source)
	}
	if fx.redis.calls.Load() != calls+1 {
		t.Fatal("expired denial did not call Redis")
	}
}

func TestRedisHealthStates(t *testing.T) {
	for _, c := range []struct {
		onError string
		want    tenant.Status
	}{{OnErrorLocal, tenant.StatusDegraded}, {OnErrorAllow, tenant.StatusDegraded}, {OnErrorDeny, tenant.StatusDown}} {
		t.Run(c.onError, func(t *testing.T) {
			fx := newFailoverFixture(t, c.onError, 200*time.Millisecond)
			rl := &RateLimit{shared: fx.shared, timeout: 200 * time.Millisecond, metrics: fx.f.m, logger: zap.NewNop()}
			check := rl.redisHealth(c.onError)
			ctx := context.Background()
			if got := check(ctx); got.Status != tenant.StatusOK {
				t.Fatalf("healthy: %+v", got)
			}
			fx.proxy.Cut()
			got := check(ctx)
			if got.Status != c.want || got.Detail == "" {
				t.Fatalf("Redis cut: %+v, want %s with a detail", got, c.want)
			}
			fx.proxy.Restore()
			fx.clock.Advance(minBackoff)
			if got := check(ctx); got.Status != tenant.StatusOK {
				t.Fatalf("restored: %+v", got)
			}
		})
	}
}

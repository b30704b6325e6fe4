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
	inner *redisLimiter
	calls atomic.Int64
}

func (c *countingLimiter) allowN(ctx context.Context, org string, p *policy, n int64) (batchResult, error) {
	c.calls.Add(1)
	return c.inner.allowN(ctx, org, p, n)
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
	counting := &countingLimiter{inner: newRedisLimiter(shared.client, prefix)}
	local := newTestLocal(t, clock)
	return &failoverFixture{
		f: &failoverLimiter{
			redis: counting, breaker: shared.breaker, denied: shared.denied, local: local,
			onError: onError, timeout: timeout, m: m, clock: clock.Now,
		},
		shared: shared, proxy: proxy, redis: counting, clock: clock, direct: direct, prefix: prefix,
	}
}

func (fx *failoverFixture) allow(t *testing.T, org string, p *policy) (decision, error) {
	t.Helper()
	return fx.f.Allow(context.Background(), org, p)
}

// restoreAndExpectRedis ends the outage, lets the backoff pass, and checks
// that the next decision comes from Redis.
func (fx *failoverFixture) restoreAndExpectRedis(t *testing.T, p *policy) {
	t.Helper()
	fx.proxy.Restore()
	fx.clock.Advance(minBackoff)
	if d := decide(t, fx.f, "org", p); d.Source != sourceRedis {
		t.Fatalf("after restore: %+v, want a decision by Redis", d)
	}
}

func TestFailoverLocalKeepsDeciding(t *testing.T) {
	fx := newFailoverFixture(t, onErrorLocal, 200*time.Millisecond)
	p := newPolicy("tiny", tinyLimits)
	if d := decide(t, fx.f, "org", p); d.Source != sourceRedis || !d.Allowed {
		t.Fatalf("healthy Redis: %+v", d)
	}

	fx.proxy.Cut()
	ok, denied := 0, 0
	for i := 0; i < 30; i++ {
		d := decide(t, fx.f, "org", p) // an error would fail the test
		if d.Source != sourceFallback {
			t.Fatalf("request %d during the outage decided by %s, want fallback", i, d.Source)
		}
		if d.Allowed {
			ok++
		} else {
			denied++
		}
	}
	if ok != 9 || denied != 21 {
		t.Fatalf("during the outage: %d admitted, %d denied; want 9 and 21 (the 9 tokens Redis said were left)", ok, denied)
	}
	if !fx.shared.breaker.failing.Load() {
		t.Fatal("breaker not failing during the outage")
	}

	fx.proxy.Restore()
	fx.clock.Advance(minBackoff)
	d := decide(t, fx.f, "org", p)
	if d.Source != sourceRedis {
		t.Fatalf("after restore and backoff: decided by %s, want redis", d.Source)
	}
	if d.DayUsed != 2 {
		t.Errorf("Redis day counter %d, want 2 (fallback decisions stay in process)", d.DayUsed)
	}
	if fx.shared.breaker.failing.Load() {
		t.Fatal("breaker still failing after Redis answered")
	}
	if d := decide(t, fx.f, "org", p); d.Source != sourceRedis {
		t.Fatalf("second request after recovery decided by %s", d.Source)
	}
}

// TestFallbackStartsFromTheLastRedisState: with on_redis_error local, the
// in-process fallback continues from what Redis last reported for the
// organization, so an outage hands out no fresh quota: with 3 requests
// left today, at most 3 more get through; with 3 tokens left in the
// bucket, at most 3 more (plus the refill) get through.
func TestFallbackStartsFromTheLastRedisState(t *testing.T) {
	for _, c := range []struct {
		name   string
		limits limits
		kind   limitType
	}{
		{"daily quota", limits{PerMinute: 600, PerDay: 10, Burst: 0}, limitTypeDay},
		{"minute bucket", limits{PerMinute: 6, PerDay: 1000, Burst: 4}, limitTypeMinute},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := newFailoverFixture(t, onErrorLocal, 200*time.Millisecond)
			p := newPolicy("p", c.limits)
			if got := admitted(t, fx.f, "org", p, 7); got != 7 {
				t.Fatalf("admitted %d of 7 on Redis", got)
			}
			fx.proxy.Cut()
			ok := 0
			for i := 0; i < 10; i++ {
				d := decide(t, fx.f, "org", p)
				if d.Source != sourceFallback {
					t.Fatalf("request %d during the outage decided by %s", i, d.Source)
				}
				if d.Allowed {
					ok++
				} else if d.limitType(p.Limits) != c.kind {
					t.Errorf("denied by the %s limit, want %s", d.limitType(p.Limits), c.kind)
				}
			}
			if ok != 3 {
				t.Fatalf("during the outage %d more admitted, want 3 (what Redis said was left), not a fresh quota", ok)
			}
		})
	}
}

func TestFailoverAllowAdmits(t *testing.T) {
	fx := newFailoverFixture(t, onErrorAllow, 200*time.Millisecond)
	p := newPolicy("tiny", tinyLimits)
	fx.proxy.Cut()
	for i := 0; i < 30; i++ {
		d := decide(t, fx.f, "org", p)
		if !d.Allowed || d.Source != sourceFailOpen {
			t.Fatalf("request %d: %+v, want admitted fail-open", i, d)
		}
	}
	fx.restoreAndExpectRedis(t, p)
}

func TestFailoverDenyAnswersUnavailable(t *testing.T) {
	fx := newFailoverFixture(t, onErrorDeny, 200*time.Millisecond)
	p := newPolicy("tiny", tinyLimits)
	fx.proxy.Cut()
	for i := 0; i < 5; i++ {
		_, err := fx.allow(t, "org", p)
		var ue *unavailableError
		if !errors.As(err, &ue) {
			t.Fatalf("request %d: err %v, want unavailableError", i, err)
		}
		if ue.retryIn <= 0 || ue.retryIn > minBackoff {
			t.Errorf("RetryIn %s, want (0, %s]", ue.retryIn, minBackoff)
		}
	}
	fx.restoreAndExpectRedis(t, p)
}

// TestDenyRecoversWithinASecondOfRedisReturning: after a long outage
// under on_redis_error deny, the 503s stop within about a second of Redis
// answering again, wherever in its backoff the breaker was: the backoff
// is capped near 1 s. On the injected clock, so counted, not timed.
func TestDenyRecoversWithinASecondOfRedisReturning(t *testing.T) {
	fx := newFailoverFixture(t, onErrorDeny, 200*time.Millisecond)
	p := newPolicy("tiny", tinyLimits)
	const step = 50 * time.Millisecond
	fx.proxy.Cut()
	// A minute of outage with a request every 50 ms: the breaker probes
	// Redis whenever its backoff allows, and every probe fails.
	for range int(time.Minute / step) {
		if _, err := fx.allow(t, "org", p); err == nil {
			t.Fatal("a decision while Redis is cut under on_redis_error deny")
		}
		fx.clock.Advance(step)
	}
	// Redis comes back right after a failed probe: the worst moment.
	for calls := fx.redis.calls.Load(); fx.redis.calls.Load() == calls; fx.clock.Advance(step) {
		if _, err := fx.allow(t, "org", p); err == nil {
			t.Fatal("a decision while Redis is cut")
		}
	}
	fx.proxy.Restore()
	var waited time.Duration
	for {
		_, err := fx.allow(t, "org", p)
		if err == nil {
			break
		}
		var ue *unavailableError
		if !errors.As(err, &ue) || ue.retryIn > maxBackoff {
			t.Fatalf("err %v: want a 503 whose Retry-After is at most the backoff cap", err)
		}
		if waited > 1100*time.Millisecond {
			t.Fatalf("Redis answers again, and requests were still refused %s later", waited)
		}
		fx.clock.Advance(step)
		waited += step
	}
}

// TestHungRedisCostsOneTimeoutPerBackoff: Redis accepts connections but
// never answers. Only the first request and then one probe per backoff
// period reach it (each costing one redis_timeout); every other request is
// decided in process at once. Counted, not timed.
func TestHungRedisCostsOneTimeoutPerBackoff(t *testing.T) {
	fx := newFailoverFixture(t, onErrorLocal, 50*time.Millisecond)
	p := newPolicy("big", limits{PerMinute: 1000, PerDay: 100000})
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
	if d := decide(t, fx.f, "org", p); d.Source != sourceRedis {
		t.Fatalf("after Redis came back: decided by %s", d.Source)
	}
	for i := 0; i < 10; i++ {
		if d := decide(t, fx.f, "org", p); d.Source != sourceRedis {
			t.Fatalf("request %d after recovery decided by %s", i, d.Source)
		}
	}
	if got := calls(); got != 14 {
		t.Fatalf("after recovery: %d calls, want 14 (every request on Redis again)", got)
	}
}

// TestHungRedisBatchPaysNoSecondTimeout: requests of one organization
// queued behind a call to a hung Redis are decided by the fallback as soon
// as that call times out: no second call, so no second timeout.
func TestHungRedisBatchPaysNoSecondTimeout(t *testing.T) {
	fx := newFailoverFixture(t, onErrorLocal, 300*time.Millisecond)
	p := newPolicy("big", limits{PerMinute: 1000, PerDay: 100000})
	decide(t, fx.f, "org", p)
	base := fx.redis.calls.Load()
	fx.proxy.SetMode(faultproxy.Hang)

	results := make(chan decision, 20)
	ask := func() {
		d, err := fx.allow(t, "org", p)
		if err != nil {
			t.Errorf("decision failed: %v", err)
		}
		results <- d
	}
	go ask()
	testenv.WaitFor(t, 5*time.Second, "the first call to reach Redis", func() bool { return fx.redis.calls.Load() != base }) // the first request's call hangs
	for range 19 {
		go ask()
	}
	testenv.WaitFor(t, 5*time.Second, "19 requests to join the batch", func() bool { return fx.f.batches.waitingMembers(batchKey{"org", p}) == 19 })
	for range 20 {
		if d := <-results; d.Source != sourceFallback {
			t.Errorf("decided by %s, want the fallback", d.Source)
		}
	}
	if got := fx.redis.calls.Load() - base; got != 1 {
		t.Fatalf("%d calls to the hung Redis for one organization, want 1: the waiting batch must inherit the timeout", got)
	}
}

func TestOverLimitFastPath(t *testing.T) {
	fx := newFailoverFixture(t, onErrorLocal, time.Second)
	p := newPolicy("tiny", tinyLimits)
	for i := 0; i < 10; i++ {
		decide(t, fx.f, "org", p)
	}
	first := decide(t, fx.f, "org", p)
	if first.Allowed || first.Source != sourceRedis {
		t.Fatalf("11th request: %+v, want denied by Redis", first)
	}
	calls := fx.redis.calls.Load()
	for i := 0; i < 100; i++ {
		d := decide(t, fx.f, "org", p)
		if d.Allowed || d.Source != sourceFastPath {
			t.Fatalf("repeat %d: %+v, want a fast-path denial", i, d)
		}
		if d.DayUsed != 10 || d.remainingMinute() != 0 {
			t.Fatalf("fast-path state day_used=%d remaining=%d, want 10 and 0", d.DayUsed, d.remainingMinute())
		}
	}
	if got := fx.redis.calls.Load(); got != calls {
		t.Fatalf("100 repeated denials made %d Redis calls, want 0", got-calls)
	}
	// Another organization still goes to Redis.
	if d := decide(t, fx.f, "other", p); d.Source != sourceRedis || !d.Allowed {
		t.Fatalf("other organization: %+v", d)
	}
	// The standing denial counts down on the local clock...
	fx.clock.Advance(4 * time.Second)
	d := decide(t, fx.f, "org", p)
	if d.Source != sourceFastPath || d.retryAfter(p.Limits) != first.retryAfter(p.Limits)-4 {
		t.Fatalf("4 s later: source %s, Retry-After %d; want fast path, %d", d.Source, d.retryAfter(p.Limits), first.retryAfter(p.Limits)-4)
	}
	// ...and ends when a token is due: Redis decides again.
	fx.clock.Advance(6 * time.Second)
	calls = fx.redis.calls.Load()
	if d := decide(t, fx.f, "org", p); d.Source != sourceRedis {
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
	}{{onErrorLocal, tenant.StatusDegraded}, {onErrorAllow, tenant.StatusDegraded}, {onErrorDeny, tenant.StatusDown}} {
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

// blockingRunner is a redisBatchRunner that records each call's n and
// answers only when released, so a test controls what is in flight.
type blockingRunner struct {
	mu      sync.Mutex
	calls   []int64
	release chan struct{}
	answer  func(n int64) (batchResult, error)
	failing error // what redisFailing reports
}

func (r *blockingRunner) runRedis(ctx context.Context, _ string, _ *policy, n int64) (batchResult, error) {
	r.mu.Lock()
	r.calls = append(r.calls, n)
	r.mu.Unlock()
	select {
	case <-r.release:
		return r.answer(n)
	case <-ctx.Done():
		return batchResult{}, ctx.Err()
	}
}

func (r *blockingRunner) redisFailing() error { return r.failing }

// waitingMembers is how many requests wait in key's next batch.
func (c *coalescer) waitingMembers(key batchKey) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.inFlight[key]; b != nil {
		return b.n
	}
	return 0
}

func TestCoalescerBatchesRequestsThatArriveDuringACall(t *testing.T) {
	p := newPolicy("tiny", tinyLimits)
	run := &blockingRunner{release: make(chan struct{}), answer: func(n int64) (batchResult, error) {
		admitted := min(n, 3) // 3 tokens left for every call
		return batchResult{admitted: admitted, tokens: 7 * microTokens, dayUsed: 50, now: 1}, nil
	}}
	var c coalescer
	key := batchKey{org: "org", policy: p}

	results := make(chan decision, 11)
	go func() { d, _ := c.decide(context.Background(), run, "org", p); results <- d }()
	testenv.WaitFor(t, 5*time.Second, "the first call to start", func() bool { return len(callsOf(run)) != 0 })
	for range 10 {
		go func() { d, _ := c.decide(context.Background(), run, "org", p); results <- d }()
	}
	testenv.WaitFor(t, 5*time.Second, "10 requests to join the batch", func() bool { return c.waitingMembers(key) == 10 })
	close(run.release)

	var allowed int
	for range 11 {
		if d := <-results; d.Allowed {
			allowed++
		}
	}
	if got := callsOf(run); len(got) != 2 || got[0] != 1 || got[1] != 10 {
		t.Fatalf("calls made for n = %v, want [1 10]: one lone call, then one for the 10 that waited", got)
	}
	if allowed != 1+3 {
		t.Errorf("%d admitted, want 4 (1 alone, then 3 of the batch of 10)", allowed)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.inFlight) != 0 {
		t.Errorf("%d keys left in flight after all calls ended", len(c.inFlight))
	}
}

func callsOf(r *blockingRunner) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.calls...)
}

func TestCoalescerSharesAFailedCallsError(t *testing.T) {
	p := newPolicy("tiny", tinyLimits)
	boom := errors.New("redis down")
	run := &blockingRunner{release: make(chan struct{}), answer: func(int64) (batchResult, error) { return batchResult{}, boom }}
	var c coalescer
	errs := make(chan error, 3)
	go func() { _, err := c.decide(context.Background(), run, "org", p); errs <- err }()
	testenv.WaitFor(t, 5*time.Second, "the first call to start", func() bool { return len(callsOf(run)) != 0 })
	for range 2 {
		go func() { _, err := c.decide(context.Background(), run, "org", p); errs <- err }()
	}
	testenv.WaitFor(t, 5*time.Second, "2 requests to join the batch", func() bool { return c.waitingMembers(batchKey{"org", p}) == 2 })
	close(run.release)
	for range 3 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Errorf("err = %v, want the call's error", err)
		}
	}
	// The batch that waited behind the failed call inherits its failure
	// instead of paying for a call (a timeout, if Redis hangs) of its own.
	if got := callsOf(run); len(got) != 1 {
		t.Fatalf("calls made for n = %v, want [1]: the batch must not run after the call it waited for failed", got)
	}
}

// TestCoalescerBatchAfterAnAbandonedCallFollowsTheBreaker: when the call a
// batch waited for ended without a verdict (its client went away), the
// batch runs only if the breaker does not consider Redis failing.
func TestCoalescerBatchAfterAnAbandonedCallFollowsTheBreaker(t *testing.T) {
	p := newPolicy("tiny", tinyLimits)
	for _, failing := range []error{nil, errors.New("i/o timeout")} {
		run := &blockingRunner{release: make(chan struct{}), failing: failing, answer: func(n int64) (batchResult, error) {
			return batchResult{admitted: n, tokens: microTokens, dayUsed: n, now: 1}, nil
		}}
		var c coalescer
		gone, leave := context.WithCancel(context.Background())
		lone := make(chan error, 1)
		go func() { _, err := c.decide(gone, run, "org", p); lone <- err }()
		testenv.WaitFor(t, 5*time.Second, "the first call to start", func() bool { return len(callsOf(run)) != 0 })
		errs := make(chan error, 2)
		for range 2 {
			go func() { _, err := c.decide(context.Background(), run, "org", p); errs <- err }()
		}
		testenv.WaitFor(t, 5*time.Second, "2 requests to join the batch", func() bool { return c.waitingMembers(batchKey{"org", p}) == 2 })
		leave() // the lone call's client goes away
		if err := <-lone; !errors.Is(err, context.Canceled) {
			t.Fatalf("abandoned call: %v", err)
		}
		close(run.release)
		for range 2 {
			err := <-errs
			if failing == nil && err != nil {
				t.Errorf("healthy Redis: batch member got %v, want a decision", err)
			}
			if failing != nil && !errors.Is(err, failing) {
				t.Errorf("Redis failing: batch member got %v, want the breaker's failure", err)
			}
		}
		wantCalls := 2
		if failing != nil {
			wantCalls = 1
		}
		if got := callsOf(run); len(got) != wantCalls {
			t.Errorf("breaker failing=%v: calls %v, want %d", failing != nil, got, wantCalls)
		}
	}
}

// TestCoalescedExactnessAcrossInstances: two failure-policy limiters (two
// gateways), each coalescing its concurrent requests, on one Redis:
// exactly capacity admitted, and the daily count shows no denial charged.
func TestCoalescedExactnessAcrossInstances(t *testing.T) {
	client, prefix := newTestRedis(t)
	p := newPolicy("exact", limits{PerMinute: 1, PerDay: 100000, Burst: 99}) // capacity 100
	var instances []limiter
	for range 2 {
		opts, err := redisConfig{addr: client.Options().Addr}.options()
		if err != nil {
			t.Fatal(err)
		}
		m := newMetrics()
		shared := newSharedRedis(opts, m, zap.NewNop())
		t.Cleanup(func() { _ = shared.Destruct() })
		local := newLocalLimiter(0, nil)
		t.Cleanup(func() { _ = local.Destruct() })
		instances = append(instances, &failoverLimiter{
			redis: newRedisLimiter(shared.client, prefix), breaker: shared.breaker, denied: newDeniedOrgs(), local: local,
			onError: onErrorDeny, timeout: 2 * time.Second, m: m, clock: time.Now,
		})
	}

	const requests = 600
	ok, denied := decideConcurrently(t, requests, "org", p, instances...)
	if ok != 100 || denied != requests-100 {
		t.Fatalf("admitted %d, denied %d of %d; want exactly 100 (capacity)", ok, denied, requests)
	}
	if _, n := dayCounter(t, client, newRedisLimiter(client, prefix).keys("org")[1]); n != 100 {
		t.Fatalf("daily counter %d, want 100", n)
	}
}

package caddyratelimit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// blockingRunner is a redisBatchRunner that records each call's n and
// answers only when released, so a test controls what is in flight.
type blockingRunner struct {
	mu      sync.Mutex
	calls   []int64
	release chan struct{}
	answer  func(n int64) (Batch, error)
}

func (r *blockingRunner) runRedis(_ context.Context, _ string, _ *Policy, n int64) (Batch, error) {
	r.mu.Lock()
	r.calls = append(r.calls, n)
	r.mu.Unlock()
	<-r.release
	return r.answer(n)
}

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
	p := NewPolicy("tiny", tinyLimits)
	run := &blockingRunner{release: make(chan struct{}), answer: func(n int64) (Batch, error) {
		admitted := min(n, 3) // 3 tokens left for every call
		return Batch{Admitted: admitted, Tokens: 7 * microTokens, DayUsed: 50, Now: 1}, nil
	}}
	var c coalescer
	key := batchKey{org: "org", policy: p}

	results := make(chan Decision, 11)
	go func() { d, _ := c.decide(context.Background(), run, "org", p); results <- d }()
	for len(callsOf(run)) == 0 {
		time.Sleep(time.Millisecond)
	}
	for range 10 {
		go func() { d, _ := c.decide(context.Background(), run, "org", p); results <- d }()
	}
	for c.waitingMembers(key) != 10 {
		time.Sleep(time.Millisecond)
	}
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
	p := NewPolicy("tiny", tinyLimits)
	boom := errors.New("redis down")
	run := &blockingRunner{release: make(chan struct{}), answer: func(int64) (Batch, error) { return Batch{}, boom }}
	var c coalescer
	errs := make(chan error, 3)
	go func() { _, err := c.decide(context.Background(), run, "org", p); errs <- err }()
	for len(callsOf(run)) == 0 {
		time.Sleep(time.Millisecond)
	}
	for range 2 {
		go func() { _, err := c.decide(context.Background(), run, "org", p); errs <- err }()
	}
	for c.waitingMembers(batchKey{"org", p}) != 2 {
		time.Sleep(time.Millisecond)
	}
	close(run.release)
	for range 3 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Errorf("err = %v, want the call's error", err)
		}
	}
}

func TestBatchDecisionsAreSequential(t *testing.T) {
	b := Batch{Admitted: 3, Tokens: 2 * microTokens, DayUsed: 10, Now: 5}
	for i, want := range []struct {
		allowed bool
		tokens  int64
		used    int64
	}{{true, 4, 8}, {true, 3, 9}, {true, 2, 10}, {false, 2, 10}} {
		d := b.Decision(int64(i))
		if d.Allowed != want.allowed || d.Tokens != want.tokens*microTokens || d.DayUsed != want.used {
			t.Errorf("member %d: %+v, want allowed=%v tokens=%d used=%d", i, d, want.allowed, want.tokens, want.used)
		}
	}
}

// TestRedisAllowNIsExactAndChargesNoDenial: one call for more requests than
// tokens admits exactly what is left and charges nothing for the rest.
func TestRedisAllowNIsExactAndChargesNoDenial(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := NewRedisLimiter(client, prefix)
	p := NewPolicy("tiny", tinyLimits) // capacity 10
	b, err := l.AllowN(context.Background(), "org", p, 4)
	if err != nil || b.Admitted != 4 {
		t.Fatalf("first batch of 4: %+v, %v", b, err)
	}
	b, err = l.AllowN(context.Background(), "org", p, 25)
	if err != nil || b.Admitted != 6 {
		t.Fatalf("batch of 25 with 6 tokens left: %+v, %v; want 6 admitted", b, err)
	}
	if b.DayUsed != 10 {
		t.Errorf("daily count %d after 10 admissions, want 10: denials were charged", b.DayUsed)
	}
	if _, n := dayCounter(t, client, l.keys("org")[1]); n != 10 {
		t.Errorf("daily counter in Redis %d, want 10", n)
	}
}

// TestCoalescedExactnessAcrossInstances: two failure-policy limiters (two
// gateways), each coalescing its concurrent requests, on one Redis:
// exactly capacity admitted, and the daily count shows no denial charged.
func TestCoalescedExactnessAcrossInstances(t *testing.T) {
	client, prefix := newTestRedis(t)
	p := NewPolicy("exact", Limits{PerMinute: 1, PerDay: 100000, Burst: 99}) // capacity 100
	var instances []Limiter
	for range 2 {
		opts, err := redisConfig{addr: client.Options().Addr}.options()
		if err != nil {
			t.Fatal(err)
		}
		m := newMetrics()
		shared := newSharedRedis(opts, m, zap.NewNop())
		t.Cleanup(func() { _ = shared.Destruct() })
		local := NewLocalLimiter(0, nil)
		t.Cleanup(func() { _ = local.Destruct() })
		instances = append(instances, &failoverLimiter{
			redis: NewRedisLimiter(shared.client, prefix), breaker: shared.breaker, denied: newDeniedOrgs(0), local: local,
			onError: OnErrorDeny, timeout: 2 * time.Second, m: m, clock: time.Now,
		})
	}

	const requests = 600
	ok, denied := decideConcurrently(t, requests, "org", p, instances...)
	if ok != 100 || denied != requests-100 {
		t.Fatalf("admitted %d, denied %d of %d; want exactly 100 (capacity)", ok, denied, requests)
	}
	if _, n := dayCounter(t, client, NewRedisLimiter(client, prefix).keys("org")[1]); n != 100 {
		t.Fatalf("daily counter %d, want 100", n)
	}
}

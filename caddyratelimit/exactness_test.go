package caddyratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestExactnessAcrossInstances: two limiters with their own connection
// pools (as two gateways have) on one Redis, hundreds of concurrent
// requests for one organization: exactly capacity are admitted.
func TestExactnessAcrossInstances(t *testing.T) {
	client, prefix := newTestRedis(t)
	second := redis.NewClient(&redis.Options{Addr: client.Options().Addr, PoolSize: 64})
	defer second.Close()
	instances := []Limiter{NewRedisLimiter(client, prefix), NewRedisLimiter(second, prefix)}
	// Capacity 100, refilled at one token a minute: the test cannot see a refill.
	p := NewPolicy("exact", Limits{PerMinute: 1, PerDay: 100000, Burst: 99})

	const requests = 600
	ok, denied := decideConcurrently(t, requests, "org", p, instances...)
	if ok != 100 || denied != requests-100 {
		t.Fatalf("admitted %d, denied %d of %d; want exactly 100 admitted (capacity)", ok, denied, requests)
	}
	// And the daily counter agrees: denials were not counted.
	if _, n := dayCounter(t, client, NewRedisLimiter(client, prefix).keys("org")[1]); n != 100 {
		t.Fatalf("daily counter %d, want 100", n)
	}
}

// TestExactnessInProcess: the same for the in-process limiter.
func TestExactnessInProcess(t *testing.T) {
	l := NewLocalLimiter(100, nil)
	defer l.Destruct()
	p := NewPolicy("exact", Limits{PerMinute: 1, PerDay: 100000, Burst: 99})
	if ok, _ := decideConcurrently(t, 600, "org", p, l); ok != 100 {
		t.Fatalf("admitted %d of 600, want exactly 100", ok)
	}
}

// decideConcurrently releases n goroutines at once, spread over the
// limiters, each asking for one decision for org; it fails the test on any
// error and returns how many were admitted and denied.
func decideConcurrently(t *testing.T, n int, org string, p *Policy, limiters ...Limiter) (ok, denied int64) {
	t.Helper()
	var wg sync.WaitGroup
	var admitted, refused, failed atomic.Int64
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func(l Limiter) {
			defer wg.Done()
			<-start
			d, err := l.Allow(context.Background(), org, p)
			switch {
			case err != nil:
				failed.Add(1)
			case d.Allowed:
				admitted.Add(1)
			default:
				refused.Add(1)
			}
		}(limiters[i%len(limiters)])
	}
	close(start)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d decisions failed", failed.Load(), n)
	}
	return admitted.Load(), refused.Load()
}

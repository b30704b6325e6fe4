package caddyratelimit

import (
	"strconv"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

func TestLocalLimiterForgetsIdleOrganizations(t *testing.T) {
	clock, l, p := tinyLocal(t)
	decide(t, l, "busy", p)
	l.allow("idle", tinyLimits, clock.Now().UnixMicro()-2*usPerDay) // used two days ago
	if n := l.sweep(); n != 1 {
		t.Fatalf("Sweep forgot %d organizations, want 1 (idle; busy has usage today)", n)
	}
	clock.Advance(24 * time.Hour)
	if n := l.sweep(); n != 1 || l.orgs.len() != 0 {
		t.Fatalf("a day later Sweep forgot %d, %d left; want the busy one gone too", n, l.orgs.len())
	}
}

func TestLocalLimiterIsBounded(t *testing.T) {
	clock := testenv.NewClock(mustTime(t, "2026-01-25T14:31:15Z"))
	const bound = 64 * numShards
	l := newLocalLimiter(bound, clock.Now)
	defer l.Destruct()
	p := newPolicy("tiny", tinyLimits)
	for i := 0; i < 5*bound; i++ {
		decide(t, l, "org-"+strconv.Itoa(i), p)
	}
	if n := l.orgs.len(); n > bound {
		t.Fatalf("holds %d organizations, bound %d", n, bound)
	}
	if l.evictions.Load() == 0 {
		t.Fatal("no eviction counted while exceeding the bound with busy organizations")
	}
}

// TestExactnessInProcess: the same for the in-process limiter.
func TestExactnessInProcess(t *testing.T) {
	l := newLocalLimiter(100, nil)
	defer l.Destruct()
	p := newPolicy("exact", limits{PerMinute: 1, PerDay: 100000, Burst: 99})
	if ok, _ := decideConcurrently(t, 600, "org", p, l); ok != 100 {
		t.Fatalf("admitted %d of 600, want exactly 100", ok)
	}
}

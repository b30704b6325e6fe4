package caddyratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// tiny is the example plan: 6/min, burst 4, so capacity 10 and one
// token every 10 s.
var tinyLimits = Limits{PerMinute: 6, PerDay: 1000, Burst: 4}

// newTestLocal returns an in-process limiter on a fake clock, stopped at
// the end of the test.
func newTestLocal(t *testing.T, clock *testenv.Clock) *LocalLimiter {
	t.Helper()
	l := NewLocalLimiter(1000, clock.Now)
	t.Cleanup(func() { _ = l.Destruct() })
	return l
}

// tinyLocal is the common setup: an in-process limiter on a fake clock at
// 2026-01-25T14:31:15Z and the tiny policy.
func tinyLocal(t *testing.T) (*testenv.Clock, *LocalLimiter, *Policy) {
	t.Helper()
	clock := testenv.NewClock(mustTime(t, "2026-01-25T14:31:15Z"))
	return clock, newTestLocal(t, clock), NewPolicy("tiny", tinyLimits)
}

// decide runs one decision and fails the test on error.
func decide(t *testing.T, l Limiter, org string, p *Policy) Decision {
	t.Helper()
	d, err := l.Allow(context.Background(), org, p)
	if err != nil {
		t.Fatalf("Allow(%s): %v", org, err)
	}
	return d
}

// admitted sends n sequential requests and counts the admitted ones.
func admitted(t *testing.T, l Limiter, org string, p *Policy, n int) int {
	t.Helper()
	got := 0
	for i := 0; i < n; i++ {
		if decide(t, l, org, p).Allowed {
			got++
		}
	}
	return got
}

// mustTime parses an RFC 3339 time.
func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

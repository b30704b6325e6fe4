package caddyratelimit

import (
	"context"
	"testing"
	"time"
)

func TestLocalPeekReadsWithoutConsuming(t *testing.T) {
	clock, l, p := tinyLocal(t)
	now := func() int64 { return clock.Now().UnixMicro() }

	fresh := l.peek("org", p.Limits, now())
	if fresh.remainingMinute() != 10 || fresh.DayUsed != 0 {
		t.Fatalf("unseen organization: %d tokens, %d used; want a full bucket of 10 and 0", fresh.remainingMinute(), fresh.DayUsed)
	}
	if got := admitted(t, l, "org", p, 3); got != 3 {
		t.Fatalf("admitted %d of 3", got)
	}
	for i := 0; i < 3; i++ { // peeking repeatedly changes nothing
		d := l.peek("org", p.Limits, now())
		if d.remainingMinute() != 7 || d.DayUsed != 3 {
			t.Fatalf("peek %d: %d tokens, %d used; want 7 and 3", i, d.remainingMinute(), d.DayUsed)
		}
	}
	clock.Advance(20 * time.Second) // two tokens at 6/min
	if d := l.peek("org", p.Limits, now()); d.remainingMinute() != 9 {
		t.Fatalf("after 20 s: %d tokens, want 9", d.remainingMinute())
	}
	if d := decide(t, l, "org", p); d.remainingMinute() != 8 {
		t.Fatalf("the next decision left %d tokens, want 8 (peeking took none)", d.remainingMinute())
	}
	clock.Advance(24 * time.Hour)
	if d := l.peek("org", p.Limits, now()); d.DayUsed != 0 {
		t.Fatalf("next day: %d used, want 0", d.DayUsed)
	}
}

func TestRedisPeekMatchesDecisions(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	p := newPolicy("tiny", tinyLimits)
	ctx := context.Background()

	d, err := l.peek(ctx, "org", p.Limits)
	if err != nil {
		t.Fatal(err)
	}
	if d.remainingMinute() != 10 || d.DayUsed != 0 || d.Source != sourceRedis {
		t.Fatalf("unseen organization: %+v, want a full bucket from Redis", d)
	}
	if got := admitted(t, l, "org", p, 4); got != 4 {
		t.Fatalf("admitted %d of 4", got)
	}
	for i := 0; i < 3; i++ {
		d, err := l.peek(ctx, "org", p.Limits)
		if err != nil {
			t.Fatal(err)
		}
		// The bucket refills 0.1 token per second: within a test's few
		// milliseconds the whole tokens are exactly 6.
		if d.remainingMinute() != 6 || d.DayUsed != 4 {
			t.Fatalf("peek %d: %d tokens, %d used; want 6 and 4", i, d.remainingMinute(), d.DayUsed)
		}
	}
	if d := decide(t, l, "org", p); !d.Allowed || d.DayUsed != 5 {
		t.Fatalf("next decision: %+v, want the 5th admission (peeking took nothing)", d)
	}
	if other, err := l.peek(ctx, "other", p.Limits); err != nil || other.DayUsed != 0 || other.remainingMinute() != 10 {
		t.Fatalf("another organization: %+v, %v; want untouched", other, err)
	}
}

func TestParsePair(t *testing.T) {
	if a, b, ok := parsePair("5 7"); !ok || a != 5 || b != 7 {
		t.Errorf(`parsePair("5 7") = %d, %d, %v`, a, b, ok)
	}
	for _, bad := range []string{"", "x 1", "1 y", "12"} {
		if _, _, ok := parsePair(bad); ok {
			t.Errorf("parsePair(%q) accepted it", bad)
		}
	}
}

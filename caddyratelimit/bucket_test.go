package caddyratelimit

import (
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

func TestBucketBurstThenDeny(t *testing.T) {
	_, l, p := tinyLocal(t)

	if got := admitted(t, l, "org", p, 15); got != 10 {
		t.Fatalf("admitted %d of 15 at one instant, want capacity 10 (6 + burst 4)", got)
	}
	d := decide(t, l, "org", p)
	if d.Allowed || d.limitType(p.Limits) != limitTypeMinute {
		t.Fatalf("16th request: allowed=%v limit=%s, want a minute denial", d.Allowed, d.limitType(p.Limits))
	}
	if got := d.retryAfter(p.Limits); got != 10 {
		t.Errorf("Retry-After = %d, want 10 (one token per 10 s)", got)
	}
	if d.remainingMinute() != 0 || d.minuteUsed(p.Limits) != 10 || d.DayUsed != 10 {
		t.Errorf("remaining=%d minute_used=%d day_used=%d, want 0/10/10", d.remainingMinute(), d.minuteUsed(p.Limits), d.DayUsed)
	}
}

func TestBucketRefillsContinuously(t *testing.T) {
	clock, l, p := tinyLocal(t)
	admitted(t, l, "org", p, 10)

	clock.Advance(9999 * time.Millisecond)
	if decide(t, l, "org", p).Allowed {
		t.Fatal("admitted 9.999 s after emptying the bucket; the first token is due at 10 s")
	}
	clock.Advance(time.Millisecond)
	if !decide(t, l, "org", p).Allowed {
		t.Fatal("denied 10 s after emptying the bucket; one token is due")
	}
	clock.Advance(25 * time.Second) // 2.5 tokens
	if got := admitted(t, l, "org", p, 5); got != 2 {
		t.Fatalf("admitted %d after 25 s, want 2 (2.5 tokens)", got)
	}
	// The half token left carries over: 5 s more make a whole one.
	clock.Advance(5 * time.Second)
	if got := admitted(t, l, "org", p, 5); got != 1 {
		t.Fatalf("admitted %d after 5 more s, want 1 (the carried half token)", got)
	}
	// Refill stops at capacity however long the organization is idle.
	clock.Advance(time.Hour)
	if got := admitted(t, l, "org", p, 20); got != 10 {
		t.Fatalf("admitted %d after an idle hour, want capacity 10", got)
	}
}

func TestBucketDenialConsumesNothing(t *testing.T) {
	clock, l, p := tinyLocal(t)
	admitted(t, l, "org", p, 10)
	for i := 0; i < 100; i++ {
		if decide(t, l, "org", p).Allowed {
			t.Fatal("admitted from an empty bucket")
		}
	}
	clock.Advance(10 * time.Second)
	d := decide(t, l, "org", p)
	if !d.Allowed {
		t.Fatal("100 denials delayed the next token: denials must not consume")
	}
	if d.DayUsed != 11 {
		t.Errorf("daily used = %d after 11 admitted and 100 denied, want 11", d.DayUsed)
	}
}

func TestDailyQuotaAndRolloverAtMidnightUTC(t *testing.T) {
	clock := testenv.NewClock(mustTime(t, "2026-01-25T23:59:00Z"))
	l := newTestLocal(t, clock)
	p := newPolicy("daily", limits{PerMinute: 600, PerDay: 5})
	if got := admitted(t, l, "org", p, 5); got != 5 {
		t.Fatalf("admitted %d, want 5", got)
	}
	d := decide(t, l, "org", p)
	if d.Allowed || d.limitType(p.Limits) != limitTypeDay {
		t.Fatalf("6th request of the day: allowed=%v limit=%s, want a day denial", d.Allowed, d.limitType(p.Limits))
	}
	if got := d.retryAfter(p.Limits); got != 60 {
		t.Errorf("Retry-After = %d at 23:59:00, want 60 (until 00:00 UTC)", got)
	}
	if d.remainingMinute() == 0 {
		t.Error("a day denial took tokens from the minute bucket")
	}

	clock.Advance(59*time.Second + 999999*time.Microsecond) // 23:59:59.999999
	if decide(t, l, "org", p).Allowed {
		t.Fatal("admitted before 00:00 UTC")
	}
	clock.Advance(time.Microsecond) // 00:00:00 UTC
	d = decide(t, l, "org", p)
	if !d.Allowed || d.DayUsed != 1 {
		t.Fatalf("at 00:00 UTC: allowed=%v day_used=%d, want a fresh day", d.Allowed, d.DayUsed)
	}
}

func TestDayRolloverIgnoresLocalTimeZone(t *testing.T) {
	// 23:30 in UTC-5 is 04:30 UTC the next day: the quota follows UTC.
	est := time.FixedZone("EST", -5*3600)
	clock := testenv.NewClock(time.Date(2026, 1, 25, 23, 30, 0, 0, est))
	l := newTestLocal(t, clock)
	p := newPolicy("daily", limits{PerMinute: 600, PerDay: 5})
	d := decide(t, l, "org", p)
	want := time.Date(2026, 1, 27, 0, 0, 0, 0, time.UTC)
	if got := time.UnixMicro(d.dayResetAt()).UTC(); !got.Equal(want) {
		t.Errorf("day resets at %s, want %s", got, want)
	}
}

func TestLoweredCapacityClipsBucket(t *testing.T) {
	clock := testenv.NewClock(mustTime(t, "2026-01-25T14:31:15Z"))
	l := newTestLocal(t, clock)
	big := newPolicy("big", limits{PerMinute: 100, PerDay: 1000, Burst: 100})
	decide(t, l, "org", big) // 199 tokens left
	small := newPolicy("small", tinyLimits)
	if got := admitted(t, l, "org", small, 50); got != 10 {
		t.Fatalf("admitted %d after the plan shrank to capacity 10, want 10", got)
	}
}

func TestOrganizationsAreIndependent(t *testing.T) {
	_, l, p := tinyLocal(t)
	admitted(t, l, "a", p, 10)
	if got := admitted(t, l, "b", p, 10); got != 10 {
		t.Fatalf("org b admitted %d after org a emptied its bucket, want 10", got)
	}
}

package caddyratelimit

import "fmt"

// Fixed-point units shared by the Go and the Lua implementation of the
// bucket. Buckets hold micro-tokens and time is in microseconds, so
// continuous refill is exact integer arithmetic on both sides (every value
// stays below 2^53, which Lua's doubles represent exactly).
const (
	microTokens  = 1_000_000 // one token
	usPerSecond  = 1_000_000 // microseconds in a second
	usPerMinute  = 60 * usPerSecond
	usPerDay     = 86_400 * usPerSecond
	secondsInDay = 86_400
)

// Bounds on configured limits. maxCapacity keeps capacity·60·10^6 below
// 2^53 for the Lua script; maxPerDay is far above any real quota.
const (
	maxCapacity = 100_000_000
	maxPerDay   = 1_000_000_000_000
)

// Limits are the effective limits of one organization: its plan's, with
// the organization's overrides from the key store applied.
type Limits struct {
	// PerMinute is the bucket's refill rate: tokens per 60 s.
	PerMinute int64
	// PerDay is the number of requests admitted per UTC calendar day.
	PerDay int64
	// Burst is added to PerMinute to give the bucket's capacity.
	Burst int64
}

// Capacity is the most tokens the minute bucket holds.
func (l Limits) Capacity() int64 { return l.PerMinute + l.Burst }

// Validate checks that the limits are usable: positive rates, a
// non-negative burst, and values within the bounds the Lua script handles.
func (l Limits) Validate() error {
	switch {
	case l.PerMinute <= 0:
		return fmt.Errorf("per_minute must be a positive integer, got %d", l.PerMinute)
	case l.PerDay <= 0:
		return fmt.Errorf("per_day must be a positive integer, got %d", l.PerDay)
	case l.Burst < 0:
		return fmt.Errorf("burst must be zero or a positive integer, got %d", l.Burst)
	case l.PerMinute > maxCapacity || l.Burst > maxCapacity || l.Capacity() > maxCapacity:
		return fmt.Errorf("per_minute + burst must be at most %d, got %d + %d", maxCapacity, l.PerMinute, l.Burst)
	case l.PerDay > maxPerDay:
		return fmt.Errorf("per_day must be at most %d, got %d", int64(maxPerDay), l.PerDay)
	}
	return nil
}

// ceilDiv is ⌈a/b⌉ for a ≥ 0, b > 0.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

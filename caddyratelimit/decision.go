package caddyratelimit

// Source says what made a decision. It is logged with every request and is a
// label of the decisions metric.
type Source uint8

// Decision sources.
const (
	// SourceRedis: the Lua script on Redis decided.
	SourceRedis Source = iota
	// SourceLocal: the in-process limiter decided (no Redis configured).
	SourceLocal
	// SourceFallback: Redis failed and on_redis_error local decided in process.
	SourceFallback
	// SourceFastPath: Redis had denied the organization until a time not yet
	// reached, so the denial was repeated without asking Redis.
	SourceFastPath
	// SourceFailOpen: Redis failed and on_redis_error allow admitted the
	// request without a limit.
	SourceFailOpen
	numSources
)

var sourceNames = [numSources]string{"redis", "local", "fallback", "fast_path", "fail_open"}

// String returns the name used in logs and metrics.
func (s Source) String() string {
	if s < numSources {
		return sourceNames[s]
	}
	return "unknown"
}

// LimitType names the limit that denied a request, as in the 429's
// details.limit_type.
type LimitType string

// Limit types.
const (
	LimitMinute LimitType = "minute"
	LimitDay    LimitType = "day"
)

// Decision is a limiter's answer for one request, with the state it leaves
// behind: enough to render every rate-limit header without another lookup.
type Decision struct {
	// Allowed reports whether the request was admitted (and so took one
	// token and one daily unit).
	Allowed bool
	// Source is what decided.
	Source Source
	// Tokens is the minute bucket's content after the decision, in
	// micro-tokens (1 token = 1 000 000).
	Tokens int64
	// DayUsed is the number of requests admitted today after the decision.
	DayUsed int64
	// Now is the decision time in µs since the Unix epoch (Redis's clock for
	// the Redis limiter).
	Now int64
}

// RemainingMinute is the whole tokens left in the bucket.
func (d *Decision) RemainingMinute() int64 { return d.Tokens / microTokens }

// RemainingDay is what is left of today's quota.
func (d *Decision) RemainingDay(l Limits) int64 {
	if r := l.PerDay - d.DayUsed; r > 0 {
		return r
	}
	return 0
}

// MinuteUsed is the whole tokens missing from a full bucket.
func (d *Decision) MinuteUsed(l Limits) int64 { return l.Capacity() - d.RemainingMinute() }

// LimitType is the limit that denies (or would deny) the next request: the
// daily quota when it is exhausted, else the minute bucket.
func (d *Decision) LimitType(l Limits) LimitType {
	if d.DayUsed >= l.PerDay {
		return LimitDay
	}
	return LimitMinute
}

// FullAt is when the bucket is full again, in µs since the epoch.
func (d *Decision) FullAt(l Limits) int64 { return d.Now + untilFull(d.Tokens, l) }

// DayResetAt is the next 00:00 UTC after the decision, in µs since the epoch.
func (d *Decision) DayResetAt() int64 { return (d.Now/usPerDay + 1) * usPerDay }

// RetryAt is the earliest time, in µs since the epoch, at which a request
// that was denied can be admitted: the next whole token, or the next UTC
// day when the daily quota is exhausted.
func (d *Decision) RetryAt(l Limits) int64 {
	if d.LimitType(l) == LimitDay {
		return d.DayResetAt()
	}
	return d.Now + untilNextToken(d.Tokens, l)
}

// RetryAfter is RetryAt as whole seconds from the decision, at least 1: the
// Retry-After header's value.
func (d *Decision) RetryAfter(l Limits) int64 {
	if s := ceilDiv(d.RetryAt(l)-d.Now, usPerSecond); s > 1 {
		return s
	}
	return 1
}

// advance returns the decision as it stands later, at now: the bucket has
// refilled meanwhile. The fast path uses it to answer a repeated denial.
func (d Decision) advance(now int64, l Limits) Decision {
	if now > d.Now {
		d.Tokens = refilled(d.Tokens, d.Now, now, l)
		if d.Now/usPerDay != now/usPerDay {
			d.DayUsed = 0
		}
		d.Now = now
	}
	return d
}

package caddyratelimit

// The algorithm: per organization, a minute token bucket (capacity
// per_minute + burst, refilled continuously at per_minute per 60 s) and a
// daily counter per UTC calendar day. A request is admitted iff the bucket
// holds a whole token and the counter is below per_day; then both are taken
// together. A denied request changes nothing. The Lua script (limiter.lua)
// runs the same steps on Redis and must stay step-for-step identical.

// Fixed-point units shared by the Go and the Lua implementation of the
// bucket. Buckets hold micro-tokens and time is in microseconds, so
// continuous refill is exact integer arithmetic on both sides (every value
// stays below 2^53, which Lua's doubles represent exactly).
const (
	microTokens  = 1_000_000 // one token
	usPerSecond  = 1_000_000 // microseconds in a second
	usPerDay     = 86_400 * usPerSecond
	secondsInDay = 86_400
)

// bucketState is one organization's limiter state in process: the minute
// token bucket and the daily counter.
type bucketState struct {
	tokens int64 // micro-tokens in the bucket at ts
	ts     int64 // µs since the Unix epoch of the last update
	day    int64 // UTC day number (Unix days) that used counts
	used   int64 // requests admitted on day
}

// newBucket is the state of an organization never seen before: a full
// bucket and nothing used today.
func newBucket(now int64, l limits) bucketState {
	return bucketState{tokens: l.capacity() * microTokens, ts: now, day: now / usPerDay}
}

// refilled returns the micro-tokens a bucket holds at now, given what it held
// at ts. The bucket refills continuously at PerMinute per minute up to its
// capacity. A clock that went backwards refills nothing; a lowered capacity
// clips the content.
func refilled(tokens, ts, now int64, l limits) int64 {
	capU := l.capacity() * microTokens
	if tokens >= capU {
		return capU
	}
	elapsed := now - ts
	if elapsed <= 0 {
		return tokens
	}
	if elapsed >= untilFull(tokens, l) {
		return capU
	}
	return tokens + elapsed*l.PerMinute/60
}

// untilFull is how long, in µs, a bucket holding tokens takes to fill up.
func untilFull(tokens int64, l limits) int64 {
	missing := l.capacity()*microTokens - tokens
	if missing <= 0 {
		return 0
	}
	return ceilDiv(missing*60, l.PerMinute)
}

// untilNextToken is how long, in µs, until a bucket holding tokens gains its
// next whole token (for an empty bucket: until it holds one); 0 when full.
func untilNextToken(tokens int64, l limits) int64 {
	if tokens >= l.capacity()*microTokens {
		return 0
	}
	return ceilDiv((microTokens-tokens%microTokens)*60, l.PerMinute)
}

// ceilDiv is ⌈a/b⌉ for a ≥ 0, b > 0.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// usedToday returns the daily counter as of now: zero on a new UTC day.
func (s *bucketState) usedToday(now int64) int64 {
	if s.day != now/usPerDay {
		return 0
	}
	return s.used
}

// take decides one request at now: it is admitted iff the bucket holds a
// whole token and today's counter is below PerDay, and then both are taken
// together. A denied request changes nothing.
func (s *bucketState) take(now int64, l limits) decision {
	tokens := refilled(s.tokens, s.ts, now, l)
	used := s.usedToday(now)
	d := decision{Tokens: tokens, DayUsed: used, Now: now}
	if tokens < microTokens || used >= l.PerDay {
		return d
	}
	d.Allowed = true
	d.Tokens -= microTokens
	d.DayUsed++
	*s = bucketState{tokens: d.Tokens, ts: now, day: now / usPerDay, used: d.DayUsed}
	return d
}

// idle reports whether the state is indistinguishable from a new one at now
// (full bucket, nothing used today), so forgetting it loses nothing.
func (s *bucketState) idle(now int64, l limits) bool {
	return s.usedToday(now) == 0 && refilled(s.tokens, s.ts, now, l) == l.capacity()*microTokens
}

// decisionSource says what made a decision. It is logged with every request and is a
// label of the decisions metric.
type decisionSource uint8

// Decision sources.
const (
	// sourceRedis: the Lua script on Redis decided.
	sourceRedis decisionSource = iota
	// sourceLocal: the in-process limiter decided (no Redis configured).
	sourceLocal
	// sourceFallback: Redis failed and on_redis_error local decided in process.
	sourceFallback
	// sourceFastPath: Redis had denied the organization until a time not yet
	// reached, so the denial was repeated without asking Redis.
	sourceFastPath
	// sourceFailOpen: Redis failed and on_redis_error allow admitted the
	// request without a limit.
	sourceFailOpen
	numSources
)

var sourceNames = [numSources]string{"redis", "local", "fallback", "fast_path", "fail_open"}

// String returns the name used in logs and metrics.
func (s decisionSource) String() string {
	if s < numSources {
		return sourceNames[s]
	}
	return "unknown"
}

// limitType names the limit that denied a request, as in the 429's
// details.limit_type.
type limitType string

// Limit types.
const (
	limitTypeMinute limitType = "minute"
	limitTypeDay    limitType = "day"
)

// decision is a limiter's answer for one request, with the state it leaves
// behind: enough to render every rate-limit header without another lookup.
type decision struct {
	// Allowed reports whether the request was admitted (and so took one
	// token and one daily unit).
	Allowed bool
	// Source is what decided.
	Source decisionSource
	// Tokens is the minute bucket's content after the decision, in
	// micro-tokens (1 token = 1 000 000).
	Tokens int64
	// DayUsed is the number of requests admitted today after the decision.
	DayUsed int64
	// Now is the decision time in µs since the Unix epoch (Redis's clock for
	// the Redis limiter).
	Now int64
}

// remainingMinute is the whole tokens left in the bucket.
func (d *decision) remainingMinute() int64 { return d.Tokens / microTokens }

// remainingDay is what is left of today's quota.
func (d *decision) remainingDay(l limits) int64 {
	if r := l.PerDay - d.DayUsed; r > 0 {
		return r
	}
	return 0
}

// minuteUsed is the whole tokens missing from a full bucket.
func (d *decision) minuteUsed(l limits) int64 { return l.capacity() - d.remainingMinute() }

// limitType is the limit that denies (or would deny) the next request: the
// daily quota when it is exhausted, else the minute bucket.
func (d *decision) limitType(l limits) limitType {
	if d.DayUsed >= l.PerDay {
		return limitTypeDay
	}
	return limitTypeMinute
}

// fullAt is when the bucket is full again, in µs since the epoch.
func (d *decision) fullAt(l limits) int64 { return d.Now + untilFull(d.Tokens, l) }

// dayResetAt is the next 00:00 UTC after the decision, in µs since the epoch.
func (d *decision) dayResetAt() int64 { return (d.Now/usPerDay + 1) * usPerDay }

// retryAt is the earliest time, in µs since the epoch, at which a request
// that was denied can be admitted: the next whole token, or the next UTC
// day when the daily quota is exhausted.
func (d *decision) retryAt(l limits) int64 {
	if d.limitType(l) == limitTypeDay {
		return d.dayResetAt()
	}
	return d.Now + untilNextToken(d.Tokens, l)
}

// retryAfter is retryAt as whole seconds from the decision, at least 1: the
// Retry-After header's value.
func (d *decision) retryAfter(l limits) int64 {
	if s := ceilDiv(d.retryAt(l)-d.Now, usPerSecond); s > 1 {
		return s
	}
	return 1
}

// advance returns the decision as it stands later, at now: the bucket has
// refilled meanwhile. The fast path uses it to answer a repeated denial.
func (d decision) advance(now int64, l limits) decision {
	if now > d.Now {
		d.Tokens = refilled(d.Tokens, d.Now, now, l)
		if d.Now/usPerDay != now/usPerDay {
			d.DayUsed = 0
		}
		d.Now = now
	}
	return d
}

package caddyratelimit

// bucketState is one organization's limiter state in process: the minute
// token bucket and the daily counter. The Lua script (limiter.lua) keeps
// the same two things in Redis and must stay step-for-step identical.
type bucketState struct {
	tokens int64 // micro-tokens in the bucket at ts
	ts     int64 // µs since the Unix epoch of the last update
	day    int64 // UTC day number (Unix days) that used counts
	used   int64 // requests admitted on day
}

// newBucket is the state of an organization never seen before: a full
// bucket and nothing used today.
func newBucket(now int64, l Limits) bucketState {
	return bucketState{tokens: l.Capacity() * microTokens, ts: now, day: now / usPerDay}
}

// refilled returns the micro-tokens a bucket holds at now, given what it held
// at ts. The bucket refills continuously at PerMinute per minute up to its
// capacity. A clock that went backwards refills nothing; a lowered capacity
// clips the content.
func refilled(tokens, ts, now int64, l Limits) int64 {
	capU := l.Capacity() * microTokens
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
func untilFull(tokens int64, l Limits) int64 {
	missing := l.Capacity()*microTokens - tokens
	if missing <= 0 {
		return 0
	}
	return ceilDiv(missing*60, l.PerMinute)
}

// untilNextToken is how long, in µs, until a bucket holding tokens gains its
// next whole token (for an empty bucket: until it holds one); 0 when full.
func untilNextToken(tokens int64, l Limits) int64 {
	if tokens >= l.Capacity()*microTokens {
		return 0
	}
	return ceilDiv((microTokens-tokens%microTokens)*60, l.PerMinute)
}

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
func (s *bucketState) take(now int64, l Limits) Decision {
	tokens := refilled(s.tokens, s.ts, now, l)
	used := s.usedToday(now)
	d := Decision{Tokens: tokens, DayUsed: used, Now: now}
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
func (s *bucketState) idle(now int64, l Limits) bool {
	return s.usedToday(now) == 0 && refilled(s.tokens, s.ts, now, l) == l.Capacity()*microTokens
}

package caddyratelimit

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Response headers, in Go's canonical form (the wire is case-insensitive;
// HTTP/2 and HTTP/3 lower-case them anyway).
const (
	hdrLimitMinute     = "X-Ratelimit-Limit-Minute"
	hdrLimitDay        = "X-Ratelimit-Limit-Day"
	hdrRemainingMinute = "X-Ratelimit-Remaining-Minute"
	hdrRemainingDay    = "X-Ratelimit-Remaining-Day"
	hdrResetMinute     = "X-Ratelimit-Reset-Minute"
	hdrResetDay        = "X-Ratelimit-Reset-Day"
	hdrBurst           = "X-Ratelimit-Burst"
	hdrPolicy          = "Ratelimit-Policy" // draft-ietf-httpapi-ratelimit-headers, section 3
	hdrRateLimit       = "Ratelimit"        // draft-ietf-httpapi-ratelimit-headers, section 4
	hdrRetryAfter      = "Retry-After"
)

// dayStamp caches the X-RateLimit-Reset-Day value of one UTC day.
type dayStamp struct {
	day   int64
	value string
}

// headerWriter renders the rate-limit headers. Static values come from the
// policy; the dynamic ones are formatted into one stack buffer and become
// one string, so a decision's headers cost two allocations.
type headerWriter struct {
	resetDay atomic.Pointer[dayStamp]
}

// write sets every rate-limit header for a decision.
func (hw *headerWriter) write(h http.Header, p *policy, d *decision) {
	l := p.Limits
	var buf [192]byte
	b := strconv.AppendInt(buf[:0], d.remainingMinute(), 10)
	endRemMinute := len(b)
	b = strconv.AppendInt(b, d.remainingDay(l), 10)
	endRemDay := len(b)
	b = appendRFC3339(b, ceilDiv(d.fullAt(l), usPerSecond))
	endReset := len(b)
	b = appendRateLimit(b, d, l)
	s := string(b)

	vals := make([]string, 9)
	vals[0], vals[1], vals[2], vals[3] = p.limitMinute, p.limitDay, p.burst, p.policy
	vals[4], vals[5], vals[6] = s[:endRemMinute], s[endRemMinute:endRemDay], s[endRemDay:endReset]
	vals[7], vals[8] = s[endReset:], hw.dayReset(d.Now)
	h[hdrLimitMinute] = vals[0:1:1]
	h[hdrLimitDay] = vals[1:2:2]
	h[hdrBurst] = vals[2:3:3]
	h[hdrPolicy] = vals[3:4:4]
	h[hdrRemainingMinute] = vals[4:5:5]
	h[hdrRemainingDay] = vals[5:6:6]
	h[hdrResetMinute] = vals[6:7:7]
	h[hdrRateLimit] = vals[7:8:8]
	h[hdrResetDay] = vals[8:9:9]
}

// writeStatic sets only the headers that do not depend on state: for a
// request admitted by on_redis_error allow, whose remaining quota is unknown.
func (hw *headerWriter) writeStatic(h http.Header, p *policy) {
	vals := make([]string, 4)
	vals[0], vals[1], vals[2], vals[3] = p.limitMinute, p.limitDay, p.burst, p.policy
	h[hdrLimitMinute] = vals[0:1:1]
	h[hdrLimitDay] = vals[1:2:2]
	h[hdrBurst] = vals[2:3:3]
	h[hdrPolicy] = vals[3:4:4]
}

// appendRateLimit appends the RateLimit field (the draft's section 4): remaining units
// (r) and seconds until more are available (t) for the minute bucket (no t
// when it is full) and the day.
func appendRateLimit(b []byte, d *decision, l limits) []byte {
	b = append(b, `"minute";r=`...)
	b = strconv.AppendInt(b, d.remainingMinute(), 10)
	if next := untilNextToken(d.Tokens, l); next > 0 {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilDiv(next, usPerSecond), 10)
	}
	b = append(b, `, "day";r=`...)
	b = strconv.AppendInt(b, d.remainingDay(l), 10)
	b = append(b, ";t="...)
	return strconv.AppendInt(b, ceilDiv(d.dayResetAt()-d.Now, usPerSecond), 10)
}

// dayReset returns the next 00:00 UTC after now (µs), formatted once per day.
func (hw *headerWriter) dayReset(now int64) string {
	day := now / usPerDay
	if st := hw.resetDay.Load(); st != nil && st.day == day {
		return st.value
	}
	st := &dayStamp{day: day, value: string(appendRFC3339(nil, (day+1)*secondsInDay))}
	hw.resetDay.Store(st)
	return st.value
}

// appendRFC3339 appends the UTC time unixSeconds in RFC 3339.
func appendRFC3339(b []byte, unixSeconds int64) []byte {
	return time.Unix(unixSeconds, 0).UTC().AppendFormat(b, time.RFC3339)
}

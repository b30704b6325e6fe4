package caddyratelimit

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// limitDetails is the "details" member of a 429's envelope (DESIGN §3).
type limitDetails struct {
	LimitType  LimitType `json:"limit_type"`
	DailyUsed  int64     `json:"daily_used"`
	MinuteUsed int64     `json:"minute_used"`
	ResetAt    string    `json:"reset_at"`
	RetryAfter int64     `json:"retry_after"`
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (rl *RateLimit) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ctx := r.Context()
	var id *tenant.Identity
	var rid string
	tr := tenant.RequestFromContext(ctx)
	if tr != nil {
		id, rid = tr.Identity, tr.ID
	}
	if id == nil {
		rl.logger.Error("request reached tenant_ratelimit without a tenant identity: tenant_auth must run before it in the same route",
			zap.String("request_id", rid), zap.String("uri", r.RequestURI))
		return tenant.WriteError(w, http.StatusInternalServerError, "internal server error: rate limiter is misconfigured", nil, rid)
	}
	p := rl.policies.lookup(id)
	if p == nil {
		rl.logger.Error("no rate-limit plan for the organization's plan tier; add a plan line to tenant_ratelimit",
			zap.String("request_id", rid), zap.String("organization_id", id.OrgID), zap.String("plan", id.Plan))
		return tenant.WriteError(w, http.StatusInternalServerError, "internal server error: no rate limits configured for plan "+strconv.Quote(id.Plan), nil, rid)
	}

	d, err := rl.limiter.Allow(ctx, id.OrgID, p)
	if err != nil {
		return rl.unavailable(w, tr, p, err)
	}
	h := w.Header()
	if d.Source == SourceFailOpen {
		rl.headers.writeStatic(h, p)
	} else {
		rl.headers.write(h, p, &d)
	}
	res := resultAllowed
	if !d.Allowed {
		res = resultDeniedMinute
		if d.LimitType(p.Limits) == LimitDay {
			res = resultDeniedDay
		}
	}
	p.counters.inc(res, d.Source)
	logDecision(tr, res, d.Source)
	if d.Allowed {
		return next.ServeHTTP(w, r)
	}
	return rl.tooMany(w, p, &d, rid)
}

// tooMany answers 429 with Retry-After and the envelope's details.
func (rl *RateLimit) tooMany(w http.ResponseWriter, p *Policy, d *Decision, rid string) error {
	l := p.Limits
	retry := d.RetryAfter(l)
	kind := d.LimitType(l)
	w.Header()[hdrRetryAfter] = []string{strconv.FormatInt(retry, 10)}
	msg := "Rate limit exceeded: minute limit reached"
	if kind == LimitDay {
		msg = "Rate limit exceeded: daily limit reached"
	}
	details := &limitDetails{
		LimitType:  kind,
		DailyUsed:  d.DayUsed,
		MinuteUsed: d.MinuteUsed(l),
		ResetAt:    string(appendRFC3339(nil, d.Now/usPerSecond+retry)),
		RetryAfter: retry,
	}
	return tenant.WriteError(w, http.StatusTooManyRequests, msg, details, rid)
}

// unavailable answers a request the limiter could not decide: 503 (Redis
// down under on_redis_error deny), never 429 or 403.
func (rl *RateLimit) unavailable(w http.ResponseWriter, tr *tenant.Request, p *Policy, err error) error {
	retry := int64(1)
	var ue *UnavailableError
	if errors.As(err, &ue) {
		retry = max(1, ceilDiv(int64(ue.RetryIn), 1e9))
	} else {
		rl.logger.Error("rate limiter failed", zap.Error(err))
	}
	p.counters.inc(resultUnavailable, SourceRedis)
	logDecision(tr, resultUnavailable, SourceRedis)
	w.Header()[hdrRetryAfter] = []string{strconv.FormatInt(retry, 10)}
	return tenant.WriteError(w, http.StatusServiceUnavailable, "rate limiter temporarily unavailable", nil, tr.ID)
}

// logDecision records the decision for the request's access-log line
// (tenant.Request renders it with the tenant fields).
func logDecision(tr *tenant.Request, res result, src Source) {
	tr.RateLimit, tr.RateLimitSource = resultNames[res], src.String()
}

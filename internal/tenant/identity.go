package tenant

import (
	"context"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap/zapcore"
)

// requestVar names the Caddy request variable through which tenant_auth
// hands the request's tenant state to later handlers. It lives in Caddy's
// per-request variable table, so no request copy is needed to pass it on.
const requestVar = "tenant.request"

// LimitOverrides are per-organization limits from the key store. A zero
// PerMinute or PerDay means "use the plan's"; Burst applies only when BurstSet.
type LimitOverrides struct {
	PerMinute int64
	PerDay    int64
	Burst     int64
	BurstSet  bool
}

// IsZero reports whether no limit is overridden.
func (o LimitOverrides) IsZero() bool {
	return o.PerMinute == 0 && o.PerDay == 0 && !o.BurstSet
}

// Identity is who a request acts for: the organization that owns the key,
// the effective plan (the key's override, else the organization's), the key's
// ID and the organization's limit overrides. Identities are immutable once
// built and shared by every request made with the key, so the hot path never
// copies one. It is kept small: a gateway may cache a million of them.
type Identity struct {
	OrgID  string
	Plan   string
	KeyID  string
	Limits LimitOverrides
}

// NewIdentity builds an immutable identity.
func NewIdentity(orgID, plan, keyID string, limits LimitOverrides) *Identity {
	return &Identity{OrgID: orgID, Plan: plan, KeyID: keyID, Limits: limits}
}

// Request is one request's tenant state: its ID and, once authenticated,
// its identity. tenant_auth allocates it (together with its own per-request
// state) and attaches it with Attach.
type Request struct {
	// ID is the request ID (X-Request-ID).
	ID string
	// Identity is nil until the key is accepted.
	Identity *Identity
	// RateLimit is tenant_ratelimit's decision ("allowed", "denied_minute",
	// …) and RateLimitSource what made it ("redis", "local", …); empty
	// when no limiter ran. Logged with the request.
	RateLimit, RateLimitSource string
}

// MarshalLogObject adds the access-log fields: request_id and, once
// authenticated, organization_id, plan_tier and key_id, and the rate-limit
// decision. It is read when the access log is written, so fields set after
// Attach are logged too, with no further per-request log-field cost.
func (r *Request) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("request_id", r.ID)
	if id := r.Identity; id != nil {
		enc.AddString("organization_id", id.OrgID)
		enc.AddString("plan_tier", id.Plan)
		enc.AddString("key_id", id.KeyID)
	}
	if r.RateLimit != "" {
		enc.AddString("ratelimit", r.RateLimit)
		enc.AddString("ratelimit_source", r.RateLimitSource)
	}
	return nil
}

// RequestFromContext returns the tenant state tenant_auth attached, or nil.
func RequestFromContext(ctx context.Context) *Request {
	r, _ := caddyhttp.GetVar(ctx, requestVar).(*Request)
	return r
}

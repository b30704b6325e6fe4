package tenant

import (
	"context"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap/zapcore"
)

// Names of the Caddy request variables through which tenant_auth hands the
// request's identity and ID to later handlers. They live in Caddy's per-request
// variable table so that no request copy is needed to pass them on.
const (
	identityVar  = "tenant.identity"
	requestIDVar = "tenant.request_id"
)

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
// copies one.
type Identity struct {
	OrgID  string
	Plan   string
	KeyID  string
	Limits LimitOverrides

	// Pre-boxed copies of the strings above, so that setting them as
	// placeholders allocates nothing per request.
	orgAny, planAny, keyAny any
}

// NewIdentity builds an immutable identity.
func NewIdentity(orgID, plan, keyID string, limits LimitOverrides) *Identity {
	return &Identity{
		OrgID: orgID, Plan: plan, KeyID: keyID, Limits: limits,
		orgAny: orgID, planAny: plan, keyAny: keyID,
	}
}

// MarshalLogObject adds the identity's access-log fields. Used with zap.Inline
// so that one ExtraLogFields entry carries all of them.
func (id *Identity) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("organization_id", id.OrgID)
	enc.AddString("plan_tier", id.Plan)
	enc.AddString("key_id", id.KeyID)
	return nil
}

// FromContext returns the identity tenant_auth attached to the request, or nil.
func FromContext(ctx context.Context) *Identity {
	id, _ := caddyhttp.GetVar(ctx, identityVar).(*Identity)
	return id
}

// RequestIDFromContext returns the request ID tenant_auth assigned, or "".
func RequestIDFromContext(ctx context.Context) string {
	rid, _ := caddyhttp.GetVar(ctx, requestIDVar).(string)
	return rid
}

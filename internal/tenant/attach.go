package tenant

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Placeholders set by tenant_auth for later directives and log formats.
const (
	PlaceholderOrgID     = "tenant.org_id"
	PlaceholderPlan      = "tenant.plan"
	PlaceholderKeyID     = "tenant.key_id"
	PlaceholderRequestID = "tenant.request_id"

	// placeholderAuthUserID is what Caddy's access log reads for user_id.
	placeholderAuthUserID = "http.auth.user.id"
)

// Attach records the request's tenant state for later handlers (request
// variable), the {tenant.request_id} placeholder and the access log (one
// field that also covers the identity once Authenticated sets it).
func Attach(r *http.Request, tr *Request) {
	ctx := r.Context()
	caddyhttp.SetVar(ctx, requestVar, tr)
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(PlaceholderRequestID, (*requestIDValue)(tr))
	}
	if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Inline(tr))
	}
}

// Authenticated sets the identity of an attached request and its
// placeholders.
func Authenticated(r *http.Request, tr *Request, id *Identity) {
	tr.Identity = id
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(PlaceholderOrgID, (*orgIDValue)(id))
		repl.Set(PlaceholderPlan, (*planValue)(id))
		repl.Set(PlaceholderKeyID, (*keyIDValue)(id))
		repl.Set(placeholderAuthUserID, (*keyIDValue)(id))
	}
}

// Placeholder values. Caddy's replacer renders any fmt.Stringer, and a
// pointer fits in an interface without an allocation, so these views of the
// request's state set placeholders for free (a string would be boxed).
type (
	requestIDValue Request
	orgIDValue     Identity
	planValue      Identity
	keyIDValue     Identity
)

func (v *requestIDValue) String() string { return v.ID }
func (v *orgIDValue) String() string     { return v.OrgID }
func (v *planValue) String() string      { return v.Plan }
func (v *keyIDValue) String() string     { return v.KeyID }

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

// AttachRequestID records the request's ID for later handlers (request
// variable), Caddyfile placeholders and the access log.
func AttachRequestID(r *http.Request, rid string) {
	ctx := r.Context()
	boxed := any(rid)
	caddyhttp.SetVar(ctx, requestIDVar, boxed)
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(PlaceholderRequestID, boxed)
	}
	if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.String("request_id", rid))
	}
}

// AttachIdentity records the authenticated identity for later handlers,
// placeholders and the access log. It allocates nothing beyond the
// access-log field slot.
func AttachIdentity(r *http.Request, id *Identity) {
	ctx := r.Context()
	caddyhttp.SetVar(ctx, identityVar, id)
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(PlaceholderOrgID, id.orgAny)
		repl.Set(PlaceholderPlan, id.planAny)
		repl.Set(PlaceholderKeyID, id.keyAny)
		repl.Set(placeholderAuthUserID, id.keyAny)
	}
	if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Inline(id))
	}
}

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
		repl.Set(PlaceholderRequestID, tr.ID)
	}
	if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Inline(tr))
	}
}

// Authenticated sets the identity of an attached request and its
// placeholders. It allocates nothing: the identity's strings are pre-boxed.
func Authenticated(r *http.Request, tr *Request, id *Identity) {
	tr.Identity = id
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(PlaceholderOrgID, id.orgAny)
		repl.Set(PlaceholderPlan, id.planAny)
		repl.Set(PlaceholderKeyID, id.keyAny)
		repl.Set(placeholderAuthUserID, id.keyAny)
	}
}

// AttachIdentity attaches id to a request, creating its tenant state if
// tenant_auth has not; for handlers and tests that authenticate by other
// means.
func AttachIdentity(r *http.Request, id *Identity) {
	tr := RequestFromContext(r.Context())
	if tr == nil {
		tr = &Request{ID: r.Header.Get(RequestIDHeader)}
		Attach(r, tr)
	}
	Authenticated(r, tr, id)
}

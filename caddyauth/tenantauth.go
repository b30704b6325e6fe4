// Package caddyauth provides tenant_auth, Tenantgate's API-key
// authentication handler: Bearer parsing, key lookup by SHA-256 hash, the
// tenant identity headers and placeholders, and the JSON error envelope for
// everything that fails downstream of it (DESIGN §1–4).
package caddyauth

import (
	"context"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

func init() {
	caddy.RegisterModule(TenantAuth{})
}

// TenantAuth authenticates requests by API key (`Authorization: Bearer
// <key>`), attaches the tenant identity for later handlers and the backend,
// and renders every error raised downstream of it, panics included, as the
// JSON error envelope.
type TenantAuth struct {
	// Keys are static API keys, declared in the config. They are hashed at
	// provision time and work beside any database keys.
	Keys []StaticKey `json:"keys,omitempty"`

	// ForwardKey keeps the Authorization header on the request sent to the
	// backend. By default it is removed so backends never see tenants' keys.
	ForwardKey bool `json:"forward_key,omitempty"`

	static staticStore
	// dynamic is the key store consulted after the static keys (Postgres);
	// nil when none is configured.
	dynamic KeyStore
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (TenantAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.tenant_auth",
		New: func() caddy.Module { return new(TenantAuth) },
	}
}

// Provision hashes the static keys and sets up the key stores.
func (a *TenantAuth) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	static, err := newStaticStore(a.Keys)
	if err != nil {
		return fmt.Errorf("tenant_auth: %w", err)
	}
	a.static = static
	return nil
}

// lookup resolves a key hash: static keys first (no lock, no allocation),
// then the dynamic store.
func (a *TenantAuth) lookup(ctx context.Context, h KeyHash) (*tenant.Identity, error) {
	if id, ok := a.static[h]; ok {
		return id, nil
	}
	if a.dynamic == nil {
		return nil, ErrUnknownKey
	}
	return a.dynamic.Lookup(ctx, h)
}

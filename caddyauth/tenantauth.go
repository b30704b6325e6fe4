// Package caddyauth provides tenant_auth, Tenantgate's API-key
// authentication handler: Bearer parsing, key lookup by SHA-256 hash, the
// tenant identity headers and placeholders, and the JSON error envelope for
// everything that fails downstream of it.
package caddyauth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/sharedmetrics"
	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/keystore"
)

func init() {
	caddy.RegisterModule(TenantAuth{})
}

// TenantAuth authenticates requests by API key (`Authorization: Bearer
// <key>`), attaches the tenant identity for later handlers and the backend,
// and renders every error raised downstream of it, panics included, as the
// JSON error envelope.
type TenantAuth struct {
	// Keys are static API keys, each with its key_hash (what the Caddyfile
	// adapter writes) or its key (a literal, or a placeholder such as
	// {env.OPS_KEY} expanded at provision). They work beside any database
	// keys. Default: none.
	Keys []StaticKey `json:"keys,omitempty"`

	// KeyList is more static keys in the VALID_API_KEYS format,
	// "key:org_id:plan[,key:org_id:plan…]", usually a placeholder such as
	// {env.VALID_API_KEYS}: it is expanded and parsed at provision, in the
	// environment of the running server, so the keys themselves never
	// reach the stored config and a reload from another shell keeps them.
	// A list that expands to nothing holds no keys. Default: none.
	KeyList string `json:"key_list,omitempty"`

	// DemoKeys are keys for trying the gateway out, such as the published
	// sk_test_abc123. They are accepted only while the handler has no
	// other keys at all: no database (database_url empty once expanded)
	// and no keys or key_list entries. So setting DATABASE_URL or
	// VALID_API_KEYS switches them off. Default: none.
	DemoKeys []StaticKey `json:"demo_keys,omitempty"`

	// ForwardKey keeps the Authorization header on the request sent to the
	// backend. By default it is removed so backends never see tenants'
	// keys. Default: false.
	ForwardKey bool `json:"forward_key,omitempty"`

	// DatabaseURL is the PostgreSQL connection string (URL or key=value
	// form) of the key database created by `caddy tenant migrate`.
	// Placeholders such as {env.DATABASE_URL} are expanded at provision in
	// the running server's environment; with one, the password never
	// reaches the stored config. The connection pool, key cache and change
	// listener are shared by every config with the same URL and survive
	// reloads. Default: none (no database: static keys only, also when the
	// value expands to nothing).
	DatabaseURL string `json:"database_url,omitempty"`

	// CacheTTL is how long a database key stays cached before it is read
	// again. Revocations apply at once regardless (LISTEN/NOTIFY). While
	// PostgreSQL is unreachable, cached keys are served past this TTL.
	// Default: 15m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// NegativeCacheTTL is how long an unknown, revoked, expired or disabled
	// key is remembered as refused, so repeated bad keys do not reach
	// PostgreSQL. Default: 30s.
	NegativeCacheTTL caddy.Duration `json:"negative_cache_ttl,omitempty"`

	// RefreshInterval is how often every cached key is read again from
	// PostgreSQL in the background. Default: 15m.
	RefreshInterval caddy.Duration `json:"refresh_interval,omitempty"`

	// CacheSize bounds the number of cached database keys (rounded up to a
	// multiple of 64). Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`

	// NegativeCacheSize bounds the number of cached refusals (rounded up to
	// a multiple of 64). Default: 10000.
	NegativeCacheSize int `json:"negative_cache_size,omitempty"`

	static staticStore
	// dynamic is the key store consulted after the static keys (Postgres);
	// nil when none is configured.
	dynamic keyStore
	store   *keystore.Handle // this config's use of the shared PostgreSQL store
	metrics *authMetrics
	logger  *zap.Logger
}

// keyStore resolves a key hash to the identity it acts for: the seam
// between tenant_auth and its database keys (keystore.Handle), which the
// tests replace. Lookup returns the identity, or one of
// keystore.ErrUnknownKey, ErrRevokedKey, ErrExpiredKey, ErrDisabledOrg (all
// 403), or an error wrapping keystore.ErrStoreUnavailable (503).
type keyStore interface {
	Lookup(ctx context.Context, hash keystore.KeyHash) (*tenant.Identity, error)
}

// Interface guard
var _ keyStore = (*keystore.Handle)(nil)

// CaddyModule returns the Caddy module information.
func (TenantAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.tenant_auth",
		New: func() caddy.Module { return new(TenantAuth) },
	}
}

// Provision expands and hashes the static keys and sets up the key stores.
func (a *TenantAuth) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	var err error
	if a.metrics, err = sharedmetrics.Acquire(metricsName, ctx.GetMetricsRegistry(), newAuthMetrics); err != nil {
		return fmt.Errorf("tenant_auth: %w", err)
	}
	// Unknown placeholders stay as written: braces are legal in a
	// password of the key=value form.
	repl := caddy.NewReplacer()
	dsn := repl.ReplaceKnown(a.DatabaseURL, "")
	if err := a.provisionStaticKeys(repl, dsn != ""); err != nil {
		return fmt.Errorf("tenant_auth: %w", err)
	}
	registry, err := tenant.RegistryFromContext(ctx)
	if err != nil {
		return fmt.Errorf("tenant_auth: %w", err)
	}
	// The rate limiter after this handler checks that it defines these
	// plans, so a static key on an unknown plan fails `caddy validate`.
	registry.RequirePlans("a static key of tenant_auth", tenant.PlansOf(a.static)...)
	if dsn == "" {
		return nil
	}
	a.store, err = keystore.Acquire(keystore.Config{
		DatabaseURL: dsn,
		Settings: keystore.Settings{
			CacheTTL:          time.Duration(a.CacheTTL),
			NegativeCacheTTL:  time.Duration(a.NegativeCacheTTL),
			RefreshInterval:   time.Duration(a.RefreshInterval),
			CacheSize:         a.CacheSize,
			NegativeCacheSize: a.NegativeCacheSize,
			Logger:            a.logger,
		},
		StaticKeys: len(a.static) > 0,
		Metrics:    ctx.GetMetricsRegistry(),
	})
	if err != nil {
		return fmt.Errorf("tenant_auth: %w", err)
	}
	a.dynamic = a.store
	registry.RegisterDependency("postgres", a.store.Target(), a.store.Health)
	// The shared store takes this config's settings only once the config
	// is committed: a config that fails or is dropped changes nothing.
	registry.OnStart(a.store.Activate)
	return nil
}

// provisionStaticKeys builds the static store from keys and key_list, or
// from demo_keys when there is neither those nor a database, and warns
// about demo-style keys accepted beside a database.
func (a *TenantAuth) provisionStaticKeys(repl *caddy.Replacer, withDatabase bool) error {
	keys, err := resolveStaticKeys(repl, "static key", a.Keys)
	if err != nil {
		return err
	}
	if a.KeyList != "" {
		listed, err := resolveKeyList(repl, a.KeyList)
		if err != nil {
			return err
		}
		keys = append(keys, listed...)
	}
	demo, err := resolveStaticKeys(repl, "demo key", a.DemoKeys)
	if err != nil {
		return err
	}
	switch {
	case len(demo) > 0 && !withDatabase && len(keys) == 0:
		keys = demo
		a.logger.Info("accepting the demo keys: no database and no other keys are configured",
			zap.Strings("key_ids", staticKeyIDs(demo)))
	case len(demo) > 0:
		a.logger.Info("demo keys are off: a database or other keys are configured",
			zap.Strings("key_ids", staticKeyIDs(demo)))
	}
	if withDatabase {
		for _, k := range keys {
			if k.demoStyle {
				a.logger.Warn("a demo-style static key (the published demo key, or sk_test_ and not made by `caddy tenant key create`) is accepted beside the database: remove it in production",
					zap.String("key_id", staticKeyID(k.hash)), zap.String("organization_id", k.orgID))
			}
		}
	}
	a.static, err = newStaticStore(keys)
	return err
}

// staticKeyIDs lists the keys' IDs for logs.
func staticKeyIDs(keys []resolvedKey) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = staticKeyID(k.hash)
	}
	return ids
}

// Cleanup releases this config's use of the shared store and metrics.
func (a *TenantAuth) Cleanup() error {
	var errs []error
	if a.store != nil {
		errs = append(errs, a.store.Release())
	}
	if a.metrics != nil {
		errs = append(errs, sharedmetrics.Release(metricsName))
	}
	return errors.Join(errs...)
}

// lookup resolves a token: static keys first (no lock, no allocation),
// then the dynamic store. Tokens that cannot be database keys are refused
// without asking it.
func (a *TenantAuth) lookup(ctx context.Context, token string) (*tenant.Identity, error) {
	h := keystore.HashKey(token)
	if id, ok := a.static[h]; ok {
		return id, nil
	}
	if a.dynamic == nil || !keystore.WellFormedKey(token) {
		return nil, keystore.ErrUnknownKey
	}
	return a.dynamic.Lookup(ctx, h)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*TenantAuth)(nil)
	_ caddy.CleanerUpper          = (*TenantAuth)(nil)
	_ caddyhttp.MiddlewareHandler = (*TenantAuth)(nil)
	_ caddyfile.Unmarshaler       = (*TenantAuth)(nil)
)

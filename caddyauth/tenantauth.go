// Package caddyauth provides tenant_auth, Tenantgate's API-key
// authentication handler: Bearer parsing, key lookup by SHA-256 hash, the
// tenant identity headers and placeholders, and the JSON error envelope for
// everything that fails downstream of it (DESIGN §1–4).
package caddyauth

import (
	"context"
	"fmt"
	"time"

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

	// DatabaseURL is the PostgreSQL connection string (URL or key=value
	// form) of the key database created by `caddy tenant migrate`.
	// Placeholders such as {env.DATABASE_URL} are expanded. Empty: static
	// keys only. The connection pool, key cache and change listener are
	// shared by every config with the same URL and survive reloads.
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
	dynamic KeyStore
	dsn     string // expanded DatabaseURL; the key of the shared store
	metrics *authMetrics
	logger  *zap.Logger
}

// Defaults of the database key cache.
const (
	DefaultCacheTTL          = 15 * time.Minute
	DefaultNegativeCacheTTL  = 30 * time.Second
	DefaultRefreshInterval   = 15 * time.Minute
	DefaultCacheSize         = 100_000
	DefaultNegativeCacheSize = 10_000
)

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
	if err := tenant.RequirePlans(ctx, "a static key of tenant_auth", tenant.PlansOf(static)...); err != nil {
		return fmt.Errorf("tenant_auth: %w", err)
	}
	if a.metrics, err = newAuthMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("tenant_auth: registering metrics: %w", err)
	}
	settings, err := a.pgSettings()
	if err != nil {
		return fmt.Errorf("tenant_auth: %w", err)
	}
	a.dsn = caddy.NewReplacer().ReplaceKnown(a.DatabaseURL, "")
	if a.dsn == "" {
		return nil
	}
	backend, err := acquirePGBackend(a.dsn, settings)
	if err != nil {
		a.dsn = ""
		return fmt.Errorf("tenant_auth: %w", err)
	}
	a.dynamic = pgKeys{pgBackend: backend, metrics: a.metrics}
	health, err := tenant.HealthFromContext(ctx)
	if err != nil {
		return fmt.Errorf("tenant_auth: %w", err)
	}
	health.Register("postgres", backend.health)
	return nil
}

// pgSettings validates the cache settings and fills in the defaults.
func (a *TenantAuth) pgSettings() (pgSettings, error) {
	s := pgSettings{
		cacheTTL:         orDefault(time.Duration(a.CacheTTL), DefaultCacheTTL),
		negativeCacheTTL: orDefault(time.Duration(a.NegativeCacheTTL), DefaultNegativeCacheTTL),
		refreshInterval:  orDefault(time.Duration(a.RefreshInterval), DefaultRefreshInterval),
		cacheSize:        orDefault(a.CacheSize, DefaultCacheSize),
		negativeSize:     orDefault(a.NegativeCacheSize, DefaultNegativeCacheSize),
	}
	switch {
	case a.CacheTTL < 0, a.NegativeCacheTTL < 0, a.RefreshInterval < 0:
		return s, fmt.Errorf("cache_ttl, negative_cache_ttl and refresh_interval must be positive")
	case a.CacheSize < 0, a.NegativeCacheSize < 0, a.CacheSize > maxCacheSize, a.NegativeCacheSize > maxCacheSize:
		return s, fmt.Errorf("cache_size and negative_cache_size must be from 1 to %d", maxCacheSize)
	}
	return s, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Cleanup releases this config's use of the shared Postgres store.
func (a *TenantAuth) Cleanup() error {
	if a.dsn != "" {
		releasePGBackend(a.dsn)
	}
	return nil
}

// lookup resolves a token: static keys first (no lock, no allocation),
// then the dynamic store. Tokens that cannot be database keys are refused
// without asking it.
func (a *TenantAuth) lookup(ctx context.Context, token string) (*tenant.Identity, error) {
	h := HashKey(token)
	if id, ok := a.static[h]; ok {
		return id, nil
	}
	if a.dynamic == nil || !WellFormedKey(token) {
		return nil, ErrUnknownKey
	}
	return a.dynamic.Lookup(ctx, h)
}

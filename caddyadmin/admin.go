// Package caddyadmin provides tenant_admin (http.handlers.tenant_admin),
// Tenantgate's operator API and dashboard: organizations, API keys, usage
// and live limits over HTTP, with the same store operations as `caddy
// tenant` (package keystore); and tenant_usage_report
// (http.handlers.tenant_usage_report), the tenants' own usage and limits.
//
// The package reads as its concepts: admin.go (the tenant_admin module and
// its token) and listen.go (refusing a tokenless API beyond loopback);
// routes.go (the route table, the OpenAPI document that describes it, and
// how an operation runs and is audited) and request.go (bodies, parameters
// and error answers); the operations orgs.go, keys.go, limits.go and
// usage.go; idempotency.go (Idempotency-Key); db.go (the database pools
// and what store errors answer); dashboard.go; report.go
// (tenant_usage_report); caddyfile.go.
package caddyadmin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

func init() {
	caddy.RegisterModule(new(TenantAdmin))
}

// moduleName is the handler's name in the config's JSON.
const moduleName = "tenant_admin"

// Defaults and bounds.
const (
	// defaultIdempotencyTTL is how long a POST's response is kept for
	// retries with the same Idempotency-Key.
	defaultIdempotencyTTL = 24 * time.Hour
	// minTokenLen is the shortest admin token accepted.
	minTokenLen = 16
	// maxBodyBytes bounds a request body.
	maxBodyBytes = 64 << 10
	// requestTimeout bounds one request's database work.
	requestTimeout = 10 * time.Second
)

// TenantAdmin serves the admin API (JSON under /v1/) and the dashboard
// (at its root) for managing organizations and API keys, reading usage
// and the limiter's live state. Mount it at the root of its own site or
// under a path with handle_path (which strips the prefix).
//
// Every /v1/ route but /v1/openapi.json requires `Authorization: Bearer
// <token>` when a token is set; without one, the handler refuses to start
// unless its server listens on loopback only.
type TenantAdmin struct {
	// Token is the admin token that API requests present as a Bearer
	// token, compared in constant time. Placeholders such as
	// {env.ADMIN_TOKEN} are expanded. At least 16 characters. Default:
	// none (no authentication, which the handler allows only on a server
	// that listens on loopback only).
	Token string `json:"token,omitempty"`

	// DatabaseURL is the PostgreSQL key database (the one tenant_auth
	// reads; `caddy tenant migrate` creates its schema): a connection
	// string, URL or key=value form. Placeholders such as
	// {env.DATABASE_URL} are expanded. Default: none (the organization and
	// key routes answer 503).
	DatabaseURL string `json:"database_url,omitempty"`

	// UsageDatabaseURL is the usage database the usage routes read, when
	// it is not the key database of database_url. Placeholders are
	// expanded. Default: none (what this process's usage pipeline writes
	// to: its memory store or its postgres sink's database; else the
	// database of database_url).
	UsageDatabaseURL string `json:"usage_database_url,omitempty"`

	// IdempotencyTTL is how long the response of a POST carrying an
	// Idempotency-Key is kept (sealed) for retries. Default: 24h.
	IdempotencyTTL caddy.Duration `json:"idempotency_ttl,omitempty"`

	token    string   // expanded Token
	tokenID  string   // first 8 hex of sha256(token), for the audit log
	tokenSum [32]byte // sha256(token), compared in constant time
	pool     *pgxpool.Pool
	poolKey  string
	registry *tenant.Registry
	usage    *usageSource
	mux      *http.ServeMux
	logger   *zap.Logger
	audit    *zap.Logger
	sweptAt  atomic.Int64 // Unix s of the last sweep of expired idempotency records
}

// CaddyModule returns the Caddy module information.
func (*TenantAdmin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers." + moduleName,
		New: func() caddy.Module { return new(TenantAdmin) },
	}
}

// Provision checks the token against where the handler listens, connects
// the key database and builds the routes.
func (a *TenantAdmin) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.audit = a.logger.Named("audit")
	if err := a.Validate(); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	a.token = repl.ReplaceKnown(a.Token, "")
	switch {
	case a.token == "":
		if err := checkTokenless(ctx); err != nil {
			return err
		}
		a.logger.Warn("tenant_admin has no token: anyone who can connect to its loopback address can manage keys")
	case len(a.token) < minTokenLen:
		return fmt.Errorf("tenant_admin: token must be at least %d characters, got %d", minTokenLen, len(a.token))
	default:
		a.tokenSum = sha256.Sum256([]byte(a.token))
		a.tokenID = hex.EncodeToString(a.tokenSum[:4])
	}
	if a.IdempotencyTTL == 0 {
		a.IdempotencyTTL = caddy.Duration(defaultIdempotencyTTL)
	}
	var err error
	if a.registry, err = tenant.RegistryFromContext(ctx); err != nil {
		return fmt.Errorf("tenant_admin: %w", err)
	}
	if dsn := repl.ReplaceKnown(a.DatabaseURL, ""); dsn != "" {
		if a.pool, err = acquirePool(dsn); err != nil {
			return fmt.Errorf("tenant_admin: database_url: %w", err)
		}
		a.poolKey = dsn
	}
	if a.usage, err = newUsageSource(repl.ReplaceKnown(a.UsageDatabaseURL, ""), a.pool); err != nil {
		return fmt.Errorf("tenant_admin: %w", err)
	}
	a.mux = newMux(a)
	return nil
}

// Validate checks the configuration.
func (a *TenantAdmin) Validate() error {
	if a.IdempotencyTTL < 0 {
		return errors.New("tenant_admin: idempotency_ttl must be positive")
	}
	return nil
}

// Cleanup releases the database pools.
func (a *TenantAdmin) Cleanup() error {
	var errs []error
	if a.pool != nil {
		errs = append(errs, releasePool(a.poolKey))
	}
	if a.usage != nil {
		errs = append(errs, a.usage.release())
	}
	return errors.Join(errs...)
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. It answers every
// request itself (it never calls next).
func (a *TenantAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	rid := tenant.RequestIDFor(r.Header.Get(tenant.RequestIDHeader))
	w.Header().Set(tenant.RequestIDHeader, rid)
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, rid))
	if needsToken(r.URL.Path) && !a.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tenantgate-admin"`)
		writeError(w, r, &apiError{status: http.StatusUnauthorized, msg: "missing or invalid admin token: send the header Authorization: Bearer followed by the admin token"})
		return nil
	}
	a.mux.ServeHTTP(w, r)
	return nil
}

// needsToken reports whether a path is behind the token: the API, but not
// its description nor the dashboard's static files (the page asks the
// operator for the token, then calls the API with it).
func needsToken(path string) bool {
	return (path == "/v1" || strings.HasPrefix(path, "/v1/")) && path != openAPIPath
}

// authorized checks the Bearer token in constant time (over the SHA-256 of
// both sides, so their lengths leak nothing either).
func (a *TenantAdmin) authorized(r *http.Request) bool {
	if a.token == "" {
		return true
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) == 1
}

// actor names who made a call, for the audit log: the token's ID (never
// the token), or the remote address when there is no token.
func (a *TenantAdmin) actor(r *http.Request) string {
	if a.tokenID != "" {
		return "token:" + a.tokenID
	}
	return "remote:" + r.RemoteAddr
}

type requestIDKey struct{}

// requestID is the request's ID (X-Request-ID), set by ServeHTTP.
func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

// Interface guards
var (
	_ caddy.Provisioner           = (*TenantAdmin)(nil)
	_ caddy.Validator             = (*TenantAdmin)(nil)
	_ caddy.CleanerUpper          = (*TenantAdmin)(nil)
	_ caddyhttp.MiddlewareHandler = (*TenantAdmin)(nil)
)

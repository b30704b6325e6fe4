// Package caddyratelimit provides tenant_ratelimit, Tenantgate's
// per-organization rate limiter (DESIGN §5): a token bucket (capacity
// per_minute + burst, refilled continuously) and a UTC calendar-day quota,
// decided atomically in one Redis round trip shared by every gateway, or in
// process when no Redis is configured; the X-RateLimit-* and IETF
// RateLimit headers; and a failure policy for when Redis fails.
package caddyratelimit

import (
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

func init() {
	caddy.RegisterModule(RateLimit{})
}

// DefaultRedisTimeout bounds each Redis call when redis_timeout is not set.
const DefaultRedisTimeout = 100 * time.Millisecond

// RateLimit limits requests per organization. It must run after
// tenant_auth, which identifies the organization and its plan; a request
// without an identity, or whose plan has no limits here, is answered 500
// (never passed through unlimited).
type RateLimit struct {
	// RedisAddr is the Redis the limits are kept in, shared by every
	// gateway using it: "host:port"; several comma-separated addresses for
	// a Redis Cluster; or a redis:// or rediss:// (TLS) URL, which may name
	// a Sentinel master with ?master_name=NAME&addr=HOST:PORT. Empty: the
	// limiter runs in process (limits per gateway instance).
	RedisAddr string `json:"redis_addr,omitempty"`

	// RedisPassword authenticates to Redis (AUTH). Overrides a password in
	// a redis:// URL.
	RedisPassword string `json:"redis_password,omitempty"`

	// RedisDB selects the Redis database (default 0). Overrides the URL's.
	RedisDB int `json:"redis_db,omitempty"`

	// RedisTimeout bounds each Redis call, connecting included. Default 100ms.
	RedisTimeout caddy.Duration `json:"redis_timeout,omitempty"`

	// OnRedisError is what happens while Redis fails: "local" (default)
	// decides in process, "allow" admits every request, "deny" answers 503.
	// Redis is retried with backoff, one request at a time, and takes over
	// again as soon as it answers.
	OnRedisError string `json:"on_redis_error,omitempty"`

	// Plans are the plan tiers and their limits. When none are given, the
	// defaults apply: basic 100/min, 10 000/day, burst 50; premium 1 000,
	// 100 000, burst 500; enterprise 10 000, 1 000 000, burst 5 000.
	Plans []Plan `json:"plans,omitempty"`

	limiter  Limiter
	policies *policies
	headers  *headerWriter
	metrics  *metrics
	logger   *zap.Logger

	local    *LocalLimiter // from localPool
	redisKey string        // key in redisPool, when Redis is used
	shared   *sharedRedis  // the pooled Redis client, when Redis is used
	timeout  time.Duration // effective redis_timeout
}

// CaddyModule returns the Caddy module information.
func (RateLimit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.tenant_ratelimit",
		New: func() caddy.Module { return new(RateLimit) },
	}
}

// Provision sets up the plans, metrics, limiters and health check.
func (rl *RateLimit) Provision(ctx caddy.Context) error {
	rl.logger = ctx.Logger()
	rl.headers = new(headerWriter)
	if err := rl.Validate(); err != nil {
		return err
	}
	plans := rl.Plans
	if len(plans) == 0 {
		plans = DefaultPlans()
	}
	rl.timeout = time.Duration(rl.RedisTimeout)
	if rl.timeout == 0 {
		rl.timeout = DefaultRedisTimeout
	}

	m, _, err := metricsPool.LoadOrNew(metricsPoolKey, func() (caddy.Destructor, error) { return newMetrics(), nil })
	if err != nil {
		return err
	}
	rl.metrics = m.(*metrics)
	if err := rl.metrics.register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("tenant_ratelimit: registering metrics: %w", err)
	}
	rl.policies = newPolicies(plans, rl.metrics, rl.logger)

	local, err := loadLocal()
	if err != nil {
		return err
	}
	rl.local = local
	// The admin API and the tenants' usage report read the live state
	// through the config's limiter registry (peek.go). A context without
	// a config (a unit test) has no registry and nobody to read it.
	switch limiters, err := tenant.LimitersFromContext(ctx); {
	case err == nil:
		limiters.Register(rl)
	case !errors.Is(err, tenant.ErrNoConfig):
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	if rl.RedisAddr == "" {
		rl.limiter = local
		rl.logger.Info("rate limiter in process (no redis_addr): limits apply per gateway instance")
		return nil
	}
	return rl.provisionRedis(ctx, local)
}

// provisionRedis sets up the Redis limiter with its failure policy.
func (rl *RateLimit) provisionRedis(ctx caddy.Context, local *LocalLimiter) error {
	opts, err := redisConfig{addr: rl.RedisAddr, password: rl.RedisPassword, db: rl.RedisDB}.options()
	if err != nil {
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	rl.redisKey = poolKey(opts)
	v, _, err := redisPool.LoadOrNew(rl.redisKey, func() (caddy.Destructor, error) {
		return newSharedRedis(opts, rl.metrics, rl.logger), nil
	})
	if err != nil {
		return err
	}
	rl.shared = v.(*sharedRedis)
	rl.shared.logger.Store(rl.logger)
	onError := rl.OnRedisError
	if onError == "" {
		onError = OnErrorLocal
	}
	rl.limiter = &failoverLimiter{
		redis:   rl.shared.limiter,
		breaker: rl.shared.breaker,
		denied:  rl.shared.denied,
		local:   local,
		onError: onError,
		timeout: rl.timeout,
		m:       rl.metrics,
		clock:   time.Now,
	}
	health, err := tenant.HealthFromContext(ctx)
	if err != nil {
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	health.Register("redis", rl.redisHealth(onError))
	return nil
}

// Validate checks the configuration.
func (rl *RateLimit) Validate() error {
	if rl.RedisTimeout < 0 {
		return fmt.Errorf("tenant_ratelimit: redis_timeout must be positive, got %s", time.Duration(rl.RedisTimeout))
	}
	if rl.RedisDB < 0 {
		return fmt.Errorf("tenant_ratelimit: redis_db must be a non-negative integer, got %d", rl.RedisDB)
	}
	switch rl.OnRedisError {
	case "", OnErrorLocal, OnErrorAllow, OnErrorDeny:
	default:
		return fmt.Errorf("tenant_ratelimit: on_redis_error must be local, allow or deny, got %q", rl.OnRedisError)
	}
	seen := make(map[string]bool, len(rl.Plans))
	for _, p := range rl.Plans {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("tenant_ratelimit: %w", err)
		}
		if seen[p.Name] {
			return fmt.Errorf("tenant_ratelimit: plan %s declared more than once", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

// Cleanup releases the pooled resources (the pool closes them once no
// config uses them any more).
func (rl *RateLimit) Cleanup() error {
	if rl.redisKey != "" {
		if _, err := redisPool.Delete(rl.redisKey); err != nil {
			return err
		}
	}
	if rl.metrics != nil {
		if _, err := metricsPool.Delete(metricsPoolKey); err != nil {
			return err
		}
	}
	if rl.local != nil {
		_, err := localPool.Delete(localPoolKey)
		return err
	}
	return nil
}

// localPool shares the in-process limiter across reloads, so a reload
// keeps every organization's state.
var localPool = caddy.NewUsagePool()

const localPoolKey = "local"

func loadLocal() (*LocalLimiter, error) {
	v, _, err := localPool.LoadOrNew(localPoolKey, func() (caddy.Destructor, error) {
		return NewLocalLimiter(DefaultMaxLocalOrgs, nil), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*LocalLimiter), nil
}

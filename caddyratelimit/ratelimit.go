// Package caddyratelimit provides tenant_ratelimit, Tenantgate's
// per-organization rate limiter: a token bucket (capacity per_minute +
// burst, refilled continuously) and a UTC calendar-day quota, decided
// atomically in one Redis round trip shared by every gateway, or in process
// when no Redis is configured; the X-RateLimit-* and IETF RateLimit
// headers; and a failure policy for when Redis fails.
//
// The package reads as its concepts: plans.go (plans, limits and the
// policy a request is decided with), bucket.go (the algorithm and its
// decisions), local.go (the in-process limiter), redis.go (the Redis client
// and limiter.lua), failover.go (the breaker and the on_redis_error policy
// around Redis), headers.go, metrics.go, caddyfile.go and this file (the
// module).
package caddyratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/caddyfileutil"
	"github.com/tenantgate/tenantgate/internal/sharedmetrics"
	"github.com/tenantgate/tenantgate/internal/tenant"
)

func init() {
	caddy.RegisterModule(RateLimit{})
}

// defaultRedisTimeout bounds each Redis call when redis_timeout is not set.
const defaultRedisTimeout = 100 * time.Millisecond

// RateLimit limits requests per organization. It must run after
// tenant_auth, which identifies the organization and its plan; a request
// without an identity, or whose plan has no limits here, is answered 500
// (never passed through unlimited).
type RateLimit struct {
	// RedisAddr is the Redis the limits are kept in, shared by every
	// gateway using it: "host:port"; several comma-separated addresses for
	// a Redis Cluster; or a redis:// or rediss:// (TLS) URL, which may name
	// a Sentinel master with ?master_name=NAME&addr=HOST:PORT. Placeholders
	// such as {env.REDIS_ADDR} are expanded when the config is loaded, in
	// the server's environment. Default: none (the limiter runs in
	// process, with limits per gateway instance; also when the value
	// expands to nothing).
	RedisAddr string `json:"redis_addr,omitempty"`

	// RedisPassword authenticates to Redis (AUTH). Overrides a password in
	// a redis:// URL. Placeholders such as {env.REDIS_PASSWORD} are
	// expanded when the config is loaded, so the password need not be
	// written into the config. Default: none.
	RedisPassword string `json:"redis_password,omitempty"`

	// RedisDB selects the Redis database: a number, or a placeholder such
	// as {env.REDIS_DB} expanded when the config is loaded. Overrides the
	// URL's. Default: 0.
	RedisDB caddyhttp.WeakString `json:"redis_db,omitempty"`

	// RedisTimeout bounds each Redis call, connecting included. Default: 100ms.
	RedisTimeout caddy.Duration `json:"redis_timeout,omitempty"`

	// OnRedisError is what happens while Redis fails: "local" decides in
	// process, "allow" admits every request, "deny" answers 503. Redis is
	// retried with backoff (at most a second apart), one request at a time,
	// and takes over again as soon as it answers.
	//
	// Under "local", each gateway continues from the state Redis last
	// reported to it for each organization (tokens left, requests used
	// today), so an outage grants no fresh quota; decisions made during the
	// outage count only on the gateway that made them. A call that timed
	// out after Redis had run the script may have charged the organization
	// although the request was then decided by on_redis_error: such a
	// request can count both in Redis and in the fallback. Default: local.
	OnRedisError string `json:"on_redis_error,omitempty"`

	// Plans are the plan tiers and their limits. Every plan a static key of
	// the tenant_auth in front of this handler uses, and every plan listed
	// in the TENANT_PLANS environment variable, must be one of them, or the
	// config is refused. Default: the built-in plans basic (100/min,
	// 10 000/day, burst 50), premium (1 000, 100 000, burst 500) and
	// enterprise (10 000, 1 000 000, burst 5 000).
	Plans []Plan `json:"plans,omitempty"`

	limiter  limiter
	policies *policies
	headers  *headerWriter
	metrics  *metrics
	logger   *zap.Logger

	local    *localLimiter // from localPool, when Redis is not used
	redisKey string        // key in redisPool, when Redis is used
	shared   *sharedRedis  // the pooled Redis client, when Redis is used
	timeout  time.Duration // effective redis_timeout
}

// limiter decides whether one request of an organization may pass under a
// policy, taking one token and one daily unit when it does. The handler
// uses the Redis limiter (shared by every gateway on one Redis, wrapped in
// the failure policy) or the in-process one.
type limiter interface {
	Allow(ctx context.Context, orgID string, p *policy) (decision, error)
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
		plans = defaultPlans()
	}
	registry, err := tenant.RegistryFromContext(ctx)
	if err != nil {
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	if err := checkRequiredPlans(registry, plans); err != nil {
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	rl.timeout = time.Duration(rl.RedisTimeout)
	if rl.timeout == 0 {
		rl.timeout = defaultRedisTimeout
	}

	if rl.metrics, err = sharedmetrics.Acquire(metricsName, ctx.GetMetricsRegistry(), newMetrics); err != nil {
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	rl.policies = newPolicies(plans, rl.metrics, rl.logger)

	// The admin API and the tenants' usage report read the live state
	// through the config's registry (peek.go).
	registry.RegisterLimiter(rl)

	opts, err := rl.expandRedisSettings(caddy.NewReplacer())
	if err != nil {
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	if opts != nil {
		return rl.provisionRedis(ctx, registry, opts)
	}
	if rl.local, err = loadLocal(); err != nil {
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	rl.limiter = rl.local
	rl.logger.Info("rate limiter in process (no redis_addr): limits apply per gateway instance")
	return nil
}

// expandRedisSettings expands the placeholders of redis_addr,
// redis_password and redis_db with repl and returns the Redis client
// options, or nil when redis_addr is empty (the limiter runs in process).
// An error names the field and, when it held placeholders, what it was
// expanded from (never the password).
func (rl *RateLimit) expandRedisSettings(repl *caddy.Replacer) (*redis.UniversalOptions, error) {
	from := func(raw, expanded string) string {
		if raw == expanded {
			return ""
		}
		return " (from " + raw + ")"
	}
	dbRaw := string(rl.RedisDB)
	dbValue := strings.TrimSpace(repl.ReplaceKnown(dbRaw, ""))
	db, err := parseRedisDB(dbValue)
	if err != nil {
		return nil, fmt.Errorf("redis_db: %w%s", err, from(dbRaw, dbValue))
	}
	addr := strings.TrimSpace(repl.ReplaceKnown(rl.RedisAddr, ""))
	if addr == "" {
		return nil, nil
	}
	opts, err := redisConfig{addr: addr, password: repl.ReplaceKnown(rl.RedisPassword, ""), db: db}.options()
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, from(rl.RedisAddr, addr))
	}
	return opts, nil
}

// checkRedisSettings checks redis_addr and redis_db as far as they are
// known before the config is loaded: a field holding a placeholder is
// checked once expanded, at provision.
func (rl *RateLimit) checkRedisSettings() error {
	known := *rl
	if caddyfileutil.HasPlaceholder(known.RedisAddr) {
		known.RedisAddr = ""
	}
	if caddyfileutil.HasPlaceholder(string(known.RedisDB)) {
		known.RedisDB = ""
	}
	_, err := known.expandRedisSettings(caddy.NewEmptyReplacer())
	return err
}

// provisionRedis sets up the Redis limiter with its failure policy, and
// registers Redis's readiness check.
func (rl *RateLimit) provisionRedis(ctx caddy.Context, registry *tenant.Registry, opts *redis.UniversalOptions) error {
	rl.redisKey = poolKey(opts)
	v, _, err := redisPool.LoadOrNew(rl.redisKey, func() (caddy.Destructor, error) {
		return newSharedRedis(opts, rl.metrics, rl.logger), nil
	})
	if err != nil {
		return fmt.Errorf("tenant_ratelimit: sharing the Redis client: %w", err)
	}
	rl.shared = v.(*sharedRedis)
	rl.shared.logger.Store(rl.logger)
	onError := rl.OnRedisError
	if onError == "" {
		onError = onErrorLocal
	}
	rl.limiter = &failoverLimiter{
		redis:   rl.shared.limiter,
		breaker: rl.shared.breaker,
		denied:  rl.shared.denied,
		local:   rl.shared.fallback,
		onError: onError,
		timeout: rl.timeout,
		m:       rl.metrics,
		clock:   time.Now,
	}
	// Named after the server, never its credentials, so that handlers on
	// different Redis servers report as separate checks.
	registry.RegisterDependency("redis", redisTarget(opts), rl.redisHealth(onError))
	// An unreachable Redis is logged when the gateway starts, not at its
	// first request. In the background: provisioning never waits for Redis.
	go rl.probeRedis(ctx, onError)
	return nil
}

// Validate checks the configuration.
func (rl *RateLimit) Validate() error {
	if rl.RedisTimeout < 0 {
		return fmt.Errorf("tenant_ratelimit: redis_timeout must be positive, got %s", time.Duration(rl.RedisTimeout))
	}
	if err := rl.checkRedisSettings(); err != nil {
		return fmt.Errorf("tenant_ratelimit: %w", err)
	}
	switch rl.OnRedisError {
	case "", onErrorLocal, onErrorAllow, onErrorDeny:
	default:
		return fmt.Errorf("tenant_ratelimit: on_redis_error must be local, allow or deny, got %q", rl.OnRedisError)
	}
	seen := make(map[string]bool, len(rl.Plans))
	for _, p := range rl.Plans {
		if err := p.validate(); err != nil {
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
// config uses them any more). It releases every one even when releasing
// another fails, and returns the errors together.
func (rl *RateLimit) Cleanup() error {
	var errs []error
	if rl.redisKey != "" {
		if _, err := redisPool.Delete(rl.redisKey); err != nil {
			errs = append(errs, fmt.Errorf("tenant_ratelimit: releasing the Redis client: %w", err))
		}
	}
	if rl.metrics != nil {
		if err := sharedmetrics.Release(metricsName); err != nil {
			errs = append(errs, fmt.Errorf("tenant_ratelimit: %w", err))
		}
	}
	if rl.local != nil {
		if _, err := localPool.Delete(localPoolKey); err != nil {
			errs = append(errs, fmt.Errorf("tenant_ratelimit: releasing the in-process limiter: %w", err))
		}
	}
	return errors.Join(errs...)
}

// limitDetails is the "details" member of a 429's error envelope.
type limitDetails struct {
	LimitType  limitType `json:"limit_type"`
	DailyUsed  int64     `json:"daily_used"`
	MinuteUsed int64     `json:"minute_used"`
	ResetAt    string    `json:"reset_at"`
	RetryAfter int64     `json:"retry_after"`
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (rl *RateLimit) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ctx := r.Context()
	var id *tenant.Identity
	var rid string
	tr := tenant.RequestFromContext(ctx)
	if tr != nil {
		id, rid = tr.Identity, tr.ID
	}
	if id == nil {
		rl.logger.Error("request reached tenant_ratelimit without a tenant identity: tenant_auth must run before it in the same route",
			zap.String("request_id", rid), zap.String("uri", r.RequestURI))
		return tenant.WriteError(w, http.StatusInternalServerError, tenant.InternalErrorMessage, nil, rid)
	}
	p := rl.policies.lookup(id)
	if p == nil {
		// The plan is a detail of the gateway's configuration: logged for
		// the operator, not told to the client.
		rl.logger.Error("no rate-limit plan for the organization's plan tier; add a plan line to tenant_ratelimit",
			zap.String("request_id", rid), zap.String("organization_id", id.OrgID), zap.String("plan", id.Plan))
		return tenant.WriteError(w, http.StatusInternalServerError, tenant.InternalErrorMessage, nil, rid)
	}

	d, err := rl.limiter.Allow(ctx, id.OrgID, p)
	if err != nil {
		return rl.unavailable(w, tr, p, err)
	}
	h := w.Header()
	if d.Source == sourceFailOpen {
		rl.headers.writeStatic(h, p)
	} else {
		rl.headers.write(h, p, &d)
	}
	res := resultAllowed
	if !d.Allowed {
		res = resultDeniedMinute
		if d.limitType(p.Limits) == limitTypeDay {
			res = resultDeniedDay
		}
	}
	p.counters.inc(res, d.Source)
	logDecision(tr, res, d.Source)
	if d.Allowed {
		return next.ServeHTTP(w, r)
	}
	return rl.tooMany(w, p, &d, rid)
}

// tooMany answers 429 with Retry-After and the envelope's details.
func (rl *RateLimit) tooMany(w http.ResponseWriter, p *policy, d *decision, rid string) error {
	l := p.Limits
	retry := d.retryAfter(l)
	kind := d.limitType(l)
	w.Header()[hdrRetryAfter] = []string{strconv.FormatInt(retry, 10)}
	msg := "Rate limit exceeded: minute limit reached"
	if kind == limitTypeDay {
		msg = "Rate limit exceeded: daily limit reached"
	}
	details := &limitDetails{
		LimitType:  kind,
		DailyUsed:  d.DayUsed,
		MinuteUsed: d.minuteUsed(l),
		ResetAt:    string(appendRFC3339(nil, d.Now/usPerSecond+retry)),
		RetryAfter: retry,
	}
	return tenant.WriteError(w, http.StatusTooManyRequests, msg, details, rid)
}

// unavailable answers a request the limiter could not decide: 503 (Redis
// down under on_redis_error deny), never 429 or 403.
func (rl *RateLimit) unavailable(w http.ResponseWriter, tr *tenant.Request, p *policy, err error) error {
	retry := int64(1)
	var ue *unavailableError
	if errors.As(err, &ue) {
		retry = max(1, ceilDiv(int64(ue.retryIn), 1e9))
	} else {
		rl.logger.Error("rate limiter failed", zap.Error(err))
	}
	p.counters.inc(resultUnavailable, sourceRedis)
	logDecision(tr, resultUnavailable, sourceRedis)
	w.Header()[hdrRetryAfter] = []string{strconv.FormatInt(retry, 10)}
	return tenant.WriteError(w, http.StatusServiceUnavailable, "rate limiter temporarily unavailable", nil, tr.ID)
}

// logDecision records the decision for the request's access-log line
// (tenant.Request renders it with the tenant fields).
func logDecision(tr *tenant.Request, res result, src decisionSource) {
	tr.RateLimit, tr.RateLimitSource = resultNames[res], src.String()
}

// Interface guards
var (
	_ caddy.Provisioner           = (*RateLimit)(nil)
	_ caddy.Validator             = (*RateLimit)(nil)
	_ caddy.CleanerUpper          = (*RateLimit)(nil)
	_ caddyhttp.MiddlewareHandler = (*RateLimit)(nil)
	_ caddyfile.Unmarshaler       = (*RateLimit)(nil)
	_ tenant.LimitPeeker          = (*RateLimit)(nil)
)

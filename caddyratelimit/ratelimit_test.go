package caddyratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tenantgate/tenantgate/internal/faultproxy"
	"github.com/tenantgate/tenantgate/internal/sharedmetrics"
	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

// tinyLimits is the example plan used throughout: 6/min, burst 4, so capacity 10 and one
// token every 10 s.
var tinyLimits = limits{PerMinute: 6, PerDay: 1000, Burst: 4}

// newTestLocal returns an in-process limiter on a fake clock, stopped at
// the end of the test.
func newTestLocal(t *testing.T, clock *testenv.Clock) *localLimiter {
	t.Helper()
	l := newLocalLimiter(1000, clock.Now)
	t.Cleanup(func() { _ = l.Destruct() })
	return l
}

// tinyLocal is the common setup: an in-process limiter on a fake clock at
// 2026-01-25T14:31:15Z and the tiny policy.
func tinyLocal(t *testing.T) (*testenv.Clock, *localLimiter, *policy) {
	t.Helper()
	clock := testenv.NewClock(mustTime(t, "2026-01-25T14:31:15Z"))
	return clock, newTestLocal(t, clock), newPolicy("tiny", tinyLimits)
}

// decide runs one decision and fails the test on error.
func decide(t *testing.T, l limiter, org string, p *policy) decision {
	t.Helper()
	d, err := l.Allow(context.Background(), org, p)
	if err != nil {
		t.Fatalf("Allow(%s): %v", org, err)
	}
	return d
}

// admitted sends n sequential requests and counts the admitted ones.
func admitted(t *testing.T, l limiter, org string, p *policy, n int) int {
	t.Helper()
	got := 0
	for i := 0; i < n; i++ {
		if decide(t, l, org, p).Allowed {
			got++
		}
	}
	return got
}

// decideConcurrently releases n goroutines at once, spread over the
// limiters, each asking for one decision for org; it fails the test on any
// error and returns how many were admitted and denied.
func decideConcurrently(t *testing.T, n int, org string, p *policy, limiters ...limiter) (ok, denied int64) {
	t.Helper()
	var wg sync.WaitGroup
	var admitted, refused, failed atomic.Int64
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func(l limiter) {
			defer wg.Done()
			<-start
			d, err := l.Allow(context.Background(), org, p)
			switch {
			case err != nil:
				failed.Add(1)
			case d.Allowed:
				admitted.Add(1)
			default:
				refused.Add(1)
			}
		}(limiters[i%len(limiters)])
	}
	close(start)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d decisions failed", failed.Load(), n)
	}
	return admitted.Load(), refused.Load()
}

// mustTime parses an RFC 3339 time.
func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// newTestHandler provisions an in-process tenant_ratelimit with plans,
// logging to an observer.
func newTestHandler(t *testing.T, plans ...Plan) (*RateLimit, *observer.ObservedLogs) {
	t.Helper()
	ctx := newCaddyContext(t)
	rl := &RateLimit{Plans: plans}
	if err := rl.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Cleanup() })
	core, logs := observer.New(zapcore.DebugLevel)
	rl.logger = zap.New(core)
	rl.policies.logger = rl.logger
	return rl, logs
}

// newCaddyContext returns the context of an empty, provisioned Caddy
// config: what a handler is provisioned with, apps (the config's
// tenant.Registry) included.
func newCaddyContext(t testing.TB) caddy.Context {
	t.Helper()
	ctx, err := caddy.ProvisionContext(nil)
	if err != nil {
		t.Fatalf("provisioning an empty Caddy config: %v", err)
	}
	return ctx
}

// registryOf returns the config's tenant.Registry.
func registryOf(t testing.TB, ctx caddy.Context) *tenant.Registry {
	t.Helper()
	r, err := tenant.RegistryFromContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// request builds a request as tenant_auth leaves it: Caddy's request
// variables and access-log fields in its context, and id attached if not nil.
func request(id *tenant.Identity) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/api/x", nil)
	extra := new(caddyhttp.ExtraLogFields)
	ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{})
	ctx = context.WithValue(ctx, caddyhttp.ExtraLogFieldsCtxKey, extra)
	r = r.WithContext(ctx)
	tr := &tenant.Request{ID: "req-1"}
	tenant.Attach(r, tr)
	if id != nil {
		tenant.Authenticated(r, tr, id)
	}
	return r
}

// nextHandler counts the requests passed on.
type nextHandler struct{ calls int }

func (n *nextHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) error {
	n.calls++
	w.WriteHeader(http.StatusOK)
	return nil
}

func serve(t *testing.T, rl *RateLimit, id *tenant.Identity, next *nextHandler) *httptest.ResponseRecorder {
	t.Helper()
	r := request(id)
	w := httptest.NewRecorder()
	if err := rl.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return w
}

func decodeEnvelope(t *testing.T, w *httptest.ResponseRecorder) tenant.Envelope {
	t.Helper()
	var env tenant.Envelope
	if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
		t.Fatalf("body is not the envelope: %v: %s", err, w.Body)
	}
	return env
}

func TestServeWithoutIdentityIs500(t *testing.T) {
	rl, logs := newTestHandler(t)
	next := new(nextHandler)
	w := serve(t, rl, nil, next)
	if w.Code != http.StatusInternalServerError || next.calls != 0 {
		t.Fatalf("status %d, next called %d times; want 500 and never passed on", w.Code, next.calls)
	}
	if env := decodeEnvelope(t, w); env.RequestID != "req-1" || env.Error.Code != 500 {
		t.Errorf("envelope %+v", env)
	}
	if logs.FilterLevelExact(zapcore.ErrorLevel).FilterMessageSnippet("tenant_auth").Len() != 1 {
		t.Errorf("no ERROR log naming tenant_auth: %v", logs.All())
	}
}

func TestServeUnknownPlanIs500(t *testing.T) {
	rl, logs := newTestHandler(t)
	next := new(nextHandler)
	w := serve(t, rl, tenant.NewIdentity("org", "gold", "k", tenant.LimitOverrides{}), next)
	if w.Code != http.StatusInternalServerError || next.calls != 0 {
		t.Fatalf("status %d, next called %d times; want 500 and never passed on", w.Code, next.calls)
	}
	// The plan is configuration, for the operator's log, not the client.
	if env := decodeEnvelope(t, w); strings.Contains(w.Body.String(), "gold") || env.Error.Code != 500 {
		t.Errorf("body %s names the plan (or is not the 500 envelope)", w.Body)
	}
	logged := logs.FilterLevelExact(zapcore.ErrorLevel).FilterField(zap.String("plan", "gold"))
	if logged.Len() != 1 || logs.FilterLevelExact(zapcore.ErrorLevel).Len() != 1 {
		t.Errorf("want one ERROR log line naming plan gold, got %v", logs.All())
	}
}

// TestProvisionRefusesAStaticKeysPlanItDoesNotDefine: a plan that the
// tenant_auth in front of the limiter hands out with a static key, and
// that the limiter has no limits for, fails the config at provision (so
// `caddy validate` says it), naming the plan and the fix, instead of
// answering that key's requests 500.
func TestProvisionRefusesAStaticKeysPlanItDoesNotDefine(t *testing.T) {
	ctx := newCaddyContext(t)
	registryOf(t, ctx).RequirePlans("a static key of tenant_auth", "basic", "gold")
	rl := new(RateLimit) // the built-in plans: no gold
	err := rl.Provision(ctx)
	_ = rl.Cleanup()
	if err == nil {
		t.Fatal("provisioned a limiter without the plan gold that a static key uses")
	}
	for _, want := range []string{`plan "gold" of a static key of tenant_auth`, "basic, premium, enterprise", `"plan gold <per_minute> <per_day> [burst <n>]"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	withGold := &RateLimit{Plans: []Plan{{Name: "basic", PerMinute: 1, PerDay: 1}, {Name: "gold", PerMinute: 1, PerDay: 1}}}
	if err := withGold.Provision(ctx); err != nil {
		t.Fatalf("a limiter defining every required plan: %v", err)
	}
	t.Cleanup(func() { _ = withGold.Cleanup() })
}

// TestProvisionChecksTheLatestTenantAuthOnly: each tenant_auth scopes the
// limiters provisioned after it, so two sites with their own plans do not
// refuse each other.
func TestProvisionChecksTheLatestTenantAuthOnly(t *testing.T) {
	ctx := newCaddyContext(t)
	registryOf(t, ctx).RequirePlans("a static key of tenant_auth", "gold")
	gold := &RateLimit{Plans: []Plan{{Name: "gold", PerMinute: 1, PerDay: 1}}}
	if err := gold.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gold.Cleanup() })
	registryOf(t, ctx).RequirePlans("a static key of tenant_auth", "premium")
	builtin := new(RateLimit)
	if err := builtin.Provision(ctx); err != nil {
		t.Fatalf("second site's limiter checked against the first site's keys: %v", err)
	}
	t.Cleanup(func() { _ = builtin.Cleanup() })
}

// TestProvisionRefusesATenantPlansPlanItDoesNotDefine: TENANT_PLANS lists
// the plans the CLI accepts for organizations and keys; one the limiter
// does not define fails the config.
func TestProvisionRefusesATenantPlansPlanItDoesNotDefine(t *testing.T) {
	t.Setenv(tenant.PlansEnv, "basic, gold")
	ctx := newCaddyContext(t)
	rl := new(RateLimit)
	err := rl.Provision(ctx)
	_ = rl.Cleanup()
	if err == nil || !strings.Contains(err.Error(), `plan "gold" of the environment variable TENANT_PLANS`) || !strings.Contains(err.Error(), "remove it from TENANT_PLANS") {
		t.Fatalf("err = %v, want a refusal naming gold, TENANT_PLANS and the fix", err)
	}
	withGold := &RateLimit{Plans: []Plan{{Name: "basic", PerMinute: 1, PerDay: 1}, {Name: "gold", PerMinute: 1, PerDay: 1}}}
	if err := withGold.Provision(ctx); err != nil {
		t.Fatalf("a limiter defining every TENANT_PLANS plan: %v", err)
	}
	t.Cleanup(func() { _ = withGold.Cleanup() })

	t.Setenv(tenant.PlansEnv, "no spaces allowed")
	bad := new(RateLimit)
	if err := bad.Provision(ctx); err == nil || !strings.Contains(err.Error(), "TENANT_PLANS") {
		t.Errorf("malformed TENANT_PLANS: err = %v", err)
	}
	t.Cleanup(func() { _ = bad.Cleanup() })
}

func TestServeDefaultPlans(t *testing.T) {
	rl, _ := newTestHandler(t)
	next := new(nextHandler)
	for plan, limit := range map[string]string{"basic": "100", "premium": "1000", "enterprise": "10000"} {
		w := serve(t, rl, tenant.NewIdentity("org-default-"+plan, plan, "k", tenant.LimitOverrides{}), next)
		if w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Limit-Minute") != limit {
			t.Errorf("%s: status %d, limit %q; want 200 and %s", plan, w.Code, w.Header().Get("X-RateLimit-Limit-Minute"), limit)
		}
	}
}

func TestServe429(t *testing.T) {
	rl, _ := newTestHandler(t, Plan{Name: "tiny", PerMinute: 6, PerDay: 1000, Burst: 4})
	id := tenant.NewIdentity("org-429", "tiny", "k", tenant.LimitOverrides{})
	next := new(nextHandler)
	for i := 0; i < 10; i++ {
		if w := serve(t, rl, id, next); w.Code != http.StatusOK {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	before := time.Now().UTC()
	w := serve(t, rl, id, next)
	if w.Code != http.StatusTooManyRequests || next.calls != 10 {
		t.Fatalf("11th: status %d, passed on %d; want 429 and 10", w.Code, next.calls)
	}
	h := w.Header()
	if h.Get("Retry-After") != "10" || h.Get("X-RateLimit-Remaining-Minute") != "0" || h.Get("X-RateLimit-Burst") != "4" {
		t.Errorf("headers %v", h)
	}
	env := decodeEnvelope(t, w)
	d, _ := env.Error.Details.(map[string]any)
	if env.Error.Message != "Rate limit exceeded: minute limit reached" || d["limit_type"] != "minute" ||
		d["daily_used"] != 10.0 || d["minute_used"] != 10.0 || d["retry_after"] != 10.0 {
		t.Errorf("envelope %+v", env)
	}
	reset, err := time.Parse(time.RFC3339, d["reset_at"].(string))
	if err != nil || reset.Before(before.Add(9*time.Second)) || reset.After(before.Add(12*time.Second)) {
		t.Errorf("reset_at %v (%v), want about 10 s from now", d["reset_at"], err)
	}
}

func TestServeAppliesOrganizationOverrides(t *testing.T) {
	rl, logs := newTestHandler(t, Plan{Name: "tiny", PerMinute: 6, PerDay: 1000, Burst: 4})
	next := new(nextHandler)
	id := tenant.NewIdentity("org-override", "tiny", "k", tenant.LimitOverrides{PerMinute: 2, Burst: 0, BurstSet: true})
	ok := 0
	for i := 0; i < 5; i++ {
		w := serve(t, rl, id, next)
		if w.Code == http.StatusOK {
			ok++
			if got := w.Header().Get("X-RateLimit-Limit-Minute"); got != "2" {
				t.Errorf("Limit-Minute %q, want the override 2", got)
			}
		}
	}
	if ok != 2 {
		t.Fatalf("admitted %d, want the overridden capacity 2", ok)
	}
	// A nonsensical override is ignored (plan limits), and logged once.
	bad := tenant.NewIdentity("org-bad-override", "tiny", "k", tenant.LimitOverrides{PerMinute: -3})
	for i := 0; i < 3; i++ {
		if w := serve(t, rl, bad, next); w.Header().Get("X-RateLimit-Limit-Minute") != "6" {
			t.Fatalf("invalid override: Limit-Minute %q, want the plan's 6", w.Header().Get("X-RateLimit-Limit-Minute"))
		}
	}
	if n := logs.FilterMessageSnippet("invalid per-organization").Len(); n != 1 {
		t.Errorf("invalid override logged %d times, want once", n)
	}
}

func TestServeDailyDenialRetryAfter(t *testing.T) {
	rl, _ := newTestHandler(t, Plan{Name: "daily", PerMinute: 600, PerDay: 5})
	id := tenant.NewIdentity("org-daily", "daily", "k", tenant.LimitOverrides{})
	next := new(nextHandler)
	for i := 0; i < 5; i++ {
		serve(t, rl, id, next)
	}
	w := serve(t, rl, id, next)
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	ra, _ := strconv.Atoi(w.Header().Get("Retry-After"))
	if want := int(midnight.Sub(now).Seconds()); w.Code != 429 || ra < want-1 || ra > want+2 {
		t.Fatalf("status %d Retry-After %d, want 429 and about %d (to 00:00 UTC)", w.Code, ra, want)
	}
	if d := decodeEnvelope(t, w).Error.Details.(map[string]any); d["limit_type"] != "day" {
		t.Errorf("details %v", d)
	}
}

// TestProvisionExpandsRedisPlaceholders: {env.*} placeholders in
// redis_addr, redis_password and redis_db are expanded at provision, in
// the server's environment, and the config keeps them as written.
func TestProvisionExpandsRedisPlaceholders(t *testing.T) {
	addr := testenv.RedisAddr(t)
	t.Setenv("TG_TEST_REDIS_ADDR", addr)
	t.Setenv("TG_TEST_REDIS_PASSWORD", "")
	t.Setenv("TG_TEST_REDIS_DB", "1")
	rl := &RateLimit{
		RedisAddr:     "{env.TG_TEST_REDIS_ADDR}",
		RedisPassword: "{env.TG_TEST_REDIS_PASSWORD}",
		RedisDB:       "{env.TG_TEST_REDIS_DB}",
		OnRedisError:  onErrorDeny, // no fallback: a decision must come from Redis
		Plans:         []Plan{{Name: "tiny", PerMinute: 6, PerDay: 1000, Burst: 4}},
	}
	if err := rl.Provision(newCaddyContext(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Cleanup() })
	if rl.RedisAddr != "{env.TG_TEST_REDIS_ADDR}" || rl.RedisDB != "{env.TG_TEST_REDIS_DB}" {
		t.Errorf("the config was changed in place: %+v", rl)
	}

	org := testenv.UniqueName("org_placeholder_")
	db1 := redis.NewClient(&redis.Options{Addr: addr, DB: 1})
	keys := newRedisLimiter(db1, "").keys(org)
	t.Cleanup(func() {
		db1.Del(context.Background(), keys[0], keys[1])
		_ = db1.Close()
	})
	if d := decide(t, rl.limiter, org, rl.policies.plans["tiny"]); d.Source != sourceRedis || !d.Allowed {
		t.Fatalf("decision %+v, want admitted by Redis", d)
	}
	if n := db1.Exists(context.Background(), keys[0], keys[1]).Val(); n != 2 {
		t.Fatalf("%d of the organization's 2 keys are in Redis database 1 (redis_db from the environment)", n)
	}
}

// TestProvisionRefusesMalformedExpandedRedisSettings: a placeholder that
// expands to a malformed address or database fails the config at
// provision, saying where the value came from, not at the first request.
func TestProvisionRefusesMalformedExpandedRedisSettings(t *testing.T) {
	t.Setenv("TG_TEST_BAD_ADDR", "redis-without-a-port")
	t.Setenv("TG_TEST_BAD_DB", "first")
	for _, c := range []struct {
		rl   RateLimit
		want string
	}{
		{RateLimit{RedisAddr: "{env.TG_TEST_BAD_ADDR}"}, `redis_addr: "redis-without-a-port" is not host:port (from {env.TG_TEST_BAD_ADDR})`},
		{RateLimit{RedisAddr: "127.0.0.1:6379", RedisDB: "{env.TG_TEST_BAD_DB}"}, `redis_db: "first" is not a database number (from {env.TG_TEST_BAD_DB})`},
	} {
		rl := c.rl
		err := rl.Provision(newCaddyContext(t))
		_ = rl.Cleanup()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want it to say %s", c.rl, err, c.want)
		}
	}
}

// TestUnreachableRedisIsNoticedAtStart: with Redis unreachable when the
// handler is provisioned, the outage is detected (and logged, once, by the
// breaker) in the background right away, before any request.
func TestUnreachableRedisIsNoticedAtStart(t *testing.T) {
	proxy, err := faultproxy.New(testenv.RedisAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	proxy.Cut()
	rl := &RateLimit{RedisAddr: proxy.Addr()}
	if err := rl.Provision(newCaddyContext(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Cleanup() })
	// Waiting for a background event, bounded: not a timing assertion.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if failing, _, lastErr := rl.shared.breaker.state(); failing {
			if lastErr == "" {
				t.Error("outage recorded without its error")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no request was made, and the unreachable Redis was not noticed at start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCleanupReleasesEverythingWhenOneReleaseFails: Cleanup releases every
// pooled resource even when releasing one fails (here: closing the Redis
// client, which was already closed), and reports that error.
func TestCleanupReleasesEverythingWhenOneReleaseFails(t *testing.T) {
	proxy, err := faultproxy.New(testenv.RedisAddr(t)) // a Redis address of this test's own
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	rl := &RateLimit{RedisAddr: proxy.Addr()}
	if err := rl.Provision(newCaddyContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := rl.shared.client.Close(); err != nil { // closing it again fails
		t.Fatal(err)
	}

	err = rl.Cleanup()
	if !errors.Is(err, redis.ErrClosed) {
		t.Errorf("Cleanup() = %v, want the failed release's error", err)
	}
	if n, _ := redisPool.References(rl.redisKey); n != 0 {
		t.Errorf("Redis client still referenced %d times", n)
	}
	if n := sharedmetrics.References(metricsName); n != 0 {
		t.Errorf("metrics still referenced %d times after the last handler's Cleanup", n)
	}
	if !rl.shared.fallback.stopped.Load() {
		t.Error("the fallback limiter's sweep goroutine still runs")
	}
}

// TestTwoRedisServersAreTwoReadinessChecks: two limiters on different
// Redis servers in one config report as two checks, so a failing one is
// not hidden behind the other.
func TestTwoRedisServersAreTwoReadinessChecks(t *testing.T) {
	up := testenv.RedisAddr(t)
	down, err := faultproxy.New(up)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = down.Close() })
	down.Cut()
	ctx := newCaddyContext(t)
	for _, addr := range []string{up, down.Addr()} {
		rl := &RateLimit{RedisAddr: addr, OnRedisError: onErrorDeny}
		if addr != up {
			rl.RedisPassword = "s3cret-redis-password"
		}
		if err := rl.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rl.Cleanup() })
	}
	report := registryOf(t, ctx).CheckHealth(context.Background())
	upCheck, downCheck := report.Checks["redis:"+up+"/0"], report.Checks["redis:"+down.Addr()+"/0"]
	if upCheck.Status != tenant.StatusOK || downCheck.Status != tenant.StatusDown || len(report.Checks) != 2 {
		t.Fatalf("checks %+v: want redis:%s/0 ok and redis:%s/0 down", report.Checks, up, down.Addr())
	}
	if strings.Contains(downCheck.Detail, "s3cret") {
		t.Errorf("the readiness detail shows the Redis password: %q", downCheck.Detail)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantgate/tenantgate/internal/faultproxy"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

// redisGatewayCaddyfile runs tenant_ratelimit with the plan tiny for the key
// TEST_KEY of organization TEST_ORG, on REDIS_ADDR (in process when empty),
// with JSON access logs on stdout.
const redisGatewayCaddyfile = `{
	admin {$ADMIN_ADDR}
}
:{$GATEWAY_PORT} {
	log {
		output stdout
		format json
	}
	handle /health* {
		tenant_health
	}
	route {
		tenant_auth {
			key {$TEST_KEY} {$TEST_ORG} tiny
		}
		tenant_ratelimit {
			redis_addr {$REDIS_ADDR}
			redis_timeout 200ms
			on_redis_error {$ON_REDIS_ERROR:local}
			plan tiny 6 1000 burst 4
		}
		respond "ok" 200
	}
}
`

// rateLimitKeys are the Redis keys tenant_ratelimit keeps for an organization.
func rateLimitKeys(org string) (bucket, counter string) {
	return "tenantgate:rl:{" + org + "}:m", "tenantgate:rl:{" + org + "}:d"
}

// redisForTest connects to TEST_REDIS_ADDR and deletes org's keys at the end.
func redisForTest(t *testing.T, org string) (*redis.Client, string) {
	t.Helper()
	addr := testenv.RedisAddr(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() {
		b, d := rateLimitKeys(org)
		c.Del(context.Background(), b, d)
		_ = c.Close()
	})
	return c, addr
}

// TestRateLimitTwoGatewaysShareRedis: two gateway processes on one Redis,
// plan tiny 6 1000 burst 4, 60 concurrent requests for one organization
// spread over both: exactly 10 are 200 and 50 are 429.
func TestRateLimitTwoGatewaysShareRedis(t *testing.T) {
	org := uniqueOrg()
	rdb, addr := redisForTest(t, org)
	env := []string{"REDIS_ADDR=" + addr, "TEST_KEY=sk_test_shared", "TEST_ORG=" + org}
	a := startProcess(t, redisGatewayCaddyfile, env...)
	b := startProcess(t, redisGatewayCaddyfile, env...)

	urls := append(repeat(a.URL+"/api/x", 30), repeat(b.URL+"/api/x", 30)...)
	rs := burst(t, urls, "sk_test_shared")
	got := countStatus(rs)
	if got[200] != 10 || got[429] != 50 || len(got) != 2 {
		t.Fatalf("60 concurrent requests over two gateways: %v, want exactly 10×200 and 50×429", got)
	}
	check429(t, firstWithStatus(t, rs, 429), "4")

	// The state is in Redis, under one hash tag.
	bucket, counter := rateLimitKeys(org)
	ctx := context.Background()
	if n := rdb.Exists(ctx, bucket, counter).Val(); n != 2 {
		t.Fatalf("%d of the keys %s, %s exist in Redis", n, bucket, counter)
	}
	if v := rdb.Get(ctx, counter).Val(); !strings.HasSuffix(v, " 10") {
		t.Errorf("daily counter %q, want 10 used", v)
	}

	// Metrics: decisions by plan, result and source, no organization
	// label; the two gateways' admissions add up to the 10.
	allowed := 0.0
	for _, g := range []*gatewayProcess{a, b} {
		metrics := httpGet(t, "http://"+g.AdminAddr+"/metrics")
		allowed += metricValue(metrics, `tenantgate_ratelimit_decisions_total{plan="tiny",result="allowed",source="redis"}`)
		for _, want := range []string{`tenantgate_ratelimit_redis_duration_seconds_bucket`, `tenantgate_ratelimit_fallback_active 0`} {
			if !strings.Contains(metrics, want) {
				t.Errorf("metrics of %s lack %s", g.URL, want)
			}
		}
		if strings.Contains(metrics, org) {
			t.Error("metrics carry the organization ID")
		}
	}
	if allowed != 10 {
		t.Errorf("decisions_total allowed by redis = %v over both gateways, want 10", allowed)
	}
	// Access log: the decision on each line.
	logs := a.Logs.String() + b.Logs.String()
	if !strings.Contains(logs, `"ratelimit":"denied_minute"`) || !strings.Contains(logs, `"ratelimit_source":"redis"`) {
		t.Errorf("access log lacks the limiter decision:\n%s", logs)
	}
}

// TestRateLimitRedisOutage: Redis cut (through a fault-injecting proxy):
// on_redis_error local keeps answering 200/429, never 5xx, and
// /health/ready says degraded; deny answers the 503 envelope and ready says
// down. Redis back on the same address: decisions return to Redis.
func TestRateLimitRedisOutage(t *testing.T) {
	org := uniqueOrg()
	rdb, addr := redisForTest(t, org)
	proxy, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	env := []string{"REDIS_ADDR=" + proxy.Addr(), "TEST_KEY=sk_test_outage", "TEST_ORG=" + org}
	local := startProcess(t, redisGatewayCaddyfile, append(env, "ON_REDIS_ERROR=local")...)
	deny := startProcess(t, redisGatewayCaddyfile, append(env, "ON_REDIS_ERROR=deny")...)
	client := &http.Client{Timeout: 10 * time.Second}
	_, counter := rateLimitKeys(org)
	ctx := context.Background()

	if r := getWithKey(t, client, local.URL+"/api/x", "sk_test_outage"); r.status != 200 {
		t.Fatalf("before the outage: %d %s", r.status, r.body)
	}
	if v := rdb.Get(ctx, counter).Val(); !strings.HasSuffix(v, " 1") {
		t.Fatalf("before the outage the counter in Redis is %q, want 1 used", v)
	}

	proxy.Cut()
	got := countStatus(burst(t, repeat(local.URL+"/api/x", 30), "sk_test_outage"))
	if got[200]+got[429] != 30 || got[200] == 0 || got[429] == 0 {
		t.Fatalf("on_redis_error local during the outage: %v, want only 200s and 429s (the in-process bucket)", got)
	}
	assertReady(t, local, http.StatusOK, "degraded")

	r := getWithKey(t, client, deny.URL+"/api/x", "sk_test_outage")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("on_redis_error deny during the outage: %d, want 503", r.status)
	}
	var envl envelope
	if err := json.Unmarshal(r.body, &envl); err != nil || envl.Error.Code != 503 || envl.RequestID == "" {
		t.Fatalf("503 body is not the envelope: %s", r.body)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	assertReady(t, deny, http.StatusServiceUnavailable, "down")

	// Four seconds more of outage, with requests: the deny gateway's
	// breaker keeps probing Redis and backing off meanwhile.
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if r := getWithKey(t, client, deny.URL+"/api/x", "sk_test_outage"); r.status != http.StatusServiceUnavailable {
			t.Fatalf("on_redis_error deny during the outage: %d, want 503", r.status)
		}
	}

	// Redis "restarted" on the same address: under deny, the 503s stop
	// within about a second (polled with a deadline: a bound on
	// correctness, with slack for a busy machine, not a benchmark).
	proxy.Restore()
	restored := time.Now()
	for {
		r := getWithKey(t, client, deny.URL+"/api/x", "sk_test_outage")
		if r.status != http.StatusServiceUnavailable {
			if r.status != http.StatusOK {
				t.Fatalf("deny gateway after the restore: %d %s", r.status, r.body)
			}
			break
		}
		if waited := time.Since(restored); waited > 2*time.Second {
			t.Fatalf("deny gateway still answered 503 %s after Redis was back", waited.Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Both gateways decide on Redis again (the counter there moves).
	before := rdb.Get(ctx, counter).Val()
	deadline := time.Now().Add(15 * time.Second)
	for _, g := range []*gatewayProcess{local, deny} {
		for {
			r := getWithKey(t, client, g.URL+"/api/x", "sk_test_outage")
			if r.status >= 500 && g == local {
				t.Fatalf("local gateway answered %d", r.status)
			}
			if v := rdb.Get(ctx, counter).Val(); v != before {
				before = v
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway %s did not return to Redis after the restore", g.URL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		assertReady(t, g, http.StatusOK, "ok")
	}
	if ttl := rdb.TTL(ctx, counter).Val(); ttl <= 0 {
		t.Errorf("counter TTL %s, want an expiry", ttl)
	}
}

// TestRateLimitFallbackContinuesFromRedisState: an organization with 3
// requests left today on Redis gets at most 3 more from a gateway whose
// Redis is then cut (on_redis_error local), not a fresh daily quota.
func TestRateLimitFallbackContinuesFromRedisState(t *testing.T) {
	org := uniqueOrg()
	rdb, addr := redisForTest(t, org)
	proxy, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	daily := strings.Replace(redisGatewayCaddyfile, "plan tiny 6 1000 burst 4", "plan tiny 6000 10", 1)
	g := startProcess(t, daily, "REDIS_ADDR="+proxy.Addr(), "TEST_KEY=sk_test_fallback", "TEST_ORG="+org)
	client := httpClient()
	for i := 1; i <= 7; i++ {
		if r := getWithKey(t, client, g.URL+"/api/x", "sk_test_fallback"); r.status != 200 {
			t.Fatalf("request %d on Redis: %d %s", i, r.status, r.body)
		}
	}
	_, counter := rateLimitKeys(org)
	if v := rdb.Get(context.Background(), counter).Val(); !strings.HasSuffix(v, " 7") {
		t.Fatalf("daily counter in Redis %q, want 7 used of 10", v)
	}

	proxy.Cut()
	var got []int
	for range 10 {
		r := getWithKey(t, client, g.URL+"/api/x", "sk_test_fallback")
		got = append(got, r.status)
		if r.status == 429 {
			if d := check429(t, r, "0"); d["limit_type"] != "day" || d["daily_used"] != 10.0 {
				t.Errorf("429 details %v, want the daily limit with 10 used", d)
			}
		}
	}
	ok := 0
	for _, s := range got {
		if s == 200 {
			ok++
		} else if s != 429 {
			t.Fatalf("during the outage: statuses %v, want only 200s and 429s", got)
		}
	}
	if ok != 3 {
		t.Fatalf("during the outage %d more admitted (%v), want 3: what Redis said was left today", ok, got)
	}
	if !strings.Contains(g.Logs.String(), `"ratelimit_source":"fallback"`) {
		t.Error("the access log does not show fallback decisions")
	}
}

// TestRateLimitReloadKeepsState: the in-process limiter keeps its state
// across a config reload.
func TestRateLimitReloadKeepsState(t *testing.T) {
	org := uniqueOrg()
	g := startProcess(t, redisGatewayCaddyfile, "REDIS_ADDR=", "TEST_KEY=sk_test_reload", "TEST_ORG="+org)
	got := countStatus(burst(t, repeat(g.URL+"/api/x", 40), "sk_test_reload"))
	if got[200] != 10 || got[429] != 30 {
		t.Fatalf("in process: %v, want exactly 10×200 and 30×429", got)
	}
	// The process adapts the Caddyfile with its own environment.
	g.Reload(t, redisGatewayCaddyfile)
	r := getWithKey(t, &http.Client{Timeout: 10 * time.Second}, g.URL+"/api/x", "sk_test_reload")
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("after reload: %d, want 429 (the bucket is still empty)", r.status)
	}
	if r.header.Get("X-RateLimit-Remaining-Day") != "990" {
		t.Errorf("after reload X-RateLimit-Remaining-Day = %q, want 990", r.header.Get("X-RateLimit-Remaining-Day"))
	}
}

// TestRateLimitAdaptErrors: `caddy adapt` refuses bad tenant_ratelimit
// blocks with a message naming the line, and never panics.
func TestRateLimitAdaptErrors(t *testing.T) {
	bin := gatewayBinary(t)
	cases := map[string]string{
		"plan tiny 0 1000":           "per_minute must be a positive integer",
		"plan tiny 6 1000 burst -4":  "burst must be zero or a positive integer",
		"redis_timeout fast":         "expected a positive duration",
		"on_redis_error ignore":      "expected local, allow or deny",
		"redis_addr 127.0.0.1:redis": `redis_addr: \"127.0.0.1:redis\" is not host:port`,
		// A setting given twice is an error naming the second line.
		"redis_timeout 1s\n\t\t\tredis_timeout 2s": "redis_timeout given more than once (first on line 4)",
	}
	for line, want := range cases {
		cfg := ":8080 {\n\troute {\n\t\ttenant_ratelimit {\n\t\t\t" + line + "\n\t\t}\n\t}\n}\n"
		path := t.TempDir() + "/Caddyfile"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "adapt", "--config", path).CombinedOutput()
		if err == nil {
			t.Errorf("%q: adapt succeeded", line)
			continue
		}
		wantLine := "Caddyfile:" + strconv.Itoa(4+strings.Count(line, "\n"))
		if !strings.Contains(string(out), want) || !strings.Contains(string(out), wantLine) || strings.Contains(string(out), "panic") {
			t.Errorf("%q: output does not name %s and say %q (or panicked):\n%s", line, wantLine, want, out)
		}
	}
	// An empty redis_addr (an unset {$REDIS_ADDR}) is fine.
	path := t.TempDir() + "/Caddyfile"
	_ = os.WriteFile(path, []byte(":8080 {\n\ttenant_ratelimit {\n\t\tredis_addr {$TG_UNSET_REDIS_ADDR}\n\t}\n}\n"), 0o600)
	if out, err := exec.Command(bin, "adapt", "--config", path).CombinedOutput(); err != nil {
		t.Errorf("empty redis_addr: %v\n%s", err, out)
	}
}

// TestValidateRefusesAPlanTheLimiterLacks: `caddy validate` refuses a
// config whose tenant_auth has a static key on a plan (or whose
// environment lists a plan in TENANT_PLANS) that the tenant_ratelimit
// after it does not define, naming the plan and the fix; the same config
// with the plan defined validates.
func TestValidateRefusesAPlanTheLimiterLacks(t *testing.T) {
	bin := gatewayBinary(t)
	validate := func(cfg string, env ...string) (string, error) {
		path := t.TempDir() + "/Caddyfile"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "validate", "--config", path, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "TENANT_PLANS=")
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	const site = ":8080 {\n\troute {\n\t\ttenant_auth {\n\t\t\tkey sk_test_gold org_gold %s\n\t\t}\n\t\ttenant_ratelimit {\n%s\t\t}\n\t}\n}\n"
	wants := []string{`plan \"gold\" of a static key of tenant_auth`, `plan gold <per_minute> <per_day> [burst <n>]`}

	out, err := validate(fmt.Sprintf(site, "gold", ""))
	if err == nil {
		t.Fatalf("validate accepted a static key on plan gold with a limiter without it:\n%s", out)
	}
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("validate output does not say %s:\n%s", want, out)
		}
	}
	if out, err := validate(fmt.Sprintf(site, "gold", "\t\t\tplan gold 10 1000\n")); err != nil {
		t.Errorf("the plan defined: validate failed: %v\n%s", err, out)
	}

	out, err = validate(fmt.Sprintf(site, "basic", ""), "TENANT_PLANS=gold")
	if err == nil || !strings.Contains(out, "TENANT_PLANS") || !strings.Contains(out, `plan \"gold\"`) {
		t.Errorf("TENANT_PLANS=gold with a limiter without gold: err %v:\n%s", err, out)
	}
}

// TestRateLimitRedisFromEnvPlaceholders: redis_addr and redis_db written
// as {env.*} placeholders stay placeholders in the loaded config (GET
// /config/ shows no address or password) and are expanded in the
// gateway's own environment: the limits are kept in that Redis database.
func TestRateLimitRedisFromEnvPlaceholders(t *testing.T) {
	org := uniqueOrg()
	addr := testenv.RedisAddr(t)
	db1 := redis.NewClient(&redis.Options{Addr: addr, DB: 1})
	bucket, counter := rateLimitKeys(org)
	t.Cleanup(func() {
		db1.Del(context.Background(), bucket, counter)
		_ = db1.Close()
	})
	cfg := strings.Replace(redisGatewayCaddyfile, "redis_addr {$REDIS_ADDR}", "redis_addr {env.TG_E2E_REDIS_ADDR}\n\t\t\tredis_password {env.TG_E2E_REDIS_PASSWORD}\n\t\t\tredis_db {env.TG_E2E_REDIS_DB}", 1)
	g := startProcess(t, cfg, "TG_E2E_REDIS_ADDR="+addr, "TG_E2E_REDIS_PASSWORD=", "TG_E2E_REDIS_DB=1",
		"TEST_KEY=sk_test_placeholders", "TEST_ORG="+org, "ON_REDIS_ERROR=deny")

	if r := getWithKey(t, httpClient(), g.URL+"/api/x", "sk_test_placeholders"); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if n := db1.Exists(context.Background(), bucket, counter).Val(); n != 2 {
		t.Fatalf("%d of the organization's 2 keys in Redis database 1", n)
	}
	config := httpGet(t, "http://"+g.AdminAddr+"/config/")
	if !strings.Contains(config, "{env.TG_E2E_REDIS_ADDR}") || strings.Contains(config, addr) {
		t.Errorf("/config/ does not keep the placeholder, or shows the address:\n%s", config)
	}
}

// TestRateLimitLogsUnreachableRedisAtStart: a gateway whose Redis is
// unreachable says so in its log when it starts, before any request.
func TestRateLimitLogsUnreachableRedisAtStart(t *testing.T) {
	closed := "127.0.0.1:" + freePort(t) // nothing listens there
	g := startProcess(t, redisGatewayCaddyfile, "REDIS_ADDR="+closed, "TEST_KEY=sk_test_start", "TEST_ORG="+uniqueOrg())
	waitForOutput(t, g, "Redis failed; the rate limiter applies on_redis_error")
	if n := strings.Count(g.Logs.String(), "Redis failed"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, g.Logs.String())
	}
}

// assertReady checks /health/ready's status code and the redis check.
func assertReady(t *testing.T, g *gatewayProcess, code int, redisStatus string) {
	t.Helper()
	resp, err := http.Get(g.URL + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ready struct {
		Checks map[string]struct {
			Status string `json:"status"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(body, &ready); err != nil {
		t.Fatalf("/health/ready: %v: %s", err, body)
	}
	if resp.StatusCode != code || ready.Checks["redis"].Status != redisStatus {
		t.Errorf("/health/ready = %d %s, want %d with redis %s", resp.StatusCode, body, code, redisStatus)
	}
}

// metricValue returns the value of the series named exactly series in a
// Prometheus text exposition, 0 when absent.
func metricValue(exposition, series string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// ratelimitPGConfig is a gateway on the key database $DATABASE_URL with the
// in-process limiter and its built-in plans.
const ratelimitPGConfig = `{
	admin {$ADMIN_ADDR}
}
:{$GATEWAY_PORT} {
	route {
		tenant_auth {
			database_url {$DATABASE_URL}
		}
		tenant_ratelimit
		respond "ok" 200
	}
}
`

// TestRateLimitOrganizationOverridesFromDatabase: limits set on an
// organization in the key store (caddy tenant org create --per-minute …)
// replace its plan's.
func TestRateLimitOrganizationOverridesFromDatabase(t *testing.T) {
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Overridden", "--plan", "basic",
		"--per-minute", "3", "--per-day", "50", "--burst", "1")
	key := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "rl")
	g := startProcess(t, ratelimitPGConfig, "DATABASE_URL="+dsn)

	// Warm the key cache, so the burst below measures only the limiter.
	first := getWithKey(t, httpClient(), g.URL+"/api/x", key.Key)
	if first.status != 200 {
		t.Fatalf("first request: %d %s", first.status, first.body)
	}
	for name, want := range map[string]string{
		"X-RateLimit-Limit-Minute": "3", "X-RateLimit-Limit-Day": "50", "X-RateLimit-Burst": "1",
		"X-RateLimit-Remaining-Minute": "3", "X-RateLimit-Remaining-Day": "49",
	} {
		if got := first.header.Get(name); got != want {
			t.Errorf("%s = %q, want %s (the organization's override, not plan basic's)", name, got, want)
		}
	}
	got := countStatus(burst(t, repeat(g.URL+"/api/x", 20), key.Key))
	if got[200] != 3 || got[429] != 17 {
		t.Fatalf("20 concurrent after one: %v, want 3×200 (capacity 3 + 1 − 1) and 17×429", got)
	}
}

// TestRateLimitUnknownPlanFromDatabaseIs500: an organization whose plan
// the limiter does not define (the CLI accepted it through
// --allowed-plans, and the gateway's environment does not list it in
// TENANT_PLANS) gets a 500 envelope that does not name the plan; the
// gateway's log does.
func TestRateLimitUnknownPlanFromDatabaseIs500(t *testing.T) {
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Gold", "--plan", "gold", "--allowed-plans", "gold")
	key := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "gold")
	g := startProcess(t, ratelimitPGConfig, "DATABASE_URL="+dsn)

	r := getWithKey(t, httpClient(), g.URL+"/api/x", key.Key)
	if r.status != 500 {
		t.Fatalf("status %d, want 500: %s", r.status, r.body)
	}
	var env envelope
	if err := json.Unmarshal(r.body, &env); err != nil || env.Error.Code != 500 {
		t.Fatalf("not the 500 envelope: %s", r.body)
	}
	if strings.Contains(string(r.body), "gold") {
		t.Errorf("the 500 names the plan to the client: %s", r.body)
	}
	waitForOutput(t, g, `"plan":"gold"`)
}

// waitForOutput waits (up to 10 s) until the gateway's output contains want.
func waitForOutput(t *testing.T, g *gatewayProcess, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(g.Logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway's log does not show %s:\n%s", want, g.Logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// pgGatewayConfig is a gateway on the key database $DATABASE_URL with the
// production cache TTL: revocations must not wait for it. $BODY_TAG lets
// reload tests tell configs apart.
const pgGatewayConfig = `{
	admin {$ADMIN_ADDR}
}
:{$GATEWAY_PORT} {
	handle /health* {
		tenant_health
	}
	route {
		tenant_auth {
			database_url {$DATABASE_URL}
			cache_ttl 15m
			negative_cache_ttl 30s
			refresh_interval 15m
		}
		respond "{tenant.org_id} {tenant.plan} %s" 200
	}
}
`

// pgKeyDB creates a fresh database and migrates it with the built binary's
// `caddy tenant migrate`, twice (the second run must be a no-op).
func pgKeyDB(t *testing.T) string {
	t.Helper()
	dsn := testenv.FreshDatabase(t)
	if out := tenantCLI(t, dsn, "migrate"); !strings.Contains(out, "applied 00001_api_keys.sql") {
		t.Fatalf("first migrate printed %q", out)
	}
	if out := tenantCLI(t, dsn, "migrate"); !strings.Contains(out, "up to date") {
		t.Fatalf("second migrate printed %q", out)
	}
	return dsn
}

// tenantCLI runs `caddy tenant args…` with the built binary and returns
// its output; any failure ends the test.
func tenantCLI(t *testing.T, dsn string, args ...string) string {
	t.Helper()
	cmd := exec.Command(gatewayBinary(t), append([]string{"tenant"}, args...)...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("caddy tenant %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// pgCreated is what `org create --json` and `key create --json` print.
type pgCreated struct {
	ID    string `json:"id"`
	Key   string `json:"key"`
	OrgID string `json:"organization_id"`
}

func tenantCLIJSON(t *testing.T, dsn string, args ...string) pgCreated {
	t.Helper()
	var v pgCreated
	out := tenantCLI(t, dsn, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("caddy tenant %s: not JSON: %v: %s", strings.Join(args, " "), err, out)
	}
	return v
}

// callWithKey sends GET / with the key (none if "") and returns status and body.
func callWithKey(t *testing.T, g *gatewayProcess, path, key string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitForStatus polls until every gateway answers want for key, and
// returns how long it took; it fails the test after timeout.
func waitForStatus(t *testing.T, timeout time.Duration, key string, want int, gs ...*gatewayProcess) time.Duration {
	t.Helper()
	start := time.Now()
	for _, g := range gs {
		for {
			code, body := callWithKey(t, g, "/", key)
			if code == want {
				break
			}
			if time.Since(start) > timeout {
				t.Fatalf("gateway %s still answers %d (%s) after %s, want %d", g.URL, code, body, timeout, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// waitForReady waits until /health/ready reports postgres with status want.
func waitForReady(t *testing.T, g *gatewayProcess, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := callWithKey(t, g, "/health/ready", "")
		var r struct {
			Checks map[string]struct{ Status string } `json:"checks"`
		}
		if json.Unmarshal([]byte(body), &r) == nil && r.Checks["postgres"].Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health/ready = %s, want postgres %q", body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRevocationReachesTwoGateways(t *testing.T) {
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Acme", "--plan", "premium")
	key := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "ci")
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	cfg := fmt.Sprintf(pgGatewayConfig, "")
	g1 := startProcess(t, cfg, "DATABASE_URL="+viaProxy)
	g2 := startProcess(t, cfg, "DATABASE_URL="+viaProxy)
	for _, g := range []*gatewayProcess{g1, g2} {
		waitForReady(t, g, "ok")
		if code, body := callWithKey(t, g, "/", key.Key); code != http.StatusOK || body != org.ID+" premium " {
			t.Fatalf("gateway %s: %d %q, want 200 %q", g.URL, code, body, org.ID+" premium ")
		}
	}

	tenantCLI(t, dsn, "key", "revoke", key.ID)
	took := waitForStatus(t, 5*time.Second, key.Key, http.StatusForbidden, g1, g2)
	t.Logf("both gateways refused the revoked key %s after the revoke command returned", took)
	if took > time.Second {
		t.Errorf("revocation took %s to reach both gateways, want under 1s (cache_ttl is 15m)", took)
	}

	// The LISTEN connections die and the notification is lost: the
	// gateways must resynchronise when they reconnect.
	key2 := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "ci2")
	waitForStatus(t, 5*time.Second, key2.Key, http.StatusOK, g1, g2)
	proxy.Cut()
	tenantCLI(t, dsn, "key", "revoke", key2.ID) // directly, not through the proxy
	for _, g := range []*gatewayProcess{g1, g2} {
		if code, body := callWithKey(t, g, "/", key2.Key); code != http.StatusOK {
			t.Errorf("gateway %s while cut off: %d %s, want 200 from its cache", g.URL, code, body)
		}
	}
	proxy.Restore()
	took = waitForStatus(t, 15*time.Second, key2.Key, http.StatusForbidden, g1, g2)
	t.Logf("after the LISTEN connections were restored, both gateways refused the key within %s", took)
}

func TestPostgresOutageKeepsCachedKeysAndAnswers503(t *testing.T) {
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Acme")
	used := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "used")
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	g := startProcess(t, fmt.Sprintf(pgGatewayConfig, ""), "DATABASE_URL="+viaProxy)
	waitForReady(t, g, "ok")
	if code, body := callWithKey(t, g, "/", used.Key); code != http.StatusOK {
		t.Fatalf("before the outage: %d %s", code, body)
	}
	fresh := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "fresh")

	proxy.Cut()
	waitForReady(t, g, "degraded")
	if code, body := callWithKey(t, g, "/", used.Key); code != http.StatusOK {
		t.Errorf("key used before the outage: %d %s, want 200", code, body)
	}
	code, body := callWithKey(t, g, "/", fresh.Key)
	var env struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	if code != http.StatusServiceUnavailable || json.Unmarshal([]byte(body), &env) != nil ||
		env.Error.Code != 503 || env.Error.Message == "" || env.RequestID == "" {
		t.Errorf("uncached key during the outage: %d %s, want the 503 envelope", code, body)
	}
	if code, body := callWithKey(t, g, "/", ""); code != http.StatusUnauthorized {
		t.Errorf("no key during the outage: %d %s, want 401", code, body)
	}

	proxy.Restore()
	waitForStatus(t, 15*time.Second, fresh.Key, http.StatusOK, g)
	waitForReady(t, g, "ok")
}

// pgConnections counts the gateway's connections to the database.
func pgConnections(t *testing.T, dsn string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'tenantgate'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReloadKeepsTheCacheAndLeaksNoConnections(t *testing.T) {
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Acme")
	key := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "ci")
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	env := "DATABASE_URL=" + viaProxy
	g := startProcess(t, fmt.Sprintf(pgGatewayConfig, "v0"), env)
	waitForReady(t, g, "ok")
	if code, body := callWithKey(t, g, "/", key.Key); code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	before := pgConnections(t, dsn)
	if before < 1 {
		t.Fatalf("%d gateway connections before reloading, want at least the LISTEN one", before)
	}

	const reloads = 5
	for i := 1; i <= reloads; i++ {
		// The admin API's /load does not expand {$ENV}, so the body tag and
		// database URL are written into the config.
		cfg := strings.ReplaceAll(fmt.Sprintf(pgGatewayConfig, fmt.Sprintf("v%d", i)), "{$DATABASE_URL}", viaProxy)
		cfg = strings.ReplaceAll(cfg, "{$ADMIN_ADDR}", g.AdminAddr)
		cfg = strings.ReplaceAll(cfg, "{$GATEWAY_PORT}", strings.TrimPrefix(g.URL, "http://127.0.0.1:"))
		g.Reload(t, cfg)
		code, body := callWithKey(t, g, "/", key.Key)
		if code != http.StatusOK || !strings.HasSuffix(body, fmt.Sprintf(" v%d", i)) {
			t.Fatalf("after reload %d: %d %q", i, code, body)
		}
	}
	time.Sleep(500 * time.Millisecond) // let any closed connection leave pg_stat_activity
	after := pgConnections(t, dsn)
	t.Logf("gateway connections to Postgres: %d before %d reloads, %d after", before, reloads, after)
	if after != before {
		t.Errorf("connections went from %d to %d over %d reloads", before, after, reloads)
	}

	// The cache survived the reloads: with Postgres cut off, the key is
	// still served (a fresh cache would have to answer 503).
	proxy.Cut()
	if code, body := callWithKey(t, g, "/", key.Key); code != http.StatusOK {
		t.Errorf("cached key after reloads with Postgres cut off: %d %s, want 200", code, body)
	}
}

func TestKeyIsNotInADumpOfTheDatabase(t *testing.T) {
	pgDump := testenv.Tool(t, "pg_dump")
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Acme")
	key := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "ci")
	dump, err := exec.Command(pgDump, "--data-only", dsn).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if !strings.Contains(string(dump), key.ID) {
		t.Fatalf("the dump does not contain the key's row (id %s): is it the right database?", key.ID)
	}
	if strings.Contains(string(dump), key.Key) || strings.Contains(string(dump), key.Key[12:]) {
		t.Error("the dump contains the key")
	}
}

func TestLastUsedIsRecordedByTheGatewayOnShutdown(t *testing.T) {
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Acme")
	used := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "used")
	unused := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "unused")
	g := startProcess(t, fmt.Sprintf(pgGatewayConfig, ""), "DATABASE_URL="+dsn)
	waitForReady(t, g, "ok")
	start := time.Now().Truncate(time.Second)
	if code, body := callWithKey(t, g, "/", used.Key); code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	// Usage is written every minute, and once more when the gateway stops.
	g.Stop()
	var keys []struct {
		ID       string     `json:"id"`
		LastUsed *time.Time `json:"last_used_at"`
	}
	if err := json.Unmarshal([]byte(tenantCLI(t, dsn, "key", "list", "--org-id", org.ID, "--json")), &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		switch {
		case k.ID == used.ID && (k.LastUsed == nil || k.LastUsed.Before(start) || k.LastUsed.After(time.Now())):
			t.Errorf("used key: last_used_at = %v, want the second of its request (from %v)", k.LastUsed, start)
		case k.ID == unused.ID && k.LastUsed != nil:
			t.Errorf("unused key: last_used_at = %v, want null", k.LastUsed)
		}
	}
	if len(keys) != 2 {
		t.Errorf("key list: %d keys, want 2", len(keys))
	}
}

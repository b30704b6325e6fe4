package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startDefaultWithAdmin runs the repository's default Caddyfile in a built
// binary with a key database and an admin token, and waits for its admin
// site.
func startDefaultWithAdmin(t *testing.T, dsn string) (*gatewayProcess, *adminClient) {
	t.Helper()
	demo := freePort(t)
	g := startProcess(t, readDefaultCaddyfile(t), "DATABASE_URL="+dsn, "ADMIN_TOKEN="+adminToken,
		"DEMO_BACKEND_PORT="+demo, "API_SERVICE_URL=127.0.0.1:"+demo, "USAGE_SPOOL_DIR="+t.TempDir())
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(g.AdminAPI + "/v1/openapi.json")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin site %s did not answer: %v", g.AdminAPI, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return g, newAdminClient(t, g.AdminAPI, adminToken)
}

// TestAdminWithDefaultCaddyfile is the operator's walk-through on the
// default Caddyfile with DATABASE_URL and ADMIN_TOKEN: an organization and
// a key made over HTTP (an idempotent retry creates nothing new), the
// gateway accepting the key, the tenant's own usage matching `caddy tenant
// usage report`, the key revoked over HTTP and refused within a second,
// wrong tokens refused, and an audit line per change with no secret in any
// log.
func TestAdminWithDefaultCaddyfile(t *testing.T) {
	dsn := pgKeyDB(t)
	g, c := startDefaultWithAdmin(t, dsn)

	for _, auth := range []string{"", "Bearer not-the-token-not-the-token"} {
		r := c.call("GET", "/v1/orgs", nil, map[string]string{"Authorization": auth})
		expectError(t, r, http.StatusUnauthorized, "")
	}

	retry := map[string]string{"Idempotency-Key": "signup-42"}
	first := c.call("POST", "/v1/orgs", map[string]any{"name": "Acme", "plan": "premium"}, retry)
	expectStatus(t, first, http.StatusCreated)
	again := c.call("POST", "/v1/orgs", map[string]any{"name": "Acme", "plan": "premium"}, retry)
	expectStatus(t, again, http.StatusCreated)
	var org, org2 apiOrg
	first.JSON(t, &org)
	again.JSON(t, &org2)
	if org.ID != org2.ID || countOrgsNamed(t, c, "Acme") != 1 {
		t.Fatalf("the retried POST created another organization: %s then %s", org.ID, org2.ID)
	}
	key := c.createKey(org.ID, "web")
	url := g.URL + "/api/users"
	if code := gatewayStatus(t, url, key.Key); code != http.StatusOK {
		t.Fatalf("gateway with the API-made key: %d", code)
	}
	gatewayStatus(t, url, key.Key)
	gatewayStatus(t, g.URL+"/api/orders", key.Key)

	// The tenant's own report equals the CLI's for the organization (the
	// events reach PostgreSQL through the default Caddyfile's postgres
	// sink; the admin API's usage route shows when they are all in).
	waitUsage(t, c, org.ID, "?granularity=day", 3)
	var cli []struct {
		KeyID    string `json:"key_id"`
		Requests int64  `json:"requests"`
	}
	out := tenantCLI(t, dsn, "usage", "report", "--org", org.ID, "--since", "48h", "--by", "day", "--group-by", "key", "--json")
	if err := json.Unmarshal([]byte(out), &cli); err != nil {
		t.Fatalf("caddy tenant usage report --json: %v: %s", err, out)
	}
	code, mine, body := selfService(t, g.URL+"/v1/usage", key.Key)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/usage: %d %s", code, body)
	}
	var cliTotal int64
	for _, r := range cli {
		cliTotal += r.Requests
		if r.KeyID != key.ID {
			t.Errorf("CLI row of key %s", r.KeyID)
		}
	}
	if cliTotal != 3 || mine.Today.Requests != cliTotal || mine.Month.Requests != cliTotal ||
		len(mine.Today.Keys) != 1 || mine.Today.Keys[0].KeyID != key.ID || mine.Today.Keys[0].Requests != cliTotal || mine.Source != "postgres" {
		t.Errorf("GET /v1/usage %s; CLI %s", body, out)
	}
	t.Logf("caddy tenant usage report: %d requests; GET /v1/usage: today %d, month %d", cliTotal, mine.Today.Requests, mine.Month.Requests)

	start := time.Now()
	expectStatus(t, c.call("POST", "/v1/keys/"+key.ID+"/revoke", nil, nil), http.StatusOK)
	took := waitGatewayStatus(t, 2*time.Second, url, key.Key, http.StatusForbidden)
	t.Logf("revoked through the API: refused %s after the API answered (%s after the call started)", took, time.Since(start))
	if took > time.Second {
		t.Errorf("revocation took %s, want under 1s", took)
	}

	// Audit lines, and no secret in any log.
	logs := g.Logs.String()
	for _, want := range []string{`"action":"org.create"`, `"action":"key.create"`, `"action":"key.revoke"`, `"key_id":"` + key.ID + `"`, `"idempotent_replay":true`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no audit line with %s", want)
		}
	}
	for name, secret := range map[string]string{"the API key": key.Key, "the admin token": adminToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain %s", name)
		}
	}
}

// TestAdminRevocationReachesTwoGateways: a key revoked through the admin
// API of one gateway process is refused by it and by another gateway
// process on the same database within a second (LISTEN/NOTIFY).
func TestAdminRevocationReachesTwoGateways(t *testing.T) {
	dsn := pgKeyDB(t)
	g1, c := startDefaultWithAdmin(t, dsn)
	g2 := startProcess(t, fmt.Sprintf(pgGatewayConfig, ""), "DATABASE_URL="+dsn)
	waitForReady(t, g2, "ok")
	org := c.createOrg("Fan-out", "basic")
	key := c.createKey(org.ID, "k")
	urls := []string{g1.URL + "/api/x", g2.URL + "/"}
	for _, u := range urls {
		if code := gatewayStatus(t, u, key.Key); code != http.StatusOK {
			t.Fatalf("%s: %d before revocation", u, code)
		}
	}
	expectStatus(t, c.call("POST", "/v1/keys/"+key.ID+"/revoke", nil, nil), http.StatusOK)
	start := time.Now()
	for _, u := range urls {
		waitGatewayStatus(t, 2*time.Second, u, key.Key, http.StatusForbidden)
	}
	took := time.Since(start)
	t.Logf("both gateway processes refused the key %s after the revoke call answered", took)
	if took > time.Second {
		t.Errorf("revocation reached both gateways in %s, want under 1s", took)
	}
}

// TestAdminRefusesPublicSiteWithoutToken: tenant_admin without a token on
// a site that listens beyond loopback does not start, with a clear error;
// with a token, or bound to loopback, it does.
func TestAdminRefusesPublicSiteWithoutToken(t *testing.T) {
	bin := gatewayBinary(t)
	dir := t.TempDir()
	port := freePort(t)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("{\n\tadmin off\n}\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "ADMIN_TOKEN=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	public := write("public", "http://:"+port+" {\n\ttenant_admin {\n\t\ttoken {$ADMIN_TOKEN}\n\t}\n}\n")
	out, err := run("run", "--config", public, "--adapter", "caddyfile")
	if err == nil {
		t.Fatalf("caddy run with a public, token-less tenant_admin started:\n%s", out)
	}
	if !strings.Contains(out, "tenant_admin has no token") || !strings.Contains(out, "beyond loopback") {
		t.Errorf("the error does not say what is wrong:\n%s", out)
	}
	for name, cfg := range map[string]string{
		"loopback": "http://:" + port + " {\n\tbind 127.0.0.1\n\ttenant_admin\n}\n",
		"token":    "http://:" + port + " {\n\ttenant_admin {\n\t\ttoken " + adminToken + "\n\t}\n}\n",
		"path":     "http://127.0.0.1:" + port + " {\n\tbind 127.0.0.1 ::1\n\thandle_path /admin/* {\n\t\ttenant_admin\n\t}\n}\n",
	} {
		if out, err := run("validate", "--config", write(name, cfg), "--adapter", "caddyfile"); err != nil {
			t.Errorf("%s: caddy validate: %v\n%s", name, err, out)
		}
	}
	nested := write("nested", "http://:"+port+" {\n\thandle_path /admin/* {\n\t\ttenant_admin\n\t}\n}\n")
	if out, err := run("validate", "--config", nested, "--adapter", "caddyfile"); err == nil || !strings.Contains(out, "tenant_admin has no token") {
		t.Errorf("a token-less tenant_admin under handle_path on a public site validated: %v\n%s", err, out)
	}
	short := write("short", "http://:"+port+" {\n\ttenant_admin {\n\t\ttoken short\n\t}\n}\n")
	if out, err := run("validate", "--config", short, "--adapter", "caddyfile"); err == nil || !strings.Contains(out, "at least 16 characters") {
		t.Errorf("a short token validated: %v\n%s", err, out)
	}
}

// TestAdminWithoutDatabase: the default Caddyfile with no environment at
// all still serves the admin site: the dashboard, the document, the demo
// organization's usage from the memory store; the organization and key
// routes answer 503 saying what to set.
func TestAdminWithoutDatabase(t *testing.T) {
	demo := freePort(t)
	g := startProcess(t, readDefaultCaddyfile(t), "DEMO_BACKEND_PORT="+demo, "API_SERVICE_URL=127.0.0.1:"+demo,
		"USAGE_SPOOL_DIR="+t.TempDir())
	var c *adminClient
	deadline := time.Now().Add(10 * time.Second)
	for c == nil {
		if resp, err := http.Get(g.AdminAPI + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				c = newAdminClient(t, g.AdminAPI, "")
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin site %s did not answer", g.AdminAPI)
		}
		time.Sleep(50 * time.Millisecond)
	}
	env := expectError(t, c.call("GET", "/v1/orgs", nil, map[string]string{"Authorization": ""}), http.StatusServiceUnavailable, "")
	if !strings.Contains(env.Error.Message, "database_url") || !strings.Contains(env.Error.Message, "DATABASE_URL") {
		t.Errorf("503 message %q does not say what to set", env.Error.Message)
	}
	expectError(t, c.call("POST", "/v1/orgs", map[string]any{"name": "x"}, map[string]string{"Authorization": ""}), http.StatusServiceUnavailable, "")
	for i := 0; i < 3; i++ {
		gatewayStatus(t, g.URL+"/api/users", "sk_test_abc123")
	}
	u := waitUsage(t, c, "org_1", "?granularity=minute", 3)
	if u.Source != "memory" {
		t.Errorf("usage source %q, want memory", u.Source)
	}
	code, mine, body := selfService(t, g.URL+"/v1/usage", "sk_test_abc123")
	if code != http.StatusOK || mine.OrgID != "org_1" || mine.Today.Requests != 3 || mine.Source != "memory" || mine.Limits == nil {
		t.Errorf("GET /v1/usage with the demo key: %d %s", code, body)
	}
}

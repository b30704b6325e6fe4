package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// instanceCaddyfile is the repository's default Caddyfile with the
// settings read when the Caddyfile is adapted (the listen ports and the
// backend address) written in: what an operator running a second instance
// on a host writes in that instance's Caddyfile, so that `caddy reload`
// from any shell keeps them. Everything else is the default file verbatim.
// The result takes the gateway's port: startProcess chooses it, so the
// first config reads it from {$GATEWAY_PORT} and a reload writes it in.
func instanceCaddyfile(t *testing.T) func(gatewayPort string) string {
	t.Helper()
	demoPort := freePort(t)
	caddyfile := readDefaultCaddyfile(t)
	for placeholder, value := range map[string]string{
		"{$DEMO_BACKEND_PORT:9000}":         demoPort,
		"{$API_SERVICE_URL:127.0.0.1:9000}": "127.0.0.1:" + demoPort,
		"{$GATEWAY_PORT:8080}":              "GATEWAY_PORT",
	} {
		if !strings.Contains(caddyfile, placeholder) {
			t.Fatalf("the default Caddyfile no longer has %s", placeholder)
		}
		caddyfile = strings.ReplaceAll(caddyfile, placeholder, value)
	}
	return func(gatewayPort string) string {
		return strings.Replace(caddyfile, ":GATEWAY_PORT {", ":"+gatewayPort+" {", 1)
	}
}

// portOf is the port of g's gateway URL.
func portOf(g *gatewayProcess) string {
	return g.URL[strings.LastIndex(g.URL, ":")+1:]
}

// readiness returns /health/ready's status code and its checks by name.
func readiness(t *testing.T, g *gatewayProcess) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get(g.URL + "/health/ready")
	if err != nil {
		t.Fatalf("/health/ready: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ready struct {
		Checks map[string]struct {
			Status string `json:"status"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(body, &ready); err != nil {
		t.Fatalf("/health/ready: %v: %s", err, body)
	}
	checks := make(map[string]string)
	for name, c := range ready.Checks {
		checks[name] = c.Status
	}
	return resp.StatusCode, checks
}

// waitForChecks waits until /health/ready answers 200 with every check in
// want at status "ok".
func waitForChecks(t *testing.T, g *gatewayProcess, want ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, checks := readiness(t, g)
		missing := false
		for _, name := range want {
			if checks[name] != "ok" {
				missing = true
			}
		}
		if code == http.StatusOK && !missing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health/ready = %d %v, want 200 with %v ok", code, checks, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loads counts the configs the gateway has loaded (Caddy autosaves each).
func loads(g *gatewayProcess) int {
	return strings.Count(g.Logs.String(), `"msg":"autosaved config`)
}

// reloadFromEmptyEnvironment runs `caddy reload --force` on caddyfile
// against g's admin endpoint with nothing in its environment but PATH and
// HOME, and waits until g has loaded the new config.
func reloadFromEmptyEnvironment(t *testing.T, g *gatewayProcess, caddyfile string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	before := loads(g)
	cmd := exec.Command(gatewayBinary(t), "reload", "--config", path, "--address", g.AdminAddr, "--force")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy reload from an empty environment: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for loads(g) == before {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not load the reloaded config:\n%s", g.Logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReloadFromAnEmptyEnvironmentKeepsDatabaseAndRedis: the default
// Caddyfile reads the database, the keys and Redis from the running
// gateway's environment, so `caddy reload` run from a shell that has none
// of the variables keeps all of them.
func TestReloadFromAnEmptyEnvironmentKeepsDatabaseAndRedis(t *testing.T) {
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Reload", "--plan", "basic")
	dbKey := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "reload")
	staticOrg := uniqueOrg()
	_, redisAddr := redisForTest(t, staticOrg)
	const staticKey = "sk_live_reloadStaticKey0123456789"
	caddyfile := instanceCaddyfile(t)
	g := startProcess(t, caddyfile("{$GATEWAY_PORT}"),
		"DATABASE_URL="+dsn,
		"REDIS_ADDR="+redisAddr,
		"VALID_API_KEYS="+staticKey+":"+staticOrg+":premium")

	check := func(when string) {
		t.Helper()
		waitForChecks(t, g, "postgres", "redis")
		if code, body := callWithKey(t, g, "/api/x", dbKey.Key); code != http.StatusOK {
			t.Errorf("%s: database key: %d %s, want 200", when, code, body)
		}
		if code, body := callWithKey(t, g, "/api/x", staticKey); code != http.StatusOK {
			t.Errorf("%s: key from VALID_API_KEYS: %d %s, want 200", when, code, body)
		}
		if code, _ := callWithKey(t, g, "/api/x", "sk_test_abc123"); code != http.StatusForbidden {
			t.Errorf("%s: the demo key beside a database: %d, want 403", when, code)
		}
	}
	check("at start")
	reloadFromEmptyEnvironment(t, g, caddyfile(portOf(g)))
	check("after a reload from an empty environment")

	// The limiter really is on Redis after the reload: the static key's
	// organization has its counters there.
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	bucket, counter := rateLimitKeys(staticOrg)
	if n := rdb.Exists(context.Background(), bucket, counter).Val(); n != 2 {
		t.Errorf("after the reload the limiter did not decide on Redis (%d of 2 keys)", n)
	}
}

// TestDefaultCaddyfileDemoKeyOnlyWithoutDatabase: the published demo key
// works out of the box, and not once DATABASE_URL is set; a demo-style key
// given beside a database on purpose is accepted with a warning.
func TestDefaultCaddyfileDemoKeyOnlyWithoutDatabase(t *testing.T) {
	dsn := pgKeyDB(t)
	org := tenantCLIJSON(t, dsn, "org", "create", "--name", "Demo")
	dbKey := tenantCLIJSON(t, dsn, "key", "create", "--org-id", org.ID, "--name", "demo")
	caddyfile := instanceCaddyfile(t)("{$GATEWAY_PORT}")

	t.Run("without a database", func(t *testing.T) {
		g := startProcess(t, caddyfile, "DATABASE_URL=")
		if code, body := callWithKey(t, g, "/api/x", "sk_test_abc123"); code != http.StatusOK {
			t.Errorf("demo key: %d %s, want 200", code, body)
		}
	})
	t.Run("with DATABASE_URL", func(t *testing.T) {
		g := startProcess(t, caddyfile, "DATABASE_URL="+dsn) // VALID_API_KEYS unset, as by default
		waitForChecks(t, g, "postgres")
		code, body := callWithKey(t, g, "/api/x", "sk_test_abc123")
		if code != http.StatusForbidden || !strings.Contains(body, `"message":"invalid API key"`) {
			t.Errorf("demo key: %d %s, want 403 invalid API key", code, body)
		}
		if code, body := callWithKey(t, g, "/api/x", dbKey.Key); code != http.StatusOK {
			t.Errorf("database key: %d %s, want 200", code, body)
		}
		if strings.Contains(g.Logs.String(), "demo-style") {
			t.Errorf("a warning about demo keys, though none is accepted:\n%s", g.Logs.String())
		}
	})
	t.Run("demo key set on purpose beside DATABASE_URL", func(t *testing.T) {
		g := startProcess(t, caddyfile, "DATABASE_URL="+dsn, "VALID_API_KEYS=sk_test_abc123:org_1:premium")
		if code, body := callWithKey(t, g, "/api/x", "sk_test_abc123"); code != http.StatusOK {
			t.Errorf("demo key from VALID_API_KEYS: %d %s, want 200", code, body)
		}
		var warning map[string]any
		for _, line := range strings.Split(g.Logs.String(), "\n") {
			if strings.Contains(line, "demo-style") {
				_ = json.Unmarshal([]byte(line), &warning)
			}
		}
		if warning["level"] != "warn" || !strings.HasPrefix(asString(warning["key_id"]), "static_") {
			t.Errorf("no WARN naming the key id: %v\n%s", warning, g.Logs.String())
		}
		if strings.Contains(g.Logs.String(), "sk_test_abc123") {
			t.Errorf("the log shows the key itself")
		}
	})
}

// startRedisWithPassword runs a private redis-server that requires
// password, on a free port, for the test; it returns its address.
func startRedisWithPassword(t *testing.T, password string) string {
	t.Helper()
	bin := testenv.Tool(t, "redis-server")
	addr := net.JoinHostPort("127.0.0.1", freePort(t))
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--requirepass", password,
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr
}

// TestSecretsStayOutOfTheStoredConfig: with the default Caddyfile, the
// database password, the Redis password and the static keys are neither
// in the admin endpoint's GET /config/ nor in autosave.json, at start and
// after a reload; and the gateway still uses them (a password-protected
// Redis answers it).
func TestSecretsStayOutOfTheStoredConfig(t *testing.T) {
	const (
		pgPassword    = "pgSecret4c1d2e"
		redisPassword = "redisSecret9f8e7d"
		staticKey     = "sk_live_secretStaticKey0123456789"
	)
	dsn := pgKeyDB(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), pgPassword) // the test server trusts, and ignores it
	redisAddr := startRedisWithPassword(t, redisPassword)
	org := uniqueOrg()
	caddyfile := instanceCaddyfile(t)
	g := startProcess(t, caddyfile("{$GATEWAY_PORT}"),
		"DATABASE_URL="+u.String(),
		"REDIS_ADDR="+redisAddr,
		"REDIS_PASSWORD="+redisPassword,
		"VALID_API_KEYS="+staticKey+":"+org+":premium")
	waitForChecks(t, g, "postgres", "redis")
	if code, body := callWithKey(t, g, "/api/x", staticKey); code != http.StatusOK {
		t.Fatalf("static key: %d %s", code, body)
	}

	secrets := []string{pgPassword, redisPassword, staticKey}
	assertNoSecrets := func(when string) {
		t.Helper()
		config := httpGet(t, "http://"+g.AdminAddr+"/config/")
		autosave := readAutosave(t, g)
		for _, s := range secrets {
			if strings.Contains(config, s) {
				t.Errorf("%s: GET /config/ shows %q:\n%s", when, s, config)
			}
			if strings.Contains(autosave, s) {
				t.Errorf("%s: autosave.json holds %q:\n%s", when, s, autosave)
			}
		}
		for _, placeholder := range []string{"{env.DATABASE_URL}", "{env.REDIS_PASSWORD}", "{env.VALID_API_KEYS}"} {
			if !strings.Contains(config, placeholder) {
				t.Errorf("%s: GET /config/ lacks %s:\n%s", when, placeholder, config)
			}
		}
	}
	assertNoSecrets("at start")
	reloadFromEmptyEnvironment(t, g, caddyfile(portOf(g)))
	waitForChecks(t, g, "postgres", "redis")
	assertNoSecrets("after a reload")
	if code, body := callWithKey(t, g, "/api/x", staticKey); code != http.StatusOK {
		t.Errorf("static key after the reload: %d %s", code, body)
	}
}

// autosavePath finds autosave.json from Caddy's "autosaved config" log line.
var autosavePath = regexp.MustCompile(`"msg":"autosaved config[^"]*","file":"([^"]+)"`)

// readAutosave returns the gateway's latest autosave.json.
func readAutosave(t *testing.T, g *gatewayProcess) string {
	t.Helper()
	m := autosavePath.FindAllStringSubmatch(g.Logs.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no autosave in the gateway's log:\n%s", g.Logs.String())
	}
	b, err := os.ReadFile(m[len(m)-1][1])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestValidateDefaultCaddyfileChecksVALID_API_KEYS: keys read from the
// environment are checked by `caddy validate` like keys written in the
// Caddyfile: a plan the limiter does not define, or a malformed entry, is
// refused with a message that never shows the key.
func TestValidateDefaultCaddyfileChecksVALID_API_KEYS(t *testing.T) {
	validate := func(keys string) (string, error) {
		cmd := exec.Command(gatewayBinary(t), "validate", "--config", "../Caddyfile", "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "TENANT_PLANS=", "DATABASE_URL=", "REDIS_ADDR=", "VALID_API_KEYS="+keys)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := validate("sk_live_validKey:org_1:basic"); err != nil {
		t.Fatalf("a key on a built-in plan: %v\n%s", err, out)
	}
	for keys, want := range map[string]string{
		"sk_live_goldKey:org_1:gold":                   `plan \"gold\" of a static key of tenant_auth`,
		"sk_live_okKey:org_1:basic,sk_live_badKey:org": "key_list {env.VALID_API_KEYS}: entry 2: expected key:org_id:plan",
	} {
		out, err := validate(keys)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("VALID_API_KEYS=%s: err %v, want output containing %s:\n%s", keys, err, want, out)
		}
		if strings.Contains(out, "sk_live_") {
			t.Errorf("VALID_API_KEYS=%s: the output shows a key:\n%s", keys, out)
		}
	}
}

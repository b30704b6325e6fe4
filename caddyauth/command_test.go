package caddyauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/keystore"
)

// runCLI runs `caddy tenant args…` against dsn and returns its stdout.
func runCLI(t *testing.T, dsn string, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "tenant", SilenceUsage: true, SilenceErrors: true}
	buildTenantCommand(root)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--database-url", dsn))
	err := root.Execute()
	return out.String(), err
}

// mustCLI runs the CLI with --json and decodes its output into v.
func mustCLI(t *testing.T, dsn string, v any, args ...string) {
	t.Helper()
	out, err := runCLI(t, dsn, append(args, "--json")...)
	if err != nil {
		t.Fatalf("tenant %s: %v", strings.Join(args, " "), err)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("tenant %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var keyPattern = regexp.MustCompile(`^sk_(live|test)_[A-Za-z0-9]{32}$`)

func TestCLIMigrateTwiceIsANoOp(t *testing.T) {
	dsn := testenv.FreshDatabase(t)
	out, err := runCLI(t, dsn, "migrate")
	if err != nil || !strings.Contains(out, "applied 00001_api_keys.sql") {
		t.Fatalf("first migrate: %v\n%s", err, out)
	}
	schema := schemaSnapshot(t, dsn)
	out, err = runCLI(t, dsn, "migrate")
	if err != nil || !strings.Contains(out, "schema is up to date (version ") {
		t.Fatalf("second migrate: %v\n%s", err, out)
	}
	if again := schemaSnapshot(t, dsn); again != schema {
		t.Errorf("the second migrate changed the schema:\n%s\n---\n%s", schema, again)
	}
}

// schemaSnapshot lists the tables, columns, indexes and triggers.
func schemaSnapshot(t *testing.T, dsn string) string {
	t.Helper()
	conn := testenv.Connect(t, dsn)
	var s string
	err := conn.QueryRow(context.Background(), `SELECT string_agg(x, E'\n' ORDER BY x) FROM (
		SELECT table_name || '.' || column_name || ' ' || data_type AS x FROM information_schema.columns WHERE table_schema = 'public'
		UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
		UNION ALL SELECT tgname::text FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL SELECT 'version ' || max(version_id)::text FROM tenantgate_schema_migrations) s`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCLIRoundTrip(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	var org keystore.Organization
	mustCLI(t, dsn, &org, "org", "create", "--name", "Acme", "--plan", "premium", "--per-minute", "500", "--burst", "20")
	if org.ID == "" || org.Plan != "premium" || org.PerMinute == nil || *org.PerMinute != 500 || org.PerDay != nil || *org.Burst != 20 {
		t.Fatalf("org create: %+v", org)
	}
	var key keystore.NewAPIKey
	mustCLI(t, dsn, &key, "key", "create", "--org-id", org.ID, "--name", "ci", "--expires-in", "720h")
	if !keyPattern.MatchString(key.Key) || !strings.HasPrefix(key.Key, "sk_live_") {
		t.Errorf("key %q does not match %s with sk_live_", key.Key, keyPattern)
	}
	if key.ID == "" || key.Prefix != key.Key[:12] || key.OrgID != org.ID || key.Status != "active" || key.Expires == nil {
		t.Errorf("key create: %+v", key)
	}
	if d := time.Until(*key.Expires); d < 719*time.Hour || d > 721*time.Hour {
		t.Errorf("expires_at %s is not 720h from now", key.Expires)
	}
	var test keystore.NewAPIKey
	mustCLI(t, dsn, &test, "key", "create", "--org-id", org.ID, "--name", "dev", "--test", "--plan", "enterprise")
	if !strings.HasPrefix(test.Key, "sk_test_") || !keyPattern.MatchString(test.Key) || test.Plan == nil || *test.Plan != "enterprise" {
		t.Errorf("test key: %+v", test)
	}

	// The database holds the hash and the prefix, never the key.
	conn := testenv.Connect(t, dsn)
	var dump string
	if err := conn.QueryRow(context.Background(), `SELECT string_agg(row_to_json(k)::text, ' ') FROM api_keys k`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{key.Key, test.Key} {
		if strings.Contains(dump, k) || strings.Contains(dump, k[12:]) {
			t.Errorf("api_keys contains the key (or its secret part)")
		}
		var stored []byte
		if err := conn.QueryRow(context.Background(), `SELECT key_hash FROM api_keys WHERE key_prefix = $1`, k[:12]).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256([]byte(k)); !bytes.Equal(stored, sum[:]) {
			t.Errorf("stored hash is not SHA-256 of the key")
		}
	}

	out, err := runCLI(t, dsn, "key", "list", "--org-id", org.ID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, key.Key) || strings.Contains(out, test.Key) || strings.Contains(out, "hash") {
		t.Errorf("key list shows a key or hash:\n%s", out)
	}
	var listed []keystore.APIKey
	mustCLI(t, dsn, &listed, "key", "list", "--org-id", org.ID)
	if len(listed) != 2 || listed[0].ID != key.ID || listed[1].ID != test.ID {
		t.Errorf("key list: %+v", listed)
	}

	var revoked keystore.APIKey
	mustCLI(t, dsn, &revoked, "key", "revoke", test.ID)
	if revoked.Status != "revoked" || revoked.Revoked == nil {
		t.Errorf("key revoke: %+v", revoked)
	}
	if _, err := runCLI(t, dsn, "key", "rotate", test.ID); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("rotating a revoked key: %v, want an error", err)
	}

	var rot keystore.Rotation
	mustCLI(t, dsn, &rot, "key", "rotate", key.ID, "--grace", "1h")
	if !keyPattern.MatchString(rot.Key) || rot.ID == key.ID || rot.OrgID != org.ID || rot.Name != "ci" || rot.Replaces.ID != key.ID {
		t.Errorf("key rotate: %+v", rot)
	}
	if d := time.Until(*rot.Replaces.Expires); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("old key expires in %s, want the 1h grace", d)
	}

	var disabled keystore.Organization
	mustCLI(t, dsn, &disabled, "org", "disable", org.ID)
	if disabled.Disabled == nil {
		t.Errorf("org disable: %+v", disabled)
	}
	if _, err := runCLI(t, dsn, "key", "create", "--org-id", org.ID, "--name", "x"); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("key create for a disabled org: %v, want an error", err)
	}
	var orgs []keystore.Organization
	mustCLI(t, dsn, &orgs, "org", "list")
	if len(orgs) != 1 || orgs[0].ID != org.ID || orgs[0].Disabled == nil {
		t.Errorf("org list: %+v", orgs)
	}
	var enabled keystore.Organization
	mustCLI(t, dsn, &enabled, "org", "enable", org.ID)
	if enabled.ID != org.ID || enabled.Disabled != nil {
		t.Errorf("org enable: %+v", enabled)
	}
	if text, err := runCLI(t, dsn, "org", "enable", org.ID); err != nil || !strings.Contains(text, "enabled organization "+org.ID) || !strings.Contains(text, "disabled: no") {
		t.Errorf("org enable (text, already enabled): %v\n%s", err, text)
	}
	var afterEnable keystore.NewAPIKey
	mustCLI(t, dsn, &afterEnable, "key", "create", "--org-id", org.ID, "--name", "after-enable")
	if _, err := conn.Exec(context.Background(), `DELETE FROM api_keys WHERE id = $1`, afterEnable.ID); err != nil {
		t.Fatal(err)
	}
	used := time.Date(2026, 11, 27, 0, 35, 13, 0, time.UTC) // as a gateway records it
	if _, err := conn.Exec(context.Background(), `UPDATE api_keys SET last_used_at = $1 WHERE id = $2`, used, key.ID); err != nil {
		t.Fatal(err)
	}
	text, err := runCLI(t, dsn, "key", "list", "--org-id", org.ID)
	if err != nil || !strings.Contains(text, key.Prefix+"…") || strings.Count(text, "\n") != 4 ||
		!strings.Contains(text, "LAST USED") || !strings.Contains(text, "2026-11-27T00:35:13Z") {
		t.Errorf("key list (text): %v\n%s", err, text)
	}
	var relisted []keystore.APIKey
	mustCLI(t, dsn, &relisted, "key", "list", "--org-id", org.ID)
	if len(relisted) != 3 || relisted[0].LastUsed == nil || !relisted[0].LastUsed.Equal(used) || relisted[1].LastUsed != nil {
		t.Errorf("key list --json: last_used_at of a used and an unused key: %+v", relisted)
	}
}

func TestCLIJSONIsNotHTMLEscaped(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	out, err := runCLI(t, dsn, "org", "create", "--name", "A&B <Corp>", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"name": "A&B <Corp>"`) {
		t.Errorf("org create --json does not show the name as written:\n%s", out)
	}
}

func TestCLIBadInputWritesNothing(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	var org keystore.Organization
	mustCLI(t, dsn, &org, "org", "create", "--name", "Acme")
	var key keystore.NewAPIKey
	mustCLI(t, dsn, &key, "key", "create", "--org-id", org.ID, "--name", "ci")
	before := dataSnapshot(t, dsn)

	unknown := "0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"key", "create", "--org-id", unknown, "--name", "x"}, "unknown organization"},
		{[]string{"key", "create", "--org-id", "not-a-uuid", "--name", "x"}, "malformed --org-id"},
		{[]string{"key", "create", "--org-id", org.ID, "--name", "x", "--plan", "gold"}, `unknown plan "gold"`},
		{[]string{"key", "create", "--org-id", org.ID, "--name", ""}, "--name"},
		{[]string{"key", "create", "--org-id", org.ID, "--name", "x", "--expires-in", "-1h"}, "--expires-in"},
		{[]string{"key", "create", "--org-id", org.ID, "--name", "x", "--expires-in", "soon"}, "--expires-in"},
		{[]string{"key", "list", "--org-id", unknown}, "unknown organization"},
		{[]string{"key", "revoke", unknown}, "unknown API key"},
		{[]string{"key", "revoke", key.Key}, "malformed key ID"},
		{[]string{"key", "rotate", unknown}, "unknown API key"},
		{[]string{"key", "rotate", key.ID, "--grace", "-5m"}, "--grace"},
		{[]string{"org", "create", "--name", "x", "--plan", "gold"}, `unknown plan "gold"`},
		{[]string{"org", "create", "--name", "x", "--per-minute", "0"}, "--per-minute"},
		{[]string{"org", "create", "--name", "x", "--burst", "-1"}, "--burst"},
		{[]string{"org", "create", "--name", strings.Repeat("n", 201)}, "--name"},
		{[]string{"org", "create", "--name", "a\nb"}, "--name"},
		{[]string{"org", "disable", unknown}, "unknown organization"},
		{[]string{"org", "disable", "42"}, "malformed organization ID"},
		{[]string{"org", "enable", unknown}, "unknown organization"},
		{[]string{"org", "enable", "42"}, "malformed organization ID"},
		{[]string{"key", "create", "--name", "x"}, "--org-id is required"},
		{[]string{"key", "list"}, "--org-id is required"},
		{[]string{"key", "create", "--org-id", org.ID}, "--name is required"},
		{[]string{"org", "create"}, "--name is required"},
	} {
		out, err := runCLI(t, dsn, c.args...)
		switch {
		case err == nil:
			t.Errorf("tenant %q succeeded, want an error containing %q\n%s", c.args, c.want, out)
		case !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n"):
			t.Errorf("tenant %q: error %q, want one line containing %q", c.args, err, c.want)
		case strings.Contains(err.Error(), key.Key):
			t.Errorf("tenant %q: the error echoes a key", c.args)
		}
	}
	if after := dataSnapshot(t, dsn); after != before {
		t.Errorf("bad input changed the database:\n%s\n---\n%s", before, after)
	}
}

func TestCLICustomPlans(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	var org keystore.Organization
	mustCLI(t, dsn, &org, "org", "create", "--name", "Tiny", "--plan", "tiny", "--allowed-plans", "tiny,huge")
	if org.Plan != "tiny" {
		t.Errorf("org create with an allowed custom plan: %+v", org)
	}
	t.Setenv(tenant.PlansEnv, "huge")
	var key keystore.NewAPIKey
	mustCLI(t, dsn, &key, "key", "create", "--org-id", org.ID, "--name", "k", "--plan", "huge")
	if key.Plan == nil || *key.Plan != "huge" {
		t.Errorf("key create with a plan from %s: %+v", tenant.PlansEnv, key)
	}
	if _, err := runCLI(t, dsn, "org", "create", "--name", "x", "--plan", "tiny"); err == nil {
		t.Errorf("plan tiny accepted although only %s=huge allows extras", tenant.PlansEnv)
	}
}

func TestCLIDatabaseErrorsAreOneLine(t *testing.T) {
	for _, c := range []struct {
		dsn, want string
	}{
		{"postgres://postgres@127.0.0.1:1/x?connect_timeout=2", "cannot connect to PostgreSQL"},
		{testenv.FreshDatabase(t), "run `caddy tenant migrate` first"},
	} {
		_, err := runCLI(t, c.dsn, "org", "list")
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("org list on %s: %v, want one line containing %q", c.dsn, err, c.want)
		}
	}
	t.Setenv(databaseURLEnv, "")
	root := &cobra.Command{Use: "tenant", SilenceUsage: true, SilenceErrors: true}
	buildTenantCommand(root)
	root.SetArgs([]string{"org", "list"})
	root.SetOut(new(bytes.Buffer))
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), databaseURLEnv) {
		t.Errorf("no database configured: %v", err)
	}
}

// dataSnapshot is every row of both tables, as text.
func dataSnapshot(t *testing.T, dsn string) string {
	t.Helper()
	conn := testenv.Connect(t, dsn)
	var s string
	err := conn.QueryRow(context.Background(), `SELECT
		coalesce((SELECT string_agg(row_to_json(o)::text, E'\n' ORDER BY id) FROM organizations o), '') || E'\n' ||
		coalesce((SELECT string_agg(row_to_json(k)::text, E'\n' ORDER BY id) FROM api_keys k), '')`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

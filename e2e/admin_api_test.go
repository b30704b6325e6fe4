package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// adminConfig is a gateway on the key database (local limiter, usage in
// the process's memory store, the tenants' /v1/usage) and, on its own
// loopback site, tenant_admin on the same database.
func adminConfig(gatewayPort, dsn, adminPort string) string {
	return fmt.Sprintf(`
:%[1]s {
	route {
		tenant_usage
		tenant_auth {
			database_url %[2]s
			cache_ttl 15m
			negative_cache_ttl 30s
		}
		tenant_ratelimit
		handle /v1/usage {
			tenant_usage_report
		}
		respond "{tenant.org_id} {tenant.plan}" 200
	}
}

http://127.0.0.1:%[3]s {
	bind 127.0.0.1
	tenant_admin {
		token %[4]s
		database_url %[2]s
	}
}
`, gatewayPort, dsn, adminPort, adminToken)
}

// startAdminGateway loads adminConfig into the in-process Caddy. The usage
// pipeline's spool goes to a directory of this test binary's, not to the
// default data directory, which a gateway running on the machine may hold.
// It returns the test's ports: the admin API site listens on the backend port.
func startAdminGateway(t *testing.T, dsn string) testPorts {
	t.Helper()
	p := newTestPorts(t)
	startGatewayWithGlobals(t, p, "\ttenant_usage {\n\t\tspool_dir "+inProcessSpoolDir(t)+"\n\t}", adminConfig(p.gateway, dsn, p.backend))
	return p
}

// TestAdminAPI exercises every route of the admin API against a real
// PostgreSQL, success and error paths, each answer checked against the
// served OpenAPI document; it fails if a route was not exercised.
func TestAdminAPI(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	ports := startAdminGateway(t, dsn)
	adminPort, gatewayURL := ports.backend, ports.gatewayURL()
	c := newAdminClient(t, "http://127.0.0.1:"+adminPort, adminToken)
	expectStatus(t, c.call("GET", "/v1/openapi.json", nil, map[string]string{"Authorization": ""}), http.StatusOK)

	t.Run("auth", func(t *testing.T) {
		for name, auth := range map[string]string{"no token": "", "wrong token": "Bearer wrong-token-wrong-token", "not bearer": "Basic " + adminToken} {
			r := c.call("GET", "/v1/orgs", nil, map[string]string{"Authorization": auth})
			env := expectError(t, r, http.StatusUnauthorized, "")
			if !strings.Contains(env.Error.Message, "token") {
				t.Errorf("%s: message %q", name, env.Error.Message)
			}
		}
		r := c.call("POST", "/v1/orgs", map[string]any{"name": "never"}, map[string]string{"Authorization": "Bearer nope"})
		expectError(t, r, http.StatusUnauthorized, "")
	})

	var acme apiOrg
	t.Run("create organization", func(t *testing.T) {
		r := c.call("POST", "/v1/orgs", map[string]any{"name": "Acme", "plan": "premium", "rate_limit_per_day": 5000}, nil)
		expectStatus(t, r, http.StatusCreated)
		r.JSON(t, &acme)
		if acme.ID == "" || acme.Name != "Acme" || acme.Plan != "premium" || acme.PerDay == nil || *acme.PerDay != 5000 || acme.PerMinute != nil {
			t.Fatalf("created %+v", acme)
		}
		if loc := r.Header.Get("Location"); loc != "/v1/orgs/"+acme.ID {
			t.Errorf("Location %q", loc)
		}
		// Defaults: plan basic, as the CLI.
		if o := c.createOrg("Defaults Ltd", "basic"); o.Plan != "basic" {
			t.Errorf("plan %q", o.Plan)
		}
		r = c.call("POST", "/v1/orgs", map[string]any{"name": "No plan given"}, nil)
		expectStatus(t, r, http.StatusCreated)
		var o apiOrg
		if r.JSON(t, &o); o.Plan != "basic" {
			t.Errorf("default plan %q, want basic", o.Plan)
		}
	})

	t.Run("create organization errors", func(t *testing.T) {
		cases := []struct {
			name   string
			body   any
			status int
			field  string
		}{
			{"bad JSON", `{"name": "x",`, 400, "body"},
			{"not an object", `["x"]`, 400, "body"},
			{"no body", nil, 422, "name"},
			{"unknown field", `{"name": "x", "nmae": "y"}`, 400, "nmae"},
			{"wrong type", `{"name": 42}`, 400, "name"},
			{"wrong type of limit", `{"name": "x", "burst": "lots"}`, 400, "burst"},
			{"missing name", `{"plan": "basic"}`, 422, "name"},
			{"empty name", `{"name": "  "}`, 422, ""},
			{"unknown plan", `{"name": "x", "plan": "platinum"}`, 422, "plan"},
			{"limit out of range", `{"name": "x", "rate_limit_per_minute": 0}`, 422, ""},
			{"disabled on create", `{"name": "x", "disabled": true}`, 400, "disabled"},
			{"oversized body", `{"name": "` + strings.Repeat("a", 70<<10) + `"}`, 413, ""},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				expectError(t, c.call("POST", "/v1/orgs", tc.body, nil), tc.status, tc.field)
			})
		}
		// Nothing was created by any of them.
		r := c.call("GET", "/v1/orgs?limit=1000", nil, nil)
		var page apiPage[apiOrg]
		r.JSON(t, &page)
		for _, o := range page.Data {
			if o.Name == "x" || o.Name == "never" {
				t.Errorf("a refused request created %+v", o)
			}
		}
	})

	t.Run("list organizations across pages", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			c.createOrg(fmt.Sprintf("Paged %d", i), "basic")
		}
		var all []apiOrg
		cursor, pages := "", 0
		for {
			path := "/v1/orgs?limit=2"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			r := c.call("GET", path, nil, nil)
			expectStatus(t, r, http.StatusOK)
			var page apiPage[apiOrg]
			r.JSON(t, &page)
			if len(page.Data) > 2 {
				t.Fatalf("page of %d with limit=2", len(page.Data))
			}
			all = append(all, page.Data...)
			pages++
			if page.NextCursor == nil {
				break
			}
			cursor = *page.NextCursor
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
		}
		seen := map[string]bool{}
		for _, o := range all {
			if seen[o.ID] {
				t.Errorf("%s listed twice", o.ID)
			}
			seen[o.ID] = true
		}
		if len(all) != 7 || pages != 4 || !seen[acme.ID] {
			t.Errorf("listed %d organizations in %d pages, want 7 in 4 (with Acme)", len(all), pages)
		}
		expectError(t, c.call("GET", "/v1/orgs?limit=0", nil, nil), 400, "limit")
		expectError(t, c.call("GET", "/v1/orgs?limit=abc", nil, nil), 400, "limit")
		expectError(t, c.call("GET", "/v1/orgs?limit=1001", nil, nil), 400, "limit")
		expectError(t, c.call("GET", "/v1/orgs?cursor=bm90LWEtY3Vyc29y", nil, nil), 400, "cursor")
	})

	t.Run("get and update organization", func(t *testing.T) {
		r := c.call("GET", "/v1/orgs/"+acme.ID, nil, nil)
		expectStatus(t, r, http.StatusOK)
		var got apiOrg
		if r.JSON(t, &got); got.ID != acme.ID || got.Name != "Acme" {
			t.Errorf("got %+v", got)
		}
		expectError(t, c.call("GET", "/v1/orgs/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70", nil, nil), 404, "")
		expectError(t, c.call("GET", "/v1/orgs/not-a-uuid", nil, nil), 404, "")

		r = c.call("PATCH", "/v1/orgs/"+acme.ID, map[string]any{"plan": "enterprise", "rate_limit_per_minute": 7, "burst": 3}, nil)
		expectStatus(t, r, http.StatusOK)
		r.JSON(t, &got)
		if got.Plan != "enterprise" || got.PerMinute == nil || *got.PerMinute != 7 || got.Burst == nil || *got.Burst != 3 ||
			got.PerDay == nil || *got.PerDay != 5000 {
			t.Errorf("after PATCH: %+v (rate_limit_per_day must stay 5000)", got)
		}
		r = c.call("PATCH", "/v1/orgs/"+acme.ID, map[string]any{"rate_limit_per_day": nil, "name": "Acme Corp"}, nil)
		expectStatus(t, r, http.StatusOK)
		r.JSON(t, &got)
		if got.PerDay != nil || got.PerMinute == nil || *got.PerMinute != 7 || got.Name != "Acme Corp" {
			t.Errorf("null resets one limit only: %+v", got)
		}
		r = c.call("PATCH", "/v1/orgs/"+acme.ID, map[string]any{"rate_limit_per_minute": nil, "burst": nil, "plan": "premium"}, nil)
		expectStatus(t, r, http.StatusOK)
		for _, tc := range []struct {
			body   string
			status int
			field  string
		}{
			{`{"plan": "gold"}`, 422, "plan"},
			{`{"plan": null}`, 422, "plan"},
			{`{"disabled": "yes"}`, 400, "disabled"},
			{`{"colour": "red"}`, 400, "colour"},
			{`{"burst": -1}`, 422, ""},
			{`{`, 400, "body"},
		} {
			expectError(t, c.call("PATCH", "/v1/orgs/"+acme.ID, tc.body, nil), tc.status, tc.field)
		}
		expectError(t, c.call("PATCH", "/v1/orgs/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70", `{"name": "ghost"}`, nil), 404, "")
		r = c.call("GET", "/v1/orgs/"+acme.ID, nil, nil)
		if r.JSON(t, &got); got.Plan != "premium" || got.PerMinute != nil || got.Burst != nil {
			t.Errorf("refused updates changed something: %+v", got)
		}
	})

	var key apiKey
	t.Run("keys", func(t *testing.T) {
		r := c.call("POST", "/v1/orgs/"+acme.ID+"/keys", map[string]any{"name": "ci", "expires_in": "720h"}, nil)
		expectStatus(t, r, http.StatusCreated)
		r.JSON(t, &key)
		if !strings.HasPrefix(key.Key, "sk_live_") || key.OrgID != acme.ID || key.Status != "active" || key.Expires == nil ||
			key.Prefix != key.Key[:12] {
			t.Fatalf("created key %+v", key)
		}
		if loc := r.Header.Get("Location"); loc != "/v1/keys/"+key.ID {
			t.Errorf("Location %q", loc)
		}
		if code := gatewayStatus(t, gatewayURL+"/", key.Key); code != http.StatusOK {
			t.Fatalf("gateway with the new key: %d", code)
		}
		var test apiKey
		r = c.call("POST", "/v1/orgs/"+acme.ID+"/keys", map[string]any{"name": "sandbox", "test": true, "plan": "basic"}, nil)
		expectStatus(t, r, http.StatusCreated)
		if r.JSON(t, &test); !strings.HasPrefix(test.Key, "sk_test_") {
			t.Errorf("test key %q", test.Key)
		}

		// The key is never shown again.
		r = c.call("GET", "/v1/keys/"+key.ID, nil, nil)
		expectStatus(t, r, http.StatusOK)
		if strings.Contains(string(r.Body), key.Key) || strings.Contains(string(r.Body), `"key"`) {
			t.Errorf("GET key shows the key: %s", r.Body)
		}
		expectError(t, c.call("GET", "/v1/keys/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70", nil, nil), 404, "")
		for _, tc := range []struct {
			org, body string
			status    int
			field     string
		}{
			{acme.ID, `{}`, 422, "name"},
			{acme.ID, `{"name": "x", "expires_in": "soon"}`, 422, "expires_in"},
			{acme.ID, `{"name": "x", "expires_in": 30}`, 400, "expires_in"},
			{acme.ID, `{"name": "x", "plan": "gold"}`, 422, "plan"},
			{acme.ID, `{"name": "x", "secret": "y"}`, 400, "secret"},
			{acme.ID, `{"name": "x", "test": "yes"}`, 400, "test"},
			{"0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70", `{"name": "x"}`, 404, ""},
		} {
			expectError(t, c.call("POST", "/v1/orgs/"+tc.org+"/keys", tc.body, nil), tc.status, tc.field)
		}

		// Pages of keys.
		for i := 0; i < 3; i++ {
			c.createKey(acme.ID, fmt.Sprintf("paged-%d", i))
		}
		var keys []apiKey
		cursor := ""
		for pages := 0; ; pages++ {
			path := "/v1/orgs/" + acme.ID + "/keys?limit=2"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			r := c.call("GET", path, nil, nil)
			expectStatus(t, r, http.StatusOK)
			var page apiPage[apiKey]
			r.JSON(t, &page)
			for _, k := range page.Data {
				if k.Key != "" {
					t.Errorf("a listed key shows the key")
				}
			}
			keys = append(keys, page.Data...)
			if page.NextCursor == nil {
				break
			}
			cursor = *page.NextCursor
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
		}
		if len(keys) != 5 {
			t.Errorf("listed %d keys, want 5", len(keys))
		}
		expectError(t, c.call("GET", "/v1/orgs/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70/keys", nil, nil), 404, "")
		expectError(t, c.call("GET", "/v1/orgs/"+acme.ID+"/keys?limit=-1", nil, nil), 400, "limit")
	})

	t.Run("limits", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			if code := gatewayStatus(t, gatewayURL+"/", key.Key); code != http.StatusOK {
				t.Fatalf("gateway: %d", code)
			}
		}
		r := c.call("GET", "/v1/orgs/"+acme.ID+"/limits", nil, nil)
		expectStatus(t, r, http.StatusOK)
		var l struct {
			OrgID           string `json:"organization_id"`
			Plan            string `json:"plan"`
			PerMinute       int64  `json:"per_minute"`
			PerDay          int64  `json:"per_day"`
			Burst           int64  `json:"burst"`
			RemainingMinute int64  `json:"remaining_minute"`
			RemainingDay    int64  `json:"remaining_day"`
			UsedToday       int64  `json:"used_today"`
			Source          string `json:"source"`
		}
		r.JSON(t, &l)
		// Premium: 1000/min, burst 500, 100000/day; the key was used 4
		// times (once in "keys", three times here).
		if l.OrgID != acme.ID || l.Plan != "premium" || l.PerMinute != 1000 || l.Burst != 500 || l.PerDay != 100000 ||
			l.UsedToday != 4 || l.RemainingDay != 100000-4 || l.Source != "local" ||
			l.RemainingMinute < 1500-4 || l.RemainingMinute > 1500 { // the bucket refills meanwhile
			t.Errorf("limits %+v", l)
		}
		again := c.call("GET", "/v1/orgs/"+acme.ID+"/limits", nil, nil)
		var l2 struct {
			UsedToday int64 `json:"used_today"`
		}
		if again.JSON(t, &l2); l2.UsedToday != 4 {
			t.Errorf("reading the limits consumed something: used_today %d", l2.UsedToday)
		}
		expectError(t, c.call("GET", "/v1/orgs/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70/limits", nil, nil), 404, "")
	})

	t.Run("idempotent retries", func(t *testing.T) {
		hdr := map[string]string{"Idempotency-Key": "org-create-1f0c"}
		body := map[string]any{"name": "Retry Inc", "plan": "basic"}
		first := c.call("POST", "/v1/orgs", body, hdr)
		expectStatus(t, first, http.StatusCreated)
		second := c.call("POST", "/v1/orgs", `{ "plan": "basic", "name": "Retry Inc" }`, hdr) // same body, other spelling
		expectStatus(t, second, http.StatusCreated)
		var o1, o2 apiOrg
		first.JSON(t, &o1)
		second.JSON(t, &o2)
		if o1.ID != o2.ID || string(first.Body) != string(second.Body) || second.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry answered %s (replayed %q), first %s", second.Body, second.Header.Get("Idempotent-Replayed"), first.Body)
		}
		if second.Header.Get("Location") != first.Header.Get("Location") {
			t.Errorf("retry Location %q, first %q", second.Header.Get("Location"), first.Header.Get("Location"))
		}
		expectError(t, c.call("POST", "/v1/orgs", map[string]any{"name": "Other Inc"}, hdr), 422, "Idempotency-Key")
		expectError(t, c.call("POST", "/v1/orgs", body, map[string]string{"Idempotency-Key": "bad key with spaces"}), 400, "Idempotency-Key")
		if n := countOrgsNamed(t, c, "Retry Inc"); n != 1 {
			t.Errorf("%d organizations named Retry Inc, want 1", n)
		}

		// A key creation retried gets the same key again; concurrent
		// retries create one key.
		const retries = 8
		answers := make([]adminResponse, retries)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[i] = c.call("POST", "/v1/orgs/"+o1.ID+"/keys", map[string]any{"name": "retried"}, map[string]string{"Idempotency-Key": "key-create-77aa"})
			}()
		}
		wg.Wait()
		var firstKey apiKey
		replays := 0
		for i, a := range answers {
			expectStatus(t, a, http.StatusCreated)
			var k apiKey
			a.JSON(t, &k)
			if i == 0 {
				firstKey = k
			} else if k.ID != firstKey.ID || k.Key != firstKey.Key {
				t.Errorf("retry %d created key %s, first %s", i, k.ID, firstKey.ID)
			}
			if a.Header.Get("Idempotent-Replayed") == "true" {
				replays++
			}
		}
		if replays != retries-1 {
			t.Errorf("%d answers replayed, want %d", replays, retries-1)
		}
		r := c.call("GET", "/v1/orgs/"+o1.ID+"/keys", nil, nil)
		var page apiPage[apiKey]
		if r.JSON(t, &page); len(page.Data) != 1 {
			t.Errorf("%d keys after %d concurrent retries, want 1", len(page.Data), retries)
		}
		if code := gatewayStatus(t, gatewayURL+"/", firstKey.Key); code != http.StatusOK {
			t.Errorf("the key of the replayed answer: gateway %d", code)
		}
		// A failed request leaves no record: retrying it runs again.
		dead := c.createOrg("Dead Co", "basic")
		c.call("PATCH", "/v1/orgs/"+dead.ID, map[string]any{"disabled": true}, nil)
		expectError(t, c.call("POST", "/v1/orgs/"+dead.ID+"/keys", map[string]any{"name": "k"}, map[string]string{"Idempotency-Key": "after-enable"}), 409, "")
		c.call("PATCH", "/v1/orgs/"+dead.ID, map[string]any{"disabled": false}, nil)
		expectStatus(t, c.call("POST", "/v1/orgs/"+dead.ID+"/keys", map[string]any{"name": "k"}, map[string]string{"Idempotency-Key": "after-enable"}), http.StatusCreated)
	})

	t.Run("disable and enable", func(t *testing.T) {
		r := c.call("PATCH", "/v1/orgs/"+acme.ID, map[string]any{"disabled": true}, nil)
		expectStatus(t, r, http.StatusOK)
		var o apiOrg
		if r.JSON(t, &o); o.Disabled == nil {
			t.Fatalf("not disabled: %s", r.Body)
		}
		waitGatewayStatus(t, 2*time.Second, gatewayURL+"/", key.Key, http.StatusForbidden)
		expectError(t, c.call("POST", "/v1/orgs/"+acme.ID+"/keys", map[string]any{"name": "x"}, nil), 409, "")
		expectStatus(t, c.call("PATCH", "/v1/orgs/"+acme.ID, map[string]any{"disabled": false}, nil), http.StatusOK)
		waitGatewayStatus(t, 2*time.Second, gatewayURL+"/", key.Key, http.StatusOK)
	})

	t.Run("rotate", func(t *testing.T) {
		r := c.call("POST", "/v1/keys/"+key.ID+"/rotate", map[string]any{"grace": "1h"}, nil)
		expectStatus(t, r, http.StatusCreated)
		var rot apiKey
		r.JSON(t, &rot)
		if rot.ID == key.ID || !strings.HasPrefix(rot.Key, "sk_live_") || rot.Replaces == nil || rot.Replaces.ID != key.ID ||
			rot.Replaces.ReplacedBy == nil || *rot.Replaces.ReplacedBy != rot.ID {
			t.Fatalf("rotation %s", r.Body)
		}
		if code := gatewayStatus(t, gatewayURL+"/", rot.Key); code != http.StatusOK {
			t.Errorf("new key: %d", code)
		}
		if code := gatewayStatus(t, gatewayURL+"/", key.Key); code != http.StatusOK {
			t.Errorf("old key in its grace period: %d", code)
		}
		expectError(t, c.call("POST", "/v1/keys/"+key.ID+"/rotate", nil, nil), 409, "")
		expectError(t, c.call("POST", "/v1/keys/"+rot.ID+"/rotate", `{"grace": "forever"}`, nil), 422, "grace")
		expectError(t, c.call("POST", "/v1/keys/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70/rotate", nil, nil), 404, "")
		// Grace 0 ends the old key now.
		r = c.call("POST", "/v1/keys/"+rot.ID+"/rotate", map[string]any{"grace": "0"}, nil)
		expectStatus(t, r, http.StatusCreated)
		var rot2 apiKey
		r.JSON(t, &rot2)
		waitGatewayStatus(t, 2*time.Second, gatewayURL+"/", rot.Key, http.StatusForbidden)
		key = rot2
	})

	t.Run("revoke", func(t *testing.T) {
		start := time.Now()
		r := c.call("POST", "/v1/keys/"+key.ID+"/revoke", nil, nil)
		expectStatus(t, r, http.StatusOK)
		var k apiKey
		if r.JSON(t, &k); k.Status != "revoked" {
			t.Fatalf("revoked key %s", r.Body)
		}
		took := waitGatewayStatus(t, 2*time.Second, gatewayURL+"/", key.Key, http.StatusForbidden)
		t.Logf("gateway refused the revoked key %s after the API answered (%s after the call)", took, time.Since(start))
		// Again: no change, same answer.
		expectStatus(t, c.call("POST", "/v1/keys/"+key.ID+"/revoke", `{}`, nil), http.StatusOK)
		expectError(t, c.call("POST", "/v1/keys/"+key.ID+"/revoke", `{"reason": "x"}`, nil), 400, "reason")
		expectError(t, c.call("POST", "/v1/keys/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70/revoke", nil, nil), 404, "")
		expectError(t, c.call("POST", "/v1/keys/"+key.ID+"/rotate", nil, nil), 409, "")
	})

	t.Run("methods and paths", func(t *testing.T) {
		r := c.call("DELETE", "/v1/orgs/"+acme.ID, nil, nil)
		expectError(t, r, http.StatusMethodNotAllowed, "")
		if r.Header.Get("Allow") != "GET, PATCH" {
			t.Errorf("Allow %q", r.Header.Get("Allow"))
		}
		expectError(t, c.call("GET", "/v1/organisations", nil, nil), http.StatusNotFound, "")
	})

	t.Run("usage", func(t *testing.T) { testAdminUsage(t, c, gatewayURL) })

	c.coverage()
}

func countOrgsNamed(t *testing.T, c *adminClient, name string) int {
	t.Helper()
	r := c.call("GET", "/v1/orgs?limit=1000", nil, nil)
	var page apiPage[apiOrg]
	r.JSON(t, &page)
	n := 0
	for _, o := range page.Data {
		if o.Name == name {
			n++
		}
	}
	return n
}

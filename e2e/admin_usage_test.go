package e2e

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// usageRow is the part of a usage row the tests read.
type usageRow struct {
	Bucket            string `json:"bucket"`
	KeyID             string `json:"key_id"`
	Outcome           string `json:"outcome"`
	Requests          int64  `json:"requests"`
	Allowed           int64  `json:"allowed"`
	RateLimitedMinute int64  `json:"rate_limited_minute"`
	BytesOut          int64  `json:"bytes_out"`
	LatencyP50US      int64  `json:"latency_p50_us"`
}

type usageAnswer struct {
	OrgID       string     `json:"organization_id"`
	Granularity string     `json:"granularity"`
	GroupBy     []string   `json:"group_by"`
	Source      string     `json:"source"`
	Rows        []usageRow `json:"rows"`
}

func sumRequests(rows []usageRow) (n int64) {
	for _, r := range rows {
		n += r.Requests
	}
	return n
}

// waitUsage polls an organization's usage until it counts want requests
// (events reach the store within seconds of their request).
func waitUsage(t *testing.T, c *adminClient, orgID, query string, want int64) usageAnswer {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := c.call("GET", "/v1/orgs/"+orgID+"/usage"+query, nil, nil)
		expectStatus(t, r, http.StatusOK)
		var u usageAnswer
		r.JSON(t, &u)
		if got := sumRequests(u.Rows); got == want {
			return u
		} else if got > want || time.Now().After(deadline) {
			t.Fatalf("usage of %s counts %d requests, want %d: %s", orgID, got, want, r.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testAdminUsage: an organization's requests through the gateway, as the
// admin API's usage route reports them (JSON and CSV), and its errors.
func testAdminUsage(t *testing.T, c *adminClient, gatewayURL string) {
	org := c.createOrg("Usage Co", "basic")
	k1, k2 := c.createKey(org.ID, "one"), c.createKey(org.ID, "two")
	for i := 0; i < 3; i++ {
		gatewayStatus(t, gatewayURL+"/", k1.Key)
	}
	gatewayStatus(t, gatewayURL+"/", k2.Key)

	u := waitUsage(t, c, org.ID, "?granularity=minute", 4)
	if u.OrgID != org.ID || u.Granularity != "minute" || u.Source != "memory" || len(u.GroupBy) != 0 {
		t.Errorf("report %+v", u)
	}
	for _, r := range u.Rows {
		if r.Allowed != r.Requests || r.BytesOut == 0 {
			t.Errorf("row %+v: want every request allowed, with bytes", r)
		}
	}
	byKey := waitUsage(t, c, org.ID, "?granularity=hour&group_by=key,outcome", 4)
	perKey := map[string]int64{}
	for _, r := range byKey.Rows {
		perKey[r.KeyID] += r.Requests
		if r.Outcome != "allowed" {
			t.Errorf("outcome %q", r.Outcome)
		}
	}
	if perKey[k1.ID] != 3 || perKey[k2.ID] != 1 || len(perKey) != 2 {
		t.Errorf("per key %v, want %s:3 %s:1", perKey, k1.ID, k2.ID)
	}

	r := c.call("GET", "/v1/orgs/"+org.ID+"/usage?granularity=day&group_by=key", nil, map[string]string{"Accept": "text/csv"})
	expectStatus(t, r, http.StatusOK)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("Content-Type %q", ct)
	}
	records, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
	if err != nil || len(records) < 2 || records[0][0] != "bucket" || records[0][1] != "key_id" || records[0][2] != "requests" {
		t.Fatalf("CSV %v: %s", err, r.Body)
	}

	for _, tc := range []struct {
		query, field string
	}{
		{"?from=yesterday", "from"},
		{"?to=2026-13-01T00:00:00Z", "to"},
		{"?granularity=week", "granularity"},
		{"?group_by=colour", "group_by"},
		{"?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"},
		{"?from=2000-01-01T00:00:00Z&granularity=minute", "granularity"},
	} {
		expectError(t, c.call("GET", "/v1/orgs/"+org.ID+"/usage"+tc.query, nil, nil), 400, tc.field)
	}
	expectError(t, c.call("GET", "/v1/orgs/"+org.ID+"/usage", nil, map[string]string{"Accept": "image/png"}), 406, "Accept")
	expectError(t, c.call("GET", "/v1/orgs/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70/usage", nil, nil), 404, "")
}

// tenantUsage is the part of GET /v1/usage the tests read.
type tenantUsage struct {
	OrgID  string `json:"organization_id"`
	Plan   string `json:"plan"`
	KeyID  string `json:"key_id"`
	Limits *struct {
		PerDay       int64 `json:"per_day"`
		RemainingDay int64 `json:"remaining_day"`
		UsedToday    int64 `json:"used_today"`
	} `json:"limits"`
	Today  usagePeriodJSON `json:"today"`
	Month  usagePeriodJSON `json:"month"`
	Source string          `json:"source"`
}

type usagePeriodJSON struct {
	Requests int64 `json:"requests"`
	Allowed  int64 `json:"allowed"`
	BytesOut int64 `json:"bytes_out"`
	Keys     []struct {
		KeyID    string `json:"key_id"`
		Requests int64  `json:"requests"`
	} `json:"keys"`
}

// selfService calls GET /v1/usage on the gateway with key.
func selfService(t *testing.T, url, key string) (int, tenantUsage, []byte) {
	t.Helper()
	r := getWithKey(t, httpClient(), url, key)
	var u tenantUsage
	if r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, &u); err != nil {
			t.Fatalf("GET /v1/usage: not JSON: %v: %s", err, r.body)
		}
	}
	return r.status, u, r.body
}

// TestTenantUsageReportIsolation: a tenant's GET /v1/usage reports its own
// organization only, whatever the query string names, with its live limits.
func TestTenantUsageReportIsolation(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	ports := startAdminGateway(t, dsn)
	adminPort, gatewayURL := ports.backend, ports.gatewayURL()
	c := newAdminClient(t, "http://127.0.0.1:"+adminPort, adminToken)
	a, b := c.createOrg("Tenant A", "basic"), c.createOrg("Tenant B", "premium")
	ka, kb := c.createKey(a.ID, "a"), c.createKey(b.ID, "b")
	for i := 0; i < 2; i++ {
		gatewayStatus(t, gatewayURL+"/api/a", ka.Key)
	}
	for i := 0; i < 5; i++ {
		gatewayStatus(t, gatewayURL+"/api/b", kb.Key)
	}
	waitUsage(t, c, a.ID, "?granularity=minute", 2)
	waitUsage(t, c, b.ID, "?granularity=minute", 5)

	for _, query := range []string{"", "?org_id=" + b.ID, "?org=" + b.ID + "&organization_id=" + b.ID, "?key_id=" + kb.ID} {
		code, u, body := selfService(t, gatewayURL+"/v1/usage"+query, ka.Key)
		if code != http.StatusOK {
			t.Fatalf("GET /v1/usage%s: %d %s", query, code, body)
		}
		if strings.Contains(string(body), b.ID) || strings.Contains(string(body), kb.ID) {
			t.Errorf("GET /v1/usage%s with A's key shows B: %s", query, body)
		}
		// A's two requests, plus A's earlier /v1/usage calls (counted
		// once their events arrive).
		if u.OrgID != a.ID || u.Plan != "basic" || u.KeyID != ka.ID || u.Today.Requests < 2 || u.Month.Requests < u.Today.Requests {
			t.Errorf("GET /v1/usage%s: %s", query, body)
		}
		for _, k := range u.Today.Keys {
			if k.KeyID != ka.ID {
				t.Errorf("key %s in A's report", k.KeyID)
			}
		}
		// basic: 10 000 a day; the limiter counted A's requests (the
		// usage calls included), never B's five.
		if u.Limits == nil || u.Limits.PerDay != 10000 || u.Limits.UsedToday < 3 || u.Limits.UsedToday > 6 ||
			u.Limits.RemainingDay != 10000-u.Limits.UsedToday {
			t.Errorf("limits %+v", u.Limits)
		}
	}
	code, u, body := selfService(t, gatewayURL+"/v1/usage", kb.Key)
	if code != http.StatusOK || u.OrgID != b.ID || u.Today.Requests < 5 || strings.Contains(string(body), a.ID) {
		t.Errorf("B's report: %d %s", code, body)
	}
	if code, _, _ := selfService(t, gatewayURL+"/v1/usage", "sk_live_not_a_real_key"); code != http.StatusForbidden {
		t.Errorf("unknown key: %d, want 403", code)
	}
}

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"
)

func readDefaultCaddyfile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Fatalf("reading the default Caddyfile: %v", err)
	}
	return string(b)
}

// TestDefaultCaddyfileAsProcess runs the repository's default Caddyfile in a
// built binary with no environment beyond free ports, as the README's run
// command does, and checks what the README promises.
func TestDefaultCaddyfileAsProcess(t *testing.T) {
	demo := freePort(t)
	g := startProcess(t, readDefaultCaddyfile(t), "DEMO_BACKEND_PORT="+demo, "API_SERVICE_URL=127.0.0.1:"+demo)

	get := func(path string, headers map[string]string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, g.URL+path, nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}

	for _, path := range []string{"/health", "/health/live", "/health/ready"} {
		if code, body := get(path, nil); code != http.StatusOK {
			t.Errorf("%s = %d: %s", path, code, body)
		}
	}
	if code, _ := get("/api/users", nil); code != http.StatusUnauthorized {
		t.Errorf("no key: %d, want 401", code)
	}
	if code, _ := get("/api/users", map[string]string{"Authorization": "Bearer sk_test_wrong"}); code != http.StatusForbidden {
		t.Errorf("wrong key: %d, want 403", code)
	}
	code, body := get("/api/users", map[string]string{
		"Authorization":     "Bearer sk_test_abc123",
		"X-Organization-ID": "evil",
		"X-Plan-Tier":       "enterprise",
	})
	if code != http.StatusOK {
		t.Fatalf("demo key: %d, want 200: %s", code, body)
	}
	var echo struct {
		OrganizationID string `json:"organization_id"`
		PlanTier       string `json:"plan_tier"`
		RequestID      string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &echo); err != nil {
		t.Fatalf("demo backend answer is not JSON: %v: %s", err, body)
	}
	if echo.OrganizationID != "org_1" || echo.PlanTier != "premium" || echo.RequestID == "" {
		t.Errorf("backend saw org=%q plan=%q request_id=%q, want org_1/premium/non-empty", echo.OrganizationID, echo.PlanTier, echo.RequestID)
	}
}

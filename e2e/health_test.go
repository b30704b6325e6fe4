package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestHealthEndpointsAnswerWithoutKey(t *testing.T) {
	p := newTestPorts(t)
	tester := startGateway(t, p, `
:`+p.gateway+` {
	handle /health* {
		tenant_health
	}
	route {
		tenant_auth {
			key sk_test_health org_h basic
		}
		error "service not found" 404
	}
}`)
	for _, path := range []string{"/health", "/health/live", "/health/ready"} {
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d, body %s", path, resp.StatusCode, body)
			continue
		}
		var got struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(body, &got); err != nil || got.Status != "ok" {
			t.Errorf("%s: body %s, want status ok", path, body)
		}
	}
}

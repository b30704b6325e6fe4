package caddyauth

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"

	// tenant_health serves /health/ready.
	_ "github.com/tenantgate/tenantgate/caddyhealth"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// TestTwoDatabasesAreTwoReadinessChecks runs a config whose two handlers
// use two databases, one of them unreachable but beside static keys:
// /health/ready reports each database, named after it, and the handler
// that still serves its static keys is degraded, not down.
func TestTwoDatabasesAreTwoReadinessChecks(t *testing.T) {
	reachable := testenv.MigratedDatabase(t)
	const unreachable = "postgres://postgres@127.0.0.1:1/elsewhere?sslmode=disable&connect_timeout=1"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	route := func(path string, auth map[string]any) map[string]any {
		auth["handler"] = "tenant_auth"
		return map[string]any{
			"match":  []any{map[string]any{"path": []string{path}}},
			"handle": []any{auth, map[string]any{"handler": "static_response", "body": "ok"}},
		}
	}
	cfg, err := json.Marshal(map[string]any{
		"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"gw": map[string]any{
			"listen": []string{addr},
			"routes": []any{
				map[string]any{
					"match":  []any{map[string]any{"path": []string{"/health*"}}},
					"handle": []any{map[string]any{"handler": "tenant_health"}},
				},
				route("/a/*", map[string]any{"database_url": reachable}),
				route("/b/*", map[string]any{"database_url": unreachable,
					"keys": []any{map[string]any{"key": "sk_test_readiness", "org_id": "org_b", "plan": "basic"}}}),
			},
		}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = caddy.Stop() }()

	type report struct {
		Status string `json:"status"`
		Checks map[string]struct {
			Status string `json:"status"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	pc, err := pgx.ParseConfig(reachable)
	if err != nil {
		t.Fatal(err)
	}
	nameA := fmt.Sprintf("postgres:%s:%d/%s", pc.Host, pc.Port, pc.Database)
	nameB := "postgres:127.0.0.1:1/elsewhere"
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health/ready")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		var r report
		if json.Unmarshal(body, &r) == nil && len(r.Checks) == 2 &&
			r.Checks[nameA].Status == "ok" && r.Checks[nameB].Status == "degraded" &&
			strings.Contains(r.Checks[nameB].Detail, "static keys are served") &&
			r.Status == "degraded" && resp.StatusCode == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health/ready = %s; want %s ok and %s degraded (static keys served), overall degraded with 200", last, nameA, nameB)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

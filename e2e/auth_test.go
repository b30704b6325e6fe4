package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// demoBackend is a Caddy site on the test's backend port that echoes what
// the gateway sent upstream.
func demoBackend(p testPorts) string {
	return `
http://:` + p.backend + ` {
	bind 127.0.0.1
	header Content-Type application/json
	respond ` + "`" + `{"org":"{header.X-Organization-ID}","plan":"{header.X-Plan-Tier}","rid":"{header.X-Request-ID}","auth":"{header.Authorization}","spoof_underscore":"{header.X_Organization_ID}"}` + "`" + ` 200
}
`
}

const testKey = "sk_test_e2eKey0123456789abcdefghijkl"

// authGateway is a gateway with one static key, the demo backend, a
// panicking route, a closed upstream and a slow one, logging to logPath.
func authGateway(p testPorts, logPath, closedPort, slowAddr string) string {
	return `
:` + p.gateway + ` {
	log {
		output file ` + logPath + `
		format json
	}
	handle /health* {
		tenant_health
	}
	route {
		tenant_auth {
			key ` + testKey + ` org_e2e premium
		}
		handle /api/* {
			header X-Tenant-Placeholders "{tenant.org_id}|{tenant.plan}|{tenant.key_id}|{tenant.request_id}|{http.auth.user.id}"
			reverse_proxy 127.0.0.1:` + p.backend + `
		}
		route /panic {
			test_panic
		}
		handle /closed {
			reverse_proxy 127.0.0.1:` + closedPort + `
		}
		handle /slow {
			reverse_proxy ` + slowAddr + ` {
				transport http {
					response_header_timeout 300ms
				}
			}
		}
		error "service not found" 404
	}
}
` + demoBackend(p)
}

func TestAuthStatusesAndEnvelope(t *testing.T) {
	dir := t.TempDir()
	logPath, errLogPath := filepath.Join(dir, "access.log"), filepath.Join(dir, "errors.log")
	slow := startSlowBackend(t, 3*time.Second)
	p := newTestPorts(t)
	tester := startGatewayWithGlobals(t, p, `
	log handler_errors {
		output file `+errLogPath+`
		format json
		include http.handlers.tenant_auth
	}`, authGateway(p, logPath, freePort(t), slow))
	bearer := map[string]string{"Authorization": "Bearer " + testKey}

	t.Run("401 for each malformed Authorization", func(t *testing.T) {
		cases := map[string]string{
			"missing":        "",
			"wrong scheme":   "Basic dXNlcjpwYXNz",
			"scheme only":    "Bearer",
			"empty token":    "Bearer    ",
			"no space":       "Bearer" + testKey,
			"oversized":      "Bearer " + strings.Repeat("a", 257),
			"control char":   "Bearer sk_test_\tabc",
			"inner space":    "Bearer sk_test abc",
			"bad characters": "Bearer sk_test_<script>",
		}
		for name, value := range cases {
			headers := map[string]string{}
			if value != "" {
				headers["Authorization"] = value
			}
			resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/api/users", headers)
			env := assertEnvelope(t, resp, body, http.StatusUnauthorized)
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: WWW-Authenticate = %q", name, resp.Header.Get("WWW-Authenticate"))
			}
			t.Logf("%s → %q", name, env.Error.Message)
		}
	})

	t.Run("403 for an unknown key", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/api/users",
			map[string]string{"Authorization": "Bearer sk_test_unknownKey00000000000000000000"})
		env := assertEnvelope(t, resp, body, http.StatusForbidden)
		if env.Error.Message != "invalid API key" {
			t.Errorf("message = %q", env.Error.Message)
		}
	})

	t.Run("404 service not found", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/nowhere", bearer)
		env := assertEnvelope(t, resp, body, http.StatusNotFound)
		if env.Error.Message != "service not found" {
			t.Errorf("message = %q", env.Error.Message)
		}
	})

	t.Run("500 from a downstream panic, no stack in the body", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/panic", bearer)
		env := assertEnvelope(t, resp, body, http.StatusInternalServerError)
		if strings.Contains(string(body), "goroutine") || strings.Contains(string(body), "/secret/stack/marker") {
			t.Errorf("500 body leaks the panic: %s", body)
		}
		if env.Error.Message != "internal server error" {
			t.Errorf("message = %q", env.Error.Message)
		}
	})

	t.Run("502 from a closed upstream port", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/closed", bearer)
		env := assertEnvelope(t, resp, body, http.StatusBadGateway)
		if strings.Contains(env.Error.Message, "127.0.0.1") {
			t.Errorf("502 message leaks the upstream address: %q", env.Error.Message)
		}
	})

	t.Run("504 from a slow upstream", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/slow", bearer)
		assertEnvelope(t, resp, body, http.StatusGatewayTimeout)
	})

	t.Run("keeps serving after panic, 502 and 504", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/api/users", bearer)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})

	t.Run("panic logged at ERROR with stack and request id", func(t *testing.T) {
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/panic", bearer)
		env := assertEnvelope(t, resp, body, http.StatusInternalServerError)
		line := waitForLogLine(t, errLogPath, env.RequestID)
		if line["level"] != "error" || line["msg"] != "panic recovered" {
			t.Errorf("panic log line = %v, want level error, msg 'panic recovered'", line)
		}
		if stack, _ := line["stack"].(string); !strings.Contains(stack, "panicHandler") {
			t.Errorf("panic log has no stack naming the panicking handler: %q", stack)
		}
		access := waitForLogLine(t, logPath, env.RequestID)
		if access["status"] != float64(500) {
			t.Errorf("access log status = %v, want 500", access["status"])
		}
	})
}

func TestIdentityHeadersAndRequestID(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := newTestPorts(t)
	tester := startGateway(t, p, authGateway(p, logPath, freePort(t), "127.0.0.1:"+freePort(t)))

	type echo struct {
		Org, Plan, Rid, Auth string
		SpoofUnderscore      string `json:"spoof_underscore"`
	}
	call := func(headers map[string]string) (*http.Response, echo) {
		t.Helper()
		headers["Authorization"] = "Bearer " + testKey
		resp, body := do(t, tester, http.MethodGet, p.gatewayURL()+"/api/users", headers)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var e echo
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("backend answer: %v: %s", err, body)
		}
		return resp, e
	}

	t.Run("spoofed identity headers never reach the backend", func(t *testing.T) {
		_, e := call(map[string]string{
			"X-Organization-ID": "org_evil",
			"X-Plan-Tier":       "enterprise",
			"X_Organization_ID": "org_evil_underscore",
		})
		if e.Org != "org_e2e" || e.Plan != "premium" {
			t.Errorf("backend saw org=%q plan=%q, want org_e2e/premium", e.Org, e.Plan)
		}
		if e.SpoofUnderscore != "" {
			t.Errorf("underscore spelling reached the backend: %q", e.SpoofUnderscore)
		}
		if e.Auth != "" {
			t.Errorf("Authorization reached the backend: %q", e.Auth)
		}
	})

	t.Run("placeholders carry the identity", func(t *testing.T) {
		resp, _ := call(map[string]string{"X-Request-ID": "placeholder-check"})
		parts := strings.Split(resp.Header.Get("X-Tenant-Placeholders"), "|")
		if len(parts) != 5 || parts[0] != "org_e2e" || parts[1] != "premium" ||
			!strings.HasPrefix(parts[2], "static_") || parts[3] != "placeholder-check" || parts[4] != parts[2] {
			t.Errorf("placeholders = %q, want org_e2e|premium|static_…|placeholder-check|<key id>", resp.Header.Get("X-Tenant-Placeholders"))
		}
	})

	t.Run("well-formed request id is honoured and echoed", func(t *testing.T) {
		resp, e := call(map[string]string{"X-Request-ID": "client-req.42_A"})
		if e.Rid != "client-req.42_A" || resp.Header.Get("X-Request-ID") != "client-req.42_A" {
			t.Errorf("backend saw %q, response echoed %q", e.Rid, resp.Header.Get("X-Request-ID"))
		}
	})

	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for name, incoming := range map[string]string{
		"absent":    "",
		"too long":  strings.Repeat("a", 129),
		"bad chars": "id with spaces;<x>",
	} {
		t.Run("request id generated when "+name, func(t *testing.T) {
			h := map[string]string{}
			if incoming != "" {
				h["X-Request-ID"] = incoming
			}
			resp, e := call(h)
			if !uuidRE.MatchString(e.Rid) {
				t.Errorf("backend saw request id %q, want a new UUID", e.Rid)
			}
			if resp.Header.Get("X-Request-ID") != e.Rid {
				t.Errorf("response echoed %q, backend saw %q", resp.Header.Get("X-Request-ID"), e.Rid)
			}
		})
	}

	t.Run("access log has tenant fields and never the key", func(t *testing.T) {
		resp, _ := call(map[string]string{"X-Request-ID": "log-check-1"})
		_ = resp
		line := waitForLogLine(t, logPath, "log-check-1")
		for field, want := range map[string]string{
			"organization_id": "org_e2e",
			"plan_tier":       "premium",
		} {
			if line[field] != want {
				t.Errorf("access log %s = %v, want %q", field, line[field], want)
			}
		}
		if id, _ := line["key_id"].(string); !strings.HasPrefix(id, "static_") {
			t.Errorf("access log key_id = %v", line["key_id"])
		}
		if line["user_id"] != line["key_id"] {
			t.Errorf("user_id %v != key_id %v", line["user_id"], line["key_id"])
		}
		raw, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), testKey) {
			t.Errorf("the API key appears in the access log")
		}
	})
}

// waitForLogLine returns the first JSON access-log line whose request_id is
// rid, waiting briefly for the logger to flush.
func waitForLogLine(t *testing.T, path, rid string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		raw, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(raw), "\n") {
			if !strings.Contains(l, rid) {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err == nil && m["request_id"] == rid {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access-log line with request_id %q in %s:\n%s", rid, path, raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

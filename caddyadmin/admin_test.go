package caddyadmin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

const testToken = "test-admin-token-0123456789"

// newTestAdmin is a handler as Provision leaves it, with no database.
func newTestAdmin(t *testing.T, token string) *TenantAdmin {
	t.Helper()
	a := &TenantAdmin{token: token, registry: new(tenant.Registry), logger: zap.NewNop(), audit: zap.NewNop(), usage: &usageSource{}}
	if token != "" {
		a.tokenSum = sha256.Sum256([]byte(token))
		a.tokenID = hex.EncodeToString(a.tokenSum[:4])
	}
	a.mux = newMux(a)
	return a
}

type envelopeBody struct {
	Error struct {
		Code    int               `json:"code"`
		Message string            `json:"message"`
		Details map[string]string `json:"details"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

func serve(t *testing.T, a *TenantAdmin, method, path, auth string, body io.Reader) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	if err := a.ServeHTTP(rec, req, nil); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return rec
}

func decodeEnvelope(t *testing.T, rec *httptest.ResponseRecorder, status int) envelopeBody {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body)
	}
	var env envelopeBody
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Error.Code != status || env.Error.Message == "" {
		t.Fatalf("not the error envelope of a %d: %v: %s", status, err, rec.Body)
	}
	if env.RequestID == "" || env.RequestID != rec.Header().Get("X-Request-ID") {
		t.Errorf("request_id %q, X-Request-ID %q", env.RequestID, rec.Header().Get("X-Request-ID"))
	}
	return env
}

func TestTokenRequiredOnTheAPI(t *testing.T) {
	a := newTestAdmin(t, testToken)
	for name, auth := range map[string]string{
		"none":         "",
		"wrong":        "Bearer not-the-admin-token-at-all",
		"prefix":       "Bearer " + testToken[:len(testToken)-1],
		"not bearer":   "Basic " + testToken,
		"token alone":  testToken,
		"empty bearer": "Bearer ",
	} {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/v1/orgs", "/v1/keys/0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70", "/v1/nothing", "/v1"} {
				rec := serve(t, a, http.MethodGet, path, auth, nil)
				decodeEnvelope(t, rec, http.StatusUnauthorized)
				if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: WWW-Authenticate %q", path, rec.Header().Get("WWW-Authenticate"))
				}
			}
		})
	}
	// The right token gets through to the route (which has no database here).
	for _, auth := range []string{"Bearer " + testToken, "bearer " + testToken} {
		env := decodeEnvelope(t, serve(t, a, http.MethodGet, "/v1/orgs", auth, nil), http.StatusServiceUnavailable)
		if !strings.Contains(env.Error.Message, "database_url") {
			t.Errorf("no database: message %q does not say what to set", env.Error.Message)
		}
	}
}

func TestPublicPaths(t *testing.T) {
	a := newTestAdmin(t, testToken)
	rec := serve(t, a, http.MethodGet, "/v1/openapi.json", "", nil)
	if rec.Code != http.StatusOK || !json.Valid(rec.Body.Bytes()) || !strings.Contains(rec.Body.String(), `"openapi": "3.1.0"`) {
		t.Errorf("openapi.json without a token: %d %.80s", rec.Code, rec.Body)
	}
	rec = serve(t, a, http.MethodGet, "/", "", nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "<title>Tenantgate admin</title>") {
		t.Fatalf("dashboard: %d %.80s", rec.Code, rec.Body)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("dashboard CSP %q", csp)
	}
	for _, asset := range []string{"/app.js", "/app.css", "/vendor/uPlot.iife.min.js", "/vendor/uPlot.min.css"} {
		if rec := serve(t, a, http.MethodGet, asset, "", nil); rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("%s: %d", asset, rec.Code)
		}
	}
	decodeEnvelope(t, serve(t, a, http.MethodGet, "/nope.html", "", nil), http.StatusNotFound)
	decodeEnvelope(t, serve(t, a, http.MethodPost, "/", "", nil), http.StatusNotFound)
	// Known API path, wrong method: 405 naming the methods.
	rec = serve(t, a, http.MethodDelete, "/v1/orgs", "Bearer "+testToken, nil)
	decodeEnvelope(t, rec, http.StatusMethodNotAllowed)
	if rec.Header().Get("Allow") != "GET, POST" {
		t.Errorf("Allow %q, want GET, POST", rec.Header().Get("Allow"))
	}
	// Unknown API path: 404 in the envelope.
	decodeEnvelope(t, serve(t, a, http.MethodGet, "/v1/nothing", "Bearer "+testToken, nil), http.StatusNotFound)
}

func TestNoTokenOpensTheAPI(t *testing.T) {
	a := newTestAdmin(t, "")
	decodeEnvelope(t, serve(t, a, http.MethodGet, "/v1/orgs", "", nil), http.StatusServiceUnavailable)
}

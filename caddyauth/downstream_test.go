package caddyauth

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

const downstreamTestKey = "sk_test_downstream0123456789abcdefgh"

// newHandlerForTest is a provisioned-enough tenant_auth with one static key,
// logging into the returned observer.
func newHandlerForTest(t *testing.T) (*TenantAuth, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	static := staticStoreOf(t, StaticKey{Key: downstreamTestKey, OrgID: "org_1", Plan: "premium"})
	return &TenantAuth{static: static, logger: zap.New(core)}, logs
}

// serveThrough sends an authenticated request through a to next.
func serveThrough(t *testing.T, a *TenantAuth, next caddyhttp.HandlerFunc, requestID string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r := caddyhttp.PrepareRequest(httptest.NewRequest(http.MethodGet, "http://gateway/files/x", nil), caddy.NewReplacer(), w, nil)
	r.Header.Set("Authorization", "Bearer "+downstreamTestKey)
	if requestID != "" {
		r.Header.Set("X-Request-ID", requestID)
	}
	if err := a.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return w
}

func TestResponseCarriesOneRequestIDWhenTheBackendEchoesIt(t *testing.T) {
	a, _ := newHandlerForTest(t)
	for name, next := range map[string]caddyhttp.HandlerFunc{
		"WriteHeader": func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Add("X-Request-Id", r.Header.Get("X-Request-Id"))
			w.Header().Add("X-Request-Id", "backend-own-id")
			w.WriteHeader(http.StatusOK)
			return nil
		},
		"Write only": func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Add("X-Request-Id", "backend-own-id")
			_, err := w.Write([]byte("ok"))
			return err
		},
		"ReadFrom": func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Add("X-Request-Id", "backend-own-id")
			_, err := w.(io.ReaderFrom).ReadFrom(strings.NewReader("ok"))
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := serveThrough(t, a, next, "client-rid-1")
			if got := w.Result().Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "client-rid-1" {
				t.Errorf("X-Request-ID = %q, want exactly [client-rid-1]", got)
			}
		})
	}
}

func TestDownstreamErrorsShowOnlyTheErrorDirectivesMessage(t *testing.T) {
	staticError := func(message, status string) caddyhttp.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			return caddyhttp.StaticError{Error: message, StatusCode: caddyhttp.WeakString(status)}.ServeHTTP(w, r, nil)
		}
	}
	handlerError := func(status int, err error) caddyhttp.HandlerFunc {
		return func(http.ResponseWriter, *http.Request) error { return caddyhttp.Error(status, err) }
	}
	secretPath := "/srv/private/customers.csv"
	for _, c := range []struct {
		name        string
		next        caddyhttp.HandlerFunc
		status      int
		message     string
		logLevel    zapcore.Level
		logContains string
	}{
		{"error directive 404", staticError("service not found", "404"), 404, "service not found", zapcore.DebugLevel, "service not found"},
		{"error directive with markup", staticError("use <v2> & retry", "410"), 410, "use <v2> & retry", zapcore.DebugLevel, ""},
		{"error directive 500", staticError("database password is hunter2", "500"), 500, tenant.InternalErrorMessage, zapcore.ErrorLevel, "hunter2"},
		{"error directive, message too long", staticError(strings.Repeat("x", 201), "400"), 400, "bad request", zapcore.InfoLevel, ""},
		{"file_server 403", handlerError(403, &fs.PathError{Op: "open", Path: secretPath, Err: fs.ErrPermission}), 403, "forbidden", zapcore.InfoLevel, secretPath},
		{"file_server 404", handlerError(404, &fs.PathError{Op: "stat", Path: secretPath, Err: fs.ErrNotExist}), 404, "not found", zapcore.InfoLevel, secretPath},
		{"503 from another handler", handlerError(503, fmt.Errorf("no upstreams available: 10.1.2.3:8080")), 503, "service unavailable", zapcore.ErrorLevel, "10.1.2.3"},
		{"502", handlerError(502, fmt.Errorf("dial tcp 10.1.2.3:8080: connection refused")), 502, "backend service unavailable", zapcore.ErrorLevel, "10.1.2.3"},
		{"plain error", func(http.ResponseWriter, *http.Request) error { return fmt.Errorf("boom at /etc/x") }, 500, tenant.InternalErrorMessage, zapcore.ErrorLevel, "/etc/x"},
		{"unknown status", handlerError(599, fmt.Errorf("odd /etc/y")), 599, "HTTP 599", zapcore.ErrorLevel, "/etc/y"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, logs := newHandlerForTest(t)
			w := serveThrough(t, a, c.next, "")
			if w.Code != c.status {
				t.Fatalf("status %d, want %d", w.Code, c.status)
			}
			var env tenant.Envelope
			if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
				t.Fatalf("not the envelope: %v: %s", err, w.Body)
			}
			if env.Error.Message != c.message {
				t.Errorf("message %q, want %q", env.Error.Message, c.message)
			}
			if strings.Contains(w.Body.String(), secretPath) {
				t.Errorf("body reveals the path: %s", w.Body)
			}
			entries := logs.FilterLevelExact(c.logLevel).FilterMessageSnippet("request failed downstream").All()
			if len(entries) != 1 {
				t.Fatalf("want one %s log line, got %v", c.logLevel, logs.All())
			}
			if c.logContains != "" {
				if cause := fmt.Sprint(entries[0].ContextMap()["error"]); !strings.Contains(cause, c.logContains) {
					t.Errorf("log %q does not carry the cause %q", cause, c.logContains)
				}
			}
		})
	}
}

// TestErrorDirectiveTraceMatchesCaddy guards the way an `error` directive's
// error is recognised, against a change in Caddy.
func TestErrorDirectiveTraceMatchesCaddy(t *testing.T) {
	r := caddyhttp.PrepareRequest(httptest.NewRequest(http.MethodGet, "/", nil), caddy.NewReplacer(), httptest.NewRecorder(), nil)
	err := caddyhttp.StaticError{Error: "x", StatusCode: "404"}.ServeHTTP(httptest.NewRecorder(), r, nil)
	herr, ok := err.(caddyhttp.HandlerError)
	if !ok || !fromErrorDirective(herr) {
		t.Fatalf("StaticError's error %#v is not recognised (trace %q)", err, herr.Trace)
	}
	if fromErrorDirective(caddyhttp.Error(404, fmt.Errorf("x"))) {
		t.Error("an error from elsewhere is taken for the error directive's")
	}
}

package tenant

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWriteErrorDoesNotEscapeHTML(t *testing.T) {
	w := httptest.NewRecorder()
	if err := WriteError(w, http.StatusUnauthorized, "Authorization header must be 'Bearer <key>' & nothing else", nil, "rid-1"); err != nil {
		t.Fatal(err)
	}
	body := w.Body.String()
	if !strings.Contains(body, `"message":"Authorization header must be 'Bearer <key>' & nothing else"`) {
		t.Errorf("body does not carry the message as written: %s", body)
	}
	if strings.Contains(body, `\u003c`) || strings.Contains(body, `\u0026`) {
		t.Errorf("body is HTML-escaped: %s", body)
	}
}

func TestWriteErrorEnvelopeAndHeaders(t *testing.T) {
	w := httptest.NewRecorder()
	details := map[string]any{"limit_type": "minute", "retry_after": 45}
	if err := WriteError(w, http.StatusTooManyRequests, "Rate limit exceeded", details, "rid-2"); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusTooManyRequests {
		t.Errorf("status %d", w.Code)
	}
	for name, want := range map[string]string{
		"Content-Type":           "application/json",
		"Content-Length":         strconv.Itoa(w.Body.Len()),
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-store",
	} {
		if got := w.Header().Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", name, got, want)
		}
	}
	if !strings.HasSuffix(w.Body.String(), "}\n") {
		t.Errorf("body does not end with a newline: %q", w.Body)
	}
	var env Envelope
	if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
		t.Fatalf("not JSON: %v: %s", err, w.Body)
	}
	if env.Error.Code != 429 || env.Error.Message != "Rate limit exceeded" || env.RequestID != "rid-2" {
		t.Errorf("envelope %+v", env)
	}
	if d, ok := env.Error.Details.(map[string]any); !ok || d["limit_type"] != "minute" || d["retry_after"] != 45.0 {
		t.Errorf("details %#v", env.Error.Details)
	}
	if _, err := time.Parse(time.RFC3339, env.Timestamp); err != nil {
		t.Errorf("timestamp %q: %v", env.Timestamp, err)
	}

	// The writers are reused: the next envelope must not inherit details.
	w = httptest.NewRecorder()
	if err := WriteError(w, http.StatusForbidden, "invalid API key", nil, ""); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(w.Body.String(), "details") || strings.Contains(w.Body.String(), "request_id") {
		t.Errorf("second envelope carries fields of the first: %s", w.Body)
	}
}

func TestWriteError500NeverCarriesTheCause(t *testing.T) {
	w := httptest.NewRecorder()
	if err := WriteError(w, http.StatusInternalServerError, `no rate limits configured for plan "gold"`, nil, "rid-3"); err != nil {
		t.Fatal(err)
	}
	var env Envelope
	if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
		t.Fatal(err)
	}
	if env.Error.Message != InternalErrorMessage || strings.Contains(w.Body.String(), "gold") {
		t.Errorf("500 body %s, want only %q", w.Body, InternalErrorMessage)
	}
}

// headerOnlyWriter is a ResponseWriter that discards the body and keeps
// one header map, cleared by the benchmark between responses.
type headerOnlyWriter struct{ h http.Header }

func (w *headerOnlyWriter) Header() http.Header         { return w.h }
func (w *headerOnlyWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *headerOnlyWriter) WriteHeader(int)             {}

// BenchmarkWriteError measures rendering one envelope without details,
// as for a 401 or 403.
func BenchmarkWriteError(b *testing.B) {
	w := &headerOnlyWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		if err := WriteError(w, http.StatusUnauthorized, "Authorization header must be 'Bearer <key>'", nil, "0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70"); err != nil {
			b.Fatal(err)
		}
	}
}

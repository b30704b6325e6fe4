package caddyusage

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/usagestore"
)

// captureSink keeps what it is given.
type captureSink struct {
	mu     sync.Mutex
	events []usagestore.Event
}

func (*captureSink) name() string { return "capture" }
func (s *captureSink) deliver(b []*usagestore.Event, _ func([]*usagestore.Event)) {
	_ = s.deliverAll(context.Background(), b)
}
func (s *captureSink) deliverAll(_ context.Context, b []*usagestore.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range b {
		s.events = append(s.events, *e)
	}
	return nil
}
func (*captureSink) failing() error                                   { return nil }
func (*captureSink) close(context.Context, func([]*usagestore.Event)) {}
func (s *captureSink) got() []usagestore.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]usagestore.Event(nil), s.events...)
}

var testIdentity = tenant.NewIdentity("org_h", "premium", "key_h", tenant.LimitOverrides{})

// caddyRequest is a request with the context Caddy's server gives one.
func caddyRequest(method, target, body string) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{})
	ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer())
	return r.WithContext(ctx)
}

// authenticated plays tenant_auth (and tenant_ratelimit's decision) then
// serves inner.
func authenticated(rateLimit string, inner func(w http.ResponseWriter, r *http.Request) error) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		tr := &tenant.Request{ID: "req-1"}
		tenant.Attach(r, tr)
		tenant.Authenticated(r, tr, testIdentity)
		tr.RateLimit, tr.RateLimitSource = rateLimit, "redis"
		return inner(w, r)
	})
}

func TestHandlerEmitsOneEventPerAuthenticatedRequest(t *testing.T) {
	capture := new(captureSink)
	p := testPipeline(t, 100, 1<<20, func(*metrics) (sink, error) { return capture, nil })
	h := &Handler{pipeline: p, services: p.services}

	cases := []struct {
		name, target string
		next         caddyhttp.Handler
		status       int
		outcome      usagestore.Outcome
		bytesOut     int64
		service      string
	}{
		{"ok, streamed", "/api/users", authenticated("allowed", func(w http.ResponseWriter, r *http.Request) error {
			_, _ = w.Write([]byte("hello "))
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("Flush through the recorder: %v", err)
			}
			_, _ = w.Write([]byte("world"))
			return nil
		}), 200, usagestore.OutcomeAllowed, 11, "api"},
		{"429 minute", "/api/x", authenticated("denied_minute", func(w http.ResponseWriter, r *http.Request) error {
			return tenant.WriteError(w, 429, "Rate limit exceeded", nil, "req-1")
		}), 429, usagestore.OutcomeRateLimitedMinute, -1, "api"},
		{"429 day", "/billing/x", authenticated("denied_day", func(w http.ResponseWriter, r *http.Request) error {
			return tenant.WriteError(w, 429, "Rate limit exceeded", nil, "req-1")
		}), 429, usagestore.OutcomeRateLimitedDay, -1, "billing"},
		{"backend 500", "/api/x", authenticated("allowed", func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(500)
			return nil
		}), 500, usagestore.OutcomeBackendError, 0, "api"},
		{"bad gateway rendered by the gateway", "/api/x", authenticated("allowed", func(w http.ResponseWriter, r *http.Request) error {
			return tenant.WriteError(w, 502, "backend service unavailable", nil, "req-1")
		}), 502, usagestore.OutcomeBackendError, -1, "api"},
		{"gateway 503", "/api/x", authenticated("unavailable", func(w http.ResponseWriter, r *http.Request) error {
			return tenant.WriteError(w, 503, "rate limiter temporarily unavailable", nil, "req-1")
		}), 503, usagestore.OutcomeGatewayError, -1, "api"},
		{"handler error, nothing written", "/api/x", authenticated("allowed", func(w http.ResponseWriter, r *http.Request) error {
			return caddyhttp.Error(500, nil)
		}), 500, usagestore.OutcomeGatewayError, 0, "api"},
	}
	for _, c := range cases {
		w := httptest.NewRecorder()
		_ = h.ServeHTTP(w, caddyRequest("POST", c.target, "12345"), c.next)
		if w.Code != c.status && c.name != "handler error, nothing written" {
			t.Fatalf("%s: client saw %d, want %d", c.name, w.Code, c.status)
		}
	}
	// No identity (a 401): no event.
	_ = h.ServeHTTP(httptest.NewRecorder(), caddyRequest("GET", "/api/x", ""), caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return tenant.WriteError(w, 401, "missing key", nil, "r")
	}))

	eventually(t, 5*time.Second, func() bool { return len(capture.got()) >= len(cases) }, func() string { return "events missing" })
	time.Sleep(50 * time.Millisecond)
	got := capture.got()
	if len(got) != len(cases) {
		t.Fatalf("%d events for %d authenticated requests (and one 401)", len(got), len(cases))
	}
	seen := map[uuid.UUID]bool{}
	for i, c := range cases {
		e := got[i]
		if e.Status != c.status || e.Outcome != c.outcome || e.Service != c.service {
			t.Errorf("%s: status %d outcome %s service %q, want %d %s %q", c.name, e.Status, e.Outcome, e.Service, c.status, c.outcome, c.service)
		}
		if c.bytesOut >= 0 && e.BytesOut != c.bytesOut {
			t.Errorf("%s: bytes_out %d, want %d", c.name, e.BytesOut, c.bytesOut)
		}
		if e.OrgID != "org_h" || e.KeyID != "key_h" || e.Plan != "premium" || e.RequestID != "req-1" || e.Method != "POST" || e.RateLimitSource != "redis" {
			t.Errorf("%s: identity fields %+v", c.name, e)
		}
		if e.ID.Version() != 7 || seen[e.ID] || time.Since(e.Time) > time.Minute {
			t.Errorf("%s: id %s (version %d) time %s", c.name, e.ID, e.ID.Version(), e.Time)
		}
		seen[e.ID] = true
	}
}

func TestOutcomeAndServiceLabels(t *testing.T) {
	s := newServiceLabels()
	if s.label("api") != "api" || s.label("a/b") != otherService || s.label(strings.Repeat("x", 65)) != otherService {
		t.Fatal("labels are not cleaned")
	}
	for i := 0; i < 2*maxServiceLabels; i++ {
		s.label("svc" + itoa(int64(i)))
	}
	if n := len(*s.known.Load()); n > maxServiceLabels {
		t.Fatalf("%d distinct labels kept, bound %d", n, maxServiceLabels)
	}
	if firstSegment("/api/v1/users") != "api" || firstSegment("/") != "" || firstSegment("health") != "health" {
		t.Fatal("firstSegment")
	}
	if rateLimitSource("fast_path") != "redis" || rateLimitSource("fallback") != "local" || rateLimitSource("") != "none" {
		t.Fatal("rateLimitSource")
	}
}

// BenchmarkHandOff is the cost a request pays to hand its event over. The
// buffer holds every event of the run, so each op is the buffered path.
func BenchmarkHandOff(b *testing.B) {
	p, err := newPipeline(b.N+1, b.TempDir(), 1<<20, newMetrics(), nopLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Destruct()
	_ = p.use("discard", func() (sink, error) { return discardSink{}, nil })
	e := &usagestore.Event{OrgID: "org", KeyID: "key", Service: "api"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.emit(e)
	}
	b.StopTimer()
	if n := testutil.ToFloat64(p.metrics.spooled); n > 0 {
		b.Fatalf("%v events took the spool path", n)
	}
}

// BenchmarkHandler is the whole handler: wrapping the response, the event
// (one allocation), the hand-off; the dispatcher drains the buffer as in a
// gateway, so the events do not pile up in memory.
func BenchmarkHandler(b *testing.B) {
	p, err := newPipeline(1<<16, b.TempDir(), 1<<20, newMetrics(), nopLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Destruct()
	_ = p.use("discard", func() (sink, error) { return discardSink{}, nil })
	h := &Handler{pipeline: p, services: p.services}
	r := caddyRequest("GET", "/api/users", "")
	r.Body = http.NoBody
	tr := &tenant.Request{ID: "req", Identity: testIdentity, RateLimit: "allowed", RateLimitSource: "redis"}
	tenant.Attach(r, tr)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(200)
		return nil
	})
	w := discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = h.ServeHTTP(w, r, next)
	}
	b.StopTimer()
	if n := testutil.ToFloat64(p.metrics.spooled); n > 0 {
		b.Fatalf("%v events took the spool path", n)
	}
}

type discardSink struct{}

func (discardSink) name() string                                           { return "discard" }
func (discardSink) deliver([]*usagestore.Event, func([]*usagestore.Event)) {}
func (discardSink) deliverAll(context.Context, []*usagestore.Event) error  { return nil }
func (discardSink) failing() error                                         { return nil }
func (discardSink) close(context.Context, func([]*usagestore.Event))       {}

type discardWriter struct{ h http.Header }

func (w discardWriter) Header() http.Header       { return w.h }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}

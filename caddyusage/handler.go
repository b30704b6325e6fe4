package caddyusage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/usagestore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler emits one usage event per request that tenant_auth authenticated,
// when the request ends (after its response body, streamed or not). It
// must run before tenant_auth, first in the route, so that it sees the
// final status and every byte. Requests without a tenant identity (401,
// 403) emit nothing.
type Handler struct {
	// Service is the events' service label: up to 64 characters of
	// letters, digits, ".", "_", "-", or placeholders expanded per request
	// (a value that is not such a label once expanded becomes "other").
	// At most 1000 distinct labels are kept per process; beyond, "other".
	// Default: the first segment of the request path ("api" for
	// /api/users).
	Service string `json:"service,omitempty"`

	pipeline *pipeline
	services *serviceLabels
	dynamic  bool
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.tenant_usage",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision attaches the handler to the process's usage pipeline (the
// tenant_usage app, with its defaults when no global option configures it).
func (h *Handler) Provision(ctx caddy.Context) error {
	v, err := ctx.App(appID)
	if err != nil {
		return fmt.Errorf("tenant_usage: %w", err)
	}
	app := v.(*App)
	h.pipeline = app.pipeline
	h.services = app.pipeline.services
	h.dynamic = strings.Contains(h.Service, "{")
	if h.Service != "" && !h.dynamic {
		h.Service = h.services.label(h.Service)
	}
	return nil
}

// exchange is one request's state, allocated once: the response recorder,
// the request body counter and the event handed to the pipeline.
type exchange struct {
	recorder
	body  countingBody
	event usagestore.Event
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	start := time.Now()
	x := &exchange{}
	x.event.ID = newEventID(start)
	x.event.Time = start
	x.ResponseWriter = w
	if r.Body != nil && r.Body != http.NoBody {
		x.body.ReadCloser = r.Body
		r.Body = &x.body
	}
	defer func() {
		if rec := recover(); rec != nil {
			h.finish(x, r, start, nil)
			panic(rec)
		}
	}()
	err := next.ServeHTTP(&x.recorder, r)
	h.finish(x, r, start, err)
	return err
}

// finish fills in the event and hands it to the pipeline, if the request
// had a tenant identity.
func (h *Handler) finish(x *exchange, r *http.Request, start time.Time, err error) {
	tr := tenant.RequestFromContext(r.Context())
	if tr == nil || tr.Identity == nil {
		return
	}
	status := x.status
	if status == 0 {
		status = http.StatusOK
		if err != nil {
			status = http.StatusInternalServerError
			var herr caddyhttp.HandlerError
			if errors.As(err, &herr) && herr.StatusCode != 0 {
				status = herr.StatusCode
			}
			x.gatewayError = true
		}
	}
	e := &x.event
	id := tr.Identity
	e.OrgID, e.KeyID, e.Plan = id.OrgID, id.KeyID, id.Plan
	e.Method = r.Method
	e.Status = status
	e.Outcome = outcomeOf(status, x.gatewayError, tr.RateLimit)
	e.RequestID = tr.ID
	e.RateLimitSource = rateLimitSource(tr.RateLimitSource)
	e.BytesIn, e.BytesOut = x.body.n, x.written
	e.DurationUS = time.Since(start).Microseconds()
	switch {
	case h.dynamic:
		repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if repl != nil {
			e.Service = h.services.label(repl.ReplaceAll(h.Service, ""))
		}
	case h.Service != "":
		e.Service = h.Service
	default:
		e.Service = h.services.label(firstSegment(r.URL.Path))
	}
	h.pipeline.emit(e)
}

// outcomeOf classifies a finished request. 502 and 504 are the backend's
// fault even when the gateway wrote them (reverse_proxy could not reach
// it); other 5xx are the gateway's when it wrote the envelope itself.
func outcomeOf(status int, gatewayWrote bool, rateLimit string) usagestore.Outcome {
	switch {
	case status == http.StatusTooManyRequests && rateLimit == "denied_day":
		return usagestore.OutcomeRateLimitedDay
	case status == http.StatusTooManyRequests && rateLimit == "denied_minute":
		return usagestore.OutcomeRateLimitedMinute
	case status == http.StatusBadGateway, status == http.StatusGatewayTimeout:
		return usagestore.OutcomeBackendError
	case status >= 500 && gatewayWrote:
		return usagestore.OutcomeGatewayError
	case status >= 500:
		return usagestore.OutcomeBackendError
	}
	return usagestore.OutcomeAllowed
}

// rateLimitSource maps tenant_ratelimit's decision source to the event's
// ratelimit_source: redis, local or none.
func rateLimitSource(s string) string {
	switch s {
	case "redis", "fast_path":
		return "redis"
	case "local", "fallback":
		return "local"
	}
	return "none"
}

// firstSegment returns the first segment of a path: "api" for /api/users.
func firstSegment(p string) string {
	p = strings.TrimLeft(p, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		p = p[:i]
	}
	return p
}

// recorder records the status, the body bytes written and whether the
// gateway wrote an error envelope. It keeps the wrapped writer's fast paths
// (ReadFrom for sendfile, Flush for streaming, Unwrap for
// http.ResponseController).
type recorder struct {
	caddyhttp.ResponseWriterWrapper
	status       int
	written      int64
	gatewayError bool
}

// WriteHeader implements http.ResponseWriter.
func (w *recorder) WriteHeader(status int) {
	if w.status == 0 && (status >= 200 || status == http.StatusSwitchingProtocols) {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

// Write implements http.ResponseWriter.
func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// ReadFrom keeps the wrapped writer's ReadFrom (sendfile) and counts.
func (w *recorder) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriterWrapper.ReadFrom(r)
	w.written += n
	return n, err
}

// RecordGatewayError implements tenant.GatewayErrorRecorder.
func (w *recorder) RecordGatewayError() { w.gatewayError = true }

// countingBody counts the request body bytes read.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ tenant.GatewayErrorRecorder = (*recorder)(nil)
	_ io.ReaderFrom               = (*recorder)(nil)
)

// newEventID returns a UUIDv7 (RFC 9562) for an event of time t: 48 bits
// of Unix milliseconds, then 74 random bits. The random bits come from
// math/rand/v2's per-thread ChaCha8 generator (its initial state is
// secure random): IDs must be unique, not secret, and this costs no system
// call or lock.
func newEventID(t time.Time) uuid.UUID {
	var id uuid.UUID
	ms := uint64(t.UnixMilli())
	binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	r := rand.Uint64()
	binary.BigEndian.PutUint64(id[0:8], ms<<16|r&0xffff)
	id[6] = id[6]&0x0f | 0x70 // version 7
	id[8] = id[8]&0x3f | 0x80 // RFC 9562 variant
	return id
}

// maxServiceLabels bounds the distinct service labels of a process; later
// new labels become "other". The label is a dimension of every rollup, so
// its cardinality must not follow what clients send.
const (
	maxServiceLabels = 1000
	maxServiceLen    = 64
	otherService     = "other"
)

// serviceLabels bounds the service dimension: labels are cleaned and the
// set of distinct labels is capped. Lookups are lock-free (a copy-on-write
// map); adding a label takes a lock, at most maxServiceLabels times.
type serviceLabels struct {
	known atomic.Pointer[map[string]string]
	mu    sync.Mutex
}

func newServiceLabels() *serviceLabels {
	s := new(serviceLabels)
	m := map[string]string{"": "", otherService: otherService}
	s.known.Store(&m)
	return s
}

// label returns the bounded label for s.
func (s *serviceLabels) label(v string) string {
	if l, ok := (*s.known.Load())[v]; ok {
		return l
	}
	if !cleanLabel(v) {
		return otherService
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := *s.known.Load()
	if l, ok := m[v]; ok {
		return l
	}
	if len(m) >= maxServiceLabels {
		return otherService
	}
	next := make(map[string]string, len(m)+1)
	for k, l := range m {
		next[k] = l
	}
	v = string([]byte(v)) // own it: v may point into a request's path
	next[v] = v
	s.known.Store(&next)
	return v
}

func cleanLabel(v string) bool {
	return len(v) <= maxServiceLen && tenant.SafeChars(v)
}

package caddyauth

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/keystore"
)

// Headers that carry the tenant identity to the backend. Client-sent copies
// are always removed first.
const (
	orgIDHeader = "X-Organization-ID"
	planHeader  = "X-Plan-Tier"
)

// wwwAuthenticate is sent with every 401 (RFC 6750, section 3).
const wwwAuthenticate = `Bearer realm="api"`

// requestScope is tenant_auth's per-request state, allocated once: the
// tenant state handed to later handlers and the downstream response writer,
// which also holds the values of the headers the handler sets.
type requestScope struct {
	tenant tenant.Request
	writer trackingWriter
}

// Slots of trackingWriter.headerValues.
const (
	slotRequestID = iota
	slotResponseRequestID
	slotOrgID
	slotPlan
	headerSlots
)

// setHeader sets h[key] to a one-element slice of the scope's backing array.
func (s *requestScope) setHeader(h http.Header, key string, slot int, value string) {
	s.writer.headerValues[slot] = value
	h[key] = s.writer.headerValue(slot)
}

// Canonical forms of the header names the hot path writes directly.
const (
	requestIDKey = "X-Request-Id"
	orgIDKey     = "X-Organization-Id"
	planKey      = "X-Plan-Tier"
)

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (a *TenantAuth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	scope := &requestScope{}
	rid := tenant.RequestIDFor(headerValue(r.Header, requestIDKey))
	scope.tenant.ID = rid
	scope.setHeader(r.Header, requestIDKey, slotRequestID, rid)
	scope.setHeader(w.Header(), requestIDKey, slotResponseRequestID, rid)
	tenant.Attach(r, &scope.tenant)
	stripIdentityHeaders(r.Header)

	token, perr := parseBearer(r.Header["Authorization"])
	if perr != nil {
		a.metrics.countResult(resultUnauthorized)
		w.Header()["Www-Authenticate"] = []string{wwwAuthenticate}
		return tenant.WriteError(w, http.StatusUnauthorized, perr.Error(), nil, rid)
	}

	id, lerr := a.lookup(r.Context(), token)
	if lerr != nil {
		if keystore.IsRejection(lerr) {
			a.metrics.countResult(resultForbidden)
			return tenant.WriteError(w, http.StatusForbidden, rejectionMessage(lerr), nil, rid)
		}
		a.metrics.countResult(resultUnavailable)
		logFailure := a.logger.Warn
		if errors.Is(lerr, keystore.ErrBusy) {
			// Shed under load (a flood of forged keys): counted by the key
			// store's metrics; a line per request would flood the log.
			logFailure = a.logger.Debug
		}
		logFailure("key lookup failed", zap.String("request_id", rid), zap.Error(lerr))
		return tenant.WriteError(w, http.StatusServiceUnavailable, "authentication temporarily unavailable", nil, rid)
	}
	a.metrics.countResult(resultOK)

	tenant.Authenticated(r, &scope.tenant, id)
	scope.setHeader(r.Header, orgIDKey, slotOrgID, id.OrgID)
	scope.setHeader(r.Header, planKey, slotPlan, id.Plan)
	if !a.ForwardKey {
		delete(r.Header, "Authorization")
	}

	tw := &scope.writer
	tw.ResponseWriter = w
	defer func() {
		if rec := recover(); rec != nil {
			err = a.recovered(tw, rec, rid)
		}
	}()
	if herr := next.ServeHTTP(tw, r); herr != nil {
		return a.renderError(tw, herr, rid)
	}
	return nil
}

// headerValue is h.Get for a canonical key, without re-canonicalising it.
func headerValue(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// rejectionMessage is the client-facing message for a 403.
func rejectionMessage(err error) string {
	for _, known := range []error{keystore.ErrRevokedKey, keystore.ErrExpiredKey, keystore.ErrDisabledOrg} {
		if errors.Is(err, known) {
			return known.Error()
		}
	}
	return keystore.ErrUnknownKey.Error()
}

// stripIdentityHeaders removes client-sent identity headers, including
// spellings that some backends (CGI, WSGI, nginx) would read as the same
// header: any case, and "_" for "-".
func stripIdentityHeaders(h http.Header) {
	for name := range h {
		if sameHeaderName(name, orgIDHeader) || sameHeaderName(name, planHeader) {
			delete(h, name)
		}
	}
}

// sameHeaderName compares header names case-insensitively, treating "_" as "-".
func sameHeaderName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if foldHeaderByte(a[i]) != foldHeaderByte(b[i]) {
			return false
		}
	}
	return true
}

func foldHeaderByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

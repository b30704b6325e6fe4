package caddyauth

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// trackingWriter records whether the response has started, so that an error
// or panic after the first byte is not followed by a second response, and
// puts the gateway's X-Request-ID back as the response's only one when it
// starts: a backend that echoes the header would otherwise make it two.
type trackingWriter struct {
	caddyhttp.ResponseWriterWrapper
	started bool
	// headerValues backs the X-Request-ID (request and response),
	// X-Organization-ID and X-Plan-Tier values tenant_auth sets: each is
	// a separate one-element slice, so appending to or rewriting one
	// never touches another.
	headerValues [headerSlots]string
}

// headerValue is the one-element slice of headerValues at slot.
func (w *trackingWriter) headerValue(slot int) []string {
	return w.headerValues[slot : slot+1 : slot+1]
}

// start marks the response as started and fixes its X-Request-ID.
func (w *trackingWriter) start() {
	w.ResponseWriter.Header()[requestIDKey] = w.headerValue(slotResponseRequestID)
	w.started = true
}

// WriteHeader implements http.ResponseWriter.
func (w *trackingWriter) WriteHeader(status int) {
	if status >= 200 || status == http.StatusSwitchingProtocols {
		w.start()
	} else {
		// Informational (103 Early Hints): headers go out now too.
		w.ResponseWriter.Header()[requestIDKey] = w.headerValue(slotResponseRequestID)
	}
	w.ResponseWriter.WriteHeader(status)
}

// Write implements http.ResponseWriter.
func (w *trackingWriter) Write(p []byte) (int, error) {
	if !w.started {
		w.start()
	}
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps the wrapped writer's fast path while recording the start.
func (w *trackingWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.started {
		w.start()
	}
	return w.ResponseWriterWrapper.ReadFrom(r)
}

// renderError writes a downstream handler error as the envelope. The client
// sees the message of the Caddyfile's own `error` directive, else a fixed
// text for the status; the cause (a file path, an upstream address, a
// dial error) goes to the log only.
func (a *TenantAuth) renderError(w *trackingWriter, err error, rid string) error {
	status := http.StatusInternalServerError
	var herr caddyhttp.HandlerError
	if errors.As(err, &herr) && herr.StatusCode != 0 {
		status = herr.StatusCode
	}
	message, shown := publicMessage(status, herr)
	fields := []zap.Field{zap.String("request_id", rid), zap.Int("status", status), zap.Error(err)}
	switch {
	case status >= 500:
		a.logger.Error("request failed downstream", fields...)
	case !shown:
		a.logger.Info("request failed downstream; the client sees only the status text", fields...)
	default:
		a.logger.Debug("request failed downstream", fields...)
	}
	if w.started {
		// Headers (maybe body) are out; a second response would corrupt it.
		return nil
	}
	return tenant.WriteError(w, status, message, nil, rid)
}

// maxErrorDirectiveMessage bounds a message shown from an `error` directive.
const maxErrorDirectiveMessage = 200

// publicMessage is what the client sees for a downstream error, and whether
// that is the error's own message. Only the `error` directive's message is
// shown: the operator wrote it for clients. Other handlers' messages can
// name files, upstreams or internals, so they get the status text.
func publicMessage(status int, herr caddyhttp.HandlerError) (string, bool) {
	switch status {
	case http.StatusInternalServerError:
		return tenant.InternalErrorMessage, false
	case http.StatusBadGateway:
		return "backend service unavailable", false
	case http.StatusGatewayTimeout:
		return "backend service timeout", false
	}
	if fromErrorDirective(herr) {
		if msg := herr.Err.Error(); msg != "" && len(msg) <= maxErrorDirectiveMessage {
			return msg, true
		}
	}
	if text := http.StatusText(status); text != "" {
		return strings.ToLower(text), false
	}
	return fmt.Sprintf("HTTP %d", status), false
}

// staticErrorTrace starts the Trace of every error made by Caddy's `error`
// directive (caddyhttp.StaticError): caddyhttp.Error records its caller as
// "<package>.<function> (<file>:<line>)". The message of such an error is
// the operator's own text, not a detail of some failure.
const staticErrorTrace = "caddyhttp.StaticError.ServeHTTP "

// fromErrorDirective reports whether herr comes from the `error` directive.
func fromErrorDirective(herr caddyhttp.HandlerError) bool {
	return herr.Err != nil && strings.HasPrefix(herr.Trace, staticErrorTrace)
}

// recovered turns a downstream panic into a JSON 500 and an ERROR log line
// with the stack. http.ErrAbortHandler is net/http's deliberate abort and is
// passed on. When the response has already started, the connection is
// aborted rather than sending a truncated "success".
func (a *TenantAuth) recovered(w *trackingWriter, rec any, rid string) error {
	if rec == http.ErrAbortHandler {
		panic(rec)
	}
	a.logger.Error("panic recovered",
		zap.String("request_id", rid),
		zap.String("panic", fmt.Sprint(rec)),
		zap.ByteString("stack", debug.Stack()))
	if w.started {
		panic(http.ErrAbortHandler)
	}
	return tenant.WriteError(w, http.StatusInternalServerError, tenant.InternalErrorMessage, nil, rid)
}

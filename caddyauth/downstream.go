package caddyauth

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// trackingWriter records whether the response has started, so that an error
// or panic after the first byte is not followed by a second response.
type trackingWriter struct {
	caddyhttp.ResponseWriterWrapper
	started bool
}

// WriteHeader implements http.ResponseWriter.
func (w *trackingWriter) WriteHeader(status int) {
	if status >= 200 || status == http.StatusSwitchingProtocols {
		w.started = true
	}
	w.ResponseWriter.WriteHeader(status)
}

// Write implements http.ResponseWriter.
func (w *trackingWriter) Write(p []byte) (int, error) {
	w.started = true
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps the wrapped writer's fast path while recording the start.
func (w *trackingWriter) ReadFrom(r io.Reader) (int64, error) {
	w.started = true
	return w.ResponseWriterWrapper.ReadFrom(r)
}

// renderError writes a downstream handler error as the envelope. Messages of
// 500, 502 and 504 are fixed: their causes (dial errors, upstream addresses)
// go to the log, never to the client.
func (a *TenantAuth) renderError(w *trackingWriter, err error, rid string) error {
	status := http.StatusInternalServerError
	var herr caddyhttp.HandlerError
	if errors.As(err, &herr) && herr.StatusCode != 0 {
		status = herr.StatusCode
	}
	fields := []zap.Field{zap.String("request_id", rid), zap.Int("status", status), zap.Error(err)}
	if status >= 500 {
		a.logger.Error("request failed downstream", fields...)
	} else {
		a.logger.Debug("request failed downstream", fields...)
	}
	if w.started {
		// Headers (maybe body) are out; a second response would corrupt it.
		return nil
	}
	return tenant.WriteError(w, status, publicMessage(status, herr), nil, rid)
}

// publicMessage is what the client sees for a downstream error.
func publicMessage(status int, herr caddyhttp.HandlerError) string {
	switch status {
	case http.StatusInternalServerError:
		return "internal server error"
	case http.StatusBadGateway:
		return "backend service unavailable"
	case http.StatusGatewayTimeout:
		return "backend service timeout"
	}
	if herr.Err != nil {
		if msg := herr.Err.Error(); msg != "" && len(msg) <= 200 {
			return msg
		}
	}
	if text := http.StatusText(status); text != "" {
		return text
	}
	return fmt.Sprintf("HTTP %d", status)
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
	return tenant.WriteError(w, http.StatusInternalServerError, "internal server error", nil, rid)
}

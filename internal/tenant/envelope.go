package tenant

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Envelope is the JSON body of every gateway-generated error (DESIGN §3).
type Envelope struct {
	Error     EnvelopeError `json:"error"`
	Timestamp string        `json:"timestamp"`
	RequestID string        `json:"request_id,omitempty"`
}

// EnvelopeError is the "error" member of an Envelope.
type EnvelopeError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	// Details is present only where there are details (e.g. a 429).
	Details any `json:"details,omitempty"`
}

// GatewayErrorRecorder is implemented by a response writer that wants to
// know that the gateway itself, not the backend, answered the request with
// an error envelope (tenant_usage tells gateway from backend errors so).
type GatewayErrorRecorder interface {
	RecordGatewayError()
}

// recordGatewayError tells the first GatewayErrorRecorder among w and the
// writers it wraps.
func recordGatewayError(w http.ResponseWriter) {
	for w != nil {
		if r, ok := w.(GatewayErrorRecorder); ok {
			r.RecordGatewayError()
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

// WriteError renders the error envelope with the given status. The caller
// sets any extra headers (Retry-After, WWW-Authenticate…) before calling it.
func WriteError(w http.ResponseWriter, status int, message string, details any, requestID string) error {
	recordGatewayError(w)
	body, err := json.Marshal(Envelope{
		Error:     EnvelopeError{Code: status, Message: message, Details: details},
		Timestamp: time.Now().UTC().Format(time.RFC3339),
		RequestID: requestID,
	})
	if err != nil {
		return err
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

package tenant

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Envelope is the JSON body of every gateway-generated error:
//
//	{"error":{"code":429,"message":"…","details":{…}},
//	 "timestamp":"2026-01-25T14:31:15Z","request_id":"…"}
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

// InternalErrorMessage is the only message a 500 ever carries. What went
// wrong inside is for the log, written by whoever produced the error.
const InternalErrorMessage = "internal server error"

// envelopeWriter is a reusable buffer with a JSON encoder bound to it. The
// encoder leaves <, > and & alone: the body is JSON, never HTML, and a
// message such as "Bearer <key>" must read as written.
type envelopeWriter struct {
	buf bytes.Buffer
	enc *json.Encoder
	env Envelope
}

var envelopeWriters = sync.Pool{New: func() any {
	ew := new(envelopeWriter)
	ew.enc = json.NewEncoder(&ew.buf)
	ew.enc.SetEscapeHTML(false)
	return ew
}}

// maxPooledEnvelope bounds the buffer kept for reuse, so that one envelope
// with huge details does not pin its memory.
const maxPooledEnvelope = 16 << 10

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
// A 500's message is always InternalErrorMessage, whatever the caller
// passes: the cause must go to the log, not to the client.
func WriteError(w http.ResponseWriter, status int, message string, details any, requestID string) error {
	recordGatewayError(w)
	if status == http.StatusInternalServerError {
		message = InternalErrorMessage
	}
	ew := envelopeWriters.Get().(*envelopeWriter)
	defer func() {
		ew.env = Envelope{} // drop references to details
		if ew.buf.Cap() <= maxPooledEnvelope {
			envelopeWriters.Put(ew)
		}
	}()
	ew.buf.Reset()
	ew.env = Envelope{
		Error:     EnvelopeError{Code: status, Message: message, Details: details},
		Timestamp: time.Now().UTC().Format(time.RFC3339),
		RequestID: requestID,
	}
	if err := ew.enc.Encode(&ew.env); err != nil { // Encode ends the body with '\n'
		return err
	}

	// One backing array for the four header values: each is its own
	// one-element slice, so a later handler rewriting one in place
	// touches nothing else and no other response.
	values := &[4]string{"application/json", strconv.Itoa(ew.buf.Len()), "nosniff", "no-store"}
	h := w.Header()
	h["Content-Type"] = values[0:1:1]
	h["Content-Length"] = values[1:2:2]
	h["X-Content-Type-Options"] = values[2:3:3]
	h["Cache-Control"] = values[3:4:4]
	w.WriteHeader(status)
	_, err := w.Write(ew.buf.Bytes())
	return err
}

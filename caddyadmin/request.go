package caddyadmin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// apiError is an error the API answers with the JSON error envelope.
type apiError struct {
	status int
	msg    string
	// field names the request field at fault (details.field).
	field string
	// cause is logged, never shown (5xx).
	cause error
}

func (e *apiError) Error() string { return e.msg }

func (e *apiError) Unwrap() error { return e.cause }

// badField is a 400 naming a request field.
func badField(field, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...), field: field}
}

// invalidField is a 422 naming a request field.
func invalidField(field, format string, args ...any) *apiError {
	return &apiError{status: http.StatusUnprocessableEntity, msg: fmt.Sprintf(format, args...), field: field}
}

// fieldDetails is the envelope's details for an error about one field.
type fieldDetails struct {
	Field string `json:"field"`
}

// writeError answers err with the envelope. Errors that are not
// *apiError are internal: 500, with the cause kept out of the answer.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = &apiError{status: http.StatusInternalServerError, msg: "internal error", cause: err}
	}
	var details any
	if e.field != "" {
		details = fieldDetails{Field: e.field}
	}
	_ = tenant.WriteError(w, e.status, e.msg, details, requestID(r))
}

// writeRaw answers a JSON body, never cached.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// readBody reads a request body of at most maxBodyBytes (413 beyond) and
// returns it compacted ("" when empty). It must be one JSON object.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &apiError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("request body larger than %d bytes", maxBodyBytes)}
	case err != nil:
		return nil, badField("body", "reading the request body: %v", err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, badField("body", "malformed JSON: %v", jsonMessage(err))
	}
	if buf.Bytes()[0] != '{' {
		return nil, badField("body", "the request body must be a JSON object")
	}
	return buf.Bytes(), nil
}

// decodeBody decodes a compacted body strictly into dst, a struct of
// json.RawMessage fields: an unknown field is a 400 naming it. An empty
// body leaves dst empty.
func decodeBody(body []byte, dst any) error {
	if len(body) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			name, _ = strconv.Unquote(name)
			return badField(name, "unknown field %q", name)
		}
		return badField("body", "malformed JSON: %v", jsonMessage(err))
	}
	return nil
}

// jsonMessage drops the "json: " prefix of encoding/json's errors.
func jsonMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

// field decodes one field of a body: present reports whether the field was
// given at all, and v is nil when it was null. A value of the wrong type
// is a 400 naming the field.
func field[T any](name string, raw json.RawMessage, what string) (v *T, present bool, err error) {
	if raw == nil {
		return nil, false, nil
	}
	if string(raw) == "null" {
		return nil, true, nil
	}
	v = new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, true, badField(name, "%s: expected %s", name, what)
	}
	return v, true, nil
}

// durationField reads a duration field: a string in Caddy's syntax such as
// "720h" or "30d", positive (or zero when allowZero).
func durationField(name string, raw json.RawMessage, allowZero bool) (time.Duration, bool, error) {
	s, present, err := field[string](name, raw, `a duration such as "720h" or "30d"`)
	if err != nil || s == nil {
		return 0, present, err
	}
	d, perr := caddy.ParseDuration(*s)
	if perr != nil || d < 0 || (d == 0 && !allowZero) {
		return 0, true, invalidField(name, "%s: expected a positive duration such as \"720h\" or \"30d\", got %q", name, *s)
	}
	return d, true, nil
}

// pageParams reads the limit and cursor query parameters.
func pageParams(r *http.Request) (cursor string, limit int, err error) {
	q := r.URL.Query()
	if s := q.Get("limit"); s != "" {
		n, perr := strconv.Atoi(s)
		if perr != nil || n < 1 || n > maxPageSize {
			return "", 0, badField("limit", "limit must be a whole number from 1 to %d, got %q", maxPageSize, s)
		}
		limit = n
	}
	cursor = q.Get("cursor")
	if len(cursor) > 200 {
		return "", 0, badField("cursor", "malformed page cursor")
	}
	return cursor, limit, nil
}

// page is a list answer: the items, and the cursor of the next page (null
// after the last).
type page[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

func newPage[T any](items []T, next string) page[T] {
	if items == nil {
		items = []T{}
	}
	p := page[T]{Data: items}
	if next != "" {
		p.NextCursor = &next
	}
	return p
}

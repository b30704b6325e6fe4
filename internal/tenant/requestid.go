package tenant

import "github.com/google/uuid"

// RequestIDHeader carries the request ID to the backend and back to the client.
const RequestIDHeader = "X-Request-ID"

// maxRequestIDLen bounds a client-supplied request ID.
const maxRequestIDLen = 128

// ValidRequestID reports whether a client-supplied request ID may be honoured:
// 1–128 characters of [A-Za-z0-9._-] (DESIGN §3). Anything else is replaced,
// so a request ID never smuggles markup or log-breaking bytes.
func ValidRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// RequestIDFor returns the client's request ID when it is valid, else a new
// random UUID.
func RequestIDFor(incoming string) string {
	if ValidRequestID(incoming) {
		return incoming
	}
	return uuid.NewString()
}

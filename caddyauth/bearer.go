package caddyauth

import "errors"

// maxTokenBytes bounds the bearer token; longer tokens are rejected with 401
// before any hashing or lookup.
const maxTokenBytes = 256

// Reasons a request's Authorization header is rejected with 401. Their
// messages are shown to the client in the error envelope.
var (
	errMissingAuthorization  = errors.New("missing Authorization header")
	errMultipleAuthorization = errors.New("multiple Authorization headers")
	errEmptyToken            = errors.New("empty bearer token")
	errTokenTooLong          = errors.New("bearer token exceeds 256 bytes")
	errMalformedToken        = errors.New("malformed bearer token")
	//lint:ignore ST1005 the message starts with the header's name and is shown to clients as written
	errNotBearer = errors.New("Authorization header must be 'Bearer <key>'")
)

// parseBearer extracts the token from the values of the Authorization header.
// It accepts exactly one header whose scheme is "Bearer" (case-insensitive,
// RFC 7235) followed by one or more spaces and a token of 1–256 bytes in the
// token68 alphabet of RFC 6750 (letters, digits, "-._~+/" and trailing "=").
// Anything else, including control characters, is an error: never a panic,
// never a partial token.
func parseBearer(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", errMissingAuthorization
	case 1:
	default:
		return "", errMultipleAuthorization
	}
	v := values[0]
	if v == "" {
		return "", errMissingAuthorization
	}
	const scheme = "bearer"
	if len(v) < len(scheme) || !equalFoldASCII(v[:len(scheme)], scheme) {
		return "", errNotBearer
	}
	rest := v[len(scheme):]
	if rest == "" {
		return "", errEmptyToken
	}
	if rest[0] != ' ' {
		return "", errNotBearer
	}
	i := 0
	for i < len(rest) && rest[i] == ' ' {
		i++
	}
	token := rest[i:]
	if token == "" {
		return "", errEmptyToken
	}
	if len(token) > maxTokenBytes {
		return "", errTokenTooLong
	}
	if !isToken68(token) {
		return "", errMalformedToken
	}
	return token, nil
}

// isToken68 reports whether s is a token68 (RFC 7235, section 2.1):
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isToken68(s string) bool {
	i := 0
	for i < len(s) && isToken68Char(s[i]) {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(s) && s[i] == '=' {
		i++
	}
	return i == len(s)
}

func isToken68Char(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		return true
	}
	return false
}

// equalFoldASCII compares s with the lower-case ASCII string lower, ignoring case.
func equalFoldASCII(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

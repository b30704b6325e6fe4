package caddyauth

import (
	"context"
	"errors"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Reasons a well-formed key is refused with 403. Their messages are shown to
// the client in the error envelope.
var (
	ErrUnknownKey  = errors.New("invalid API key")
	ErrRevokedKey  = errors.New("API key revoked")
	ErrExpiredKey  = errors.New("API key expired")
	ErrDisabledOrg = errors.New("organization disabled")
)

// ErrStoreUnavailable means the store could not decide about a key (for
// example Postgres is down and the key is not cached): a 503, never a 403.
var ErrStoreUnavailable = errors.New("API key store unavailable")

// KeyStore resolves a key hash to the identity it acts for. It is the seam
// between tenant_auth and its key sources (static keys, Postgres).
//
// Lookup returns the identity, or one of ErrUnknownKey, ErrRevokedKey,
// ErrExpiredKey, ErrDisabledOrg (all 403), or an error wrapping
// ErrStoreUnavailable (503).
type KeyStore interface {
	Lookup(ctx context.Context, hash KeyHash) (*tenant.Identity, error)
}

// IsRejection reports whether err is a definitive "this key is not valid"
// answer (403), as opposed to a failure to decide.
func IsRejection(err error) bool {
	return errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrRevokedKey) ||
		errors.Is(err, ErrExpiredKey) || errors.Is(err, ErrDisabledOrg)
}

package caddyauth

import (
	"context"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/keystore"
)

// KeyStore resolves a key hash to the identity it acts for. It is the seam
// between tenant_auth and its key sources: static keys, and the PostgreSQL
// store of package keystore.
//
// Lookup returns the identity, or one of ErrUnknownKey, ErrRevokedKey,
// ErrExpiredKey, ErrDisabledOrg (all 403), or an error wrapping
// ErrStoreUnavailable (503).
type KeyStore interface {
	Lookup(ctx context.Context, hash KeyHash) (*tenant.Identity, error)
}

// The key store's vocabulary, as tenant_auth uses it.
type (
	// KeyHash is the SHA-256 of an API key (keystore.KeyHash).
	KeyHash = keystore.KeyHash
)

// Reasons a well-formed key is refused with 403, and the 503 of a store
// that cannot decide (see package keystore).
var (
	ErrUnknownKey       = keystore.ErrUnknownKey
	ErrRevokedKey       = keystore.ErrRevokedKey
	ErrExpiredKey       = keystore.ErrExpiredKey
	ErrDisabledOrg      = keystore.ErrDisabledOrg
	ErrStoreUnavailable = keystore.ErrStoreUnavailable
	// ErrBusy is an ErrStoreUnavailable for one request: the lookup was
	// shed because too many were in progress (keystore.ErrBusy).
	ErrBusy = keystore.ErrBusy
)

// HashKey returns the SHA-256 of key without allocating (keystore.HashKey).
func HashKey(key string) KeyHash { return keystore.HashKey(key) }

// IsRejection reports whether err is a definitive "this key is not valid"
// answer (403), as opposed to a failure to decide.
func IsRejection(err error) bool { return keystore.IsRejection(err) }

// Interface guard
var _ KeyStore = (*keystore.Handle)(nil)

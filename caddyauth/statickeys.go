package caddyauth

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// StaticKey is an API key declared in the config instead of the database,
// for development and for service accounts. It is hashed at provision time
// and looked up by hash, like a database key.
type StaticKey struct {
	// Key is the API key exactly as clients send it after "Bearer ":
	// 1–256 characters of letters, digits and "-._~+/" (optionally
	// followed by "=" padding).
	Key string `json:"key"`

	// OrgID is the organization the key acts for: 1–128 characters of
	// letters, digits, "." "_" "-". It is sent upstream as X-Organization-ID.
	OrgID string `json:"org_id"`

	// Plan is the key's plan tier (for example basic, premium, enterprise):
	// 1–64 characters of letters, digits, "." "_" "-". It is sent upstream
	// as X-Plan-Tier and selects the rate-limit plan.
	Plan string `json:"plan"`
}

// ParseKeyList parses the seed's VALID_API_KEYS format,
// "key:org_id:plan[,key:org_id:plan…]". Blank input yields no keys; blank
// entries (",,") are ignored; anything else malformed is an error naming the
// entry by position (never its key, which is a secret).
func ParseKeyList(s string) ([]StaticKey, error) {
	var keys []StaticKey
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		parts := strings.Split(entry, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("entry %d: expected key:org_id:plan, got %d colon-separated fields", i+1, len(parts))
		}
		k := StaticKey{Key: parts[0], OrgID: parts[1], Plan: parts[2]}
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Validate checks the key, org ID and plan.
func (k StaticKey) Validate() error {
	switch {
	case k.Key == "":
		return fmt.Errorf("empty key")
	case len(k.Key) > MaxTokenBytes:
		return fmt.Errorf("key longer than %d bytes", MaxTokenBytes)
	case !isToken68(k.Key):
		return fmt.Errorf("key contains characters a bearer token cannot carry (allowed: letters, digits, -._~+/)")
	case !validName(k.OrgID, 128):
		return fmt.Errorf("org_id %q: want 1-128 characters of letters, digits, '.', '_', '-'", k.OrgID)
	case !validName(k.Plan, 64):
		return fmt.Errorf("plan %q: want 1-64 characters of letters, digits, '.', '_', '-'", k.Plan)
	}
	return nil
}

// validName reports whether s is 1..max characters of [A-Za-z0-9._-]; such
// values are safe in headers, logs and JSON without escaping.
func validName(s string, max int) bool {
	return len(s) <= max && tenant.ValidRequestID(s)
}

// staticStore resolves static keys. It is built once at provision and never
// changes, so lookups take no lock.
type staticStore map[KeyHash]*tenant.Identity

// newStaticStore hashes the keys. A key declared twice is a config error.
func newStaticStore(keys []StaticKey) (staticStore, error) {
	store := make(staticStore, len(keys))
	for i, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("static key %d: %w", i+1, err)
		}
		h := HashKey(k.Key)
		if _, dup := store[h]; dup {
			return nil, fmt.Errorf("static key %d: declared more than once", i+1)
		}
		store[h] = tenant.NewIdentity(k.OrgID, k.Plan, staticKeyID(h), tenant.LimitOverrides{})
	}
	return store, nil
}

// staticKeyID names a static key in logs and placeholders without revealing
// it: "static_" and the first 12 hex digits of its hash.
func staticKeyID(h KeyHash) string {
	return "static_" + hex.EncodeToString(h[:6])
}

// Lookup implements KeyStore.
func (s staticStore) Lookup(_ context.Context, h KeyHash) (*tenant.Identity, error) {
	if id, ok := s[h]; ok {
		return id, nil
	}
	return nil, ErrUnknownKey
}

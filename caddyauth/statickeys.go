package caddyauth

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/tenantgate/tenantgate/internal/caddyfileutil"
	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/keystore"
)

// StaticKey is an API key declared in the config instead of the database,
// for development and for service accounts. It is looked up by its SHA-256,
// like a database key. Exactly one of key and key_hash is set.
type StaticKey struct {
	// Key is the API key exactly as clients send it after "Bearer ":
	// 1–256 characters of letters, digits and "-._~+/" (optionally
	// followed by "=" padding), or a placeholder such as {env.OPS_KEY}
	// that is expanded, checked and hashed at provision. A key written
	// here is stored in clear with the config (autosave.json, the admin
	// API's /config/): prefer key_hash or a placeholder. The Caddyfile
	// adapter never emits a literal key. Default: none (required unless
	// key_hash is set).
	Key string `json:"key,omitempty"`

	// KeyHash is the key's SHA-256 as 64 hexadecimal digits, which is
	// what the Caddyfile adapter stores for a key written in the
	// Caddyfile (`echo -n "$KEY" | sha256sum` gives it). Default: none
	// (required unless key is set).
	KeyHash string `json:"key_hash,omitempty"`

	// OrgID is the organization the key acts for: 1–128 characters of
	// letters, digits, "." "_" "-". It is sent upstream as
	// X-Organization-ID. Default: none (required).
	OrgID string `json:"org_id"`

	// Plan is the key's plan tier (for example basic, premium, enterprise):
	// 1–64 characters of letters, digits, "." "_" "-". It is sent upstream
	// as X-Plan-Tier and selects the rate-limit plan, which the
	// tenant_ratelimit after this handler must define. Default: none
	// (required).
	Plan string `json:"plan"`

	// DemoStyle marks a key that looks like a demo or hand-made test key:
	// "sk_test_" followed by anything `caddy tenant key create` would not
	// generate (such as the published demo key sk_test_abc123). The
	// Caddyfile adapter sets it when it hashes such a key, so that the
	// gateway can still warn when one is accepted beside a database.
	// Default: false.
	DemoStyle bool `json:"demo_style,omitempty"`
}

// publishedDemoKey is the demo key of the default Caddyfile and the README:
// everyone knows it.
const publishedDemoKey = "sk_test_abc123"

// demoStyleKey reports whether key looks like a demo or hand-made test key
// rather than a generated one.
func demoStyleKey(key string) bool {
	return key == publishedDemoKey || strings.HasPrefix(key, keystore.TestKeyPrefix) && !keystore.WellFormedKey(key)
}

// hashedStaticKey returns k with its key replaced by key_hash (and
// demo_style set when the key looks like one), so that the key itself
// never reaches the stored config. k must hold a literal key.
func hashedStaticKey(k StaticKey) StaticKey {
	h := keystore.HashKey(k.Key)
	return StaticKey{
		KeyHash:   hex.EncodeToString(h[:]),
		OrgID:     k.OrgID,
		Plan:      k.Plan,
		DemoStyle: demoStyleKey(k.Key),
	}
}

// parseKeyList parses the VALID_API_KEYS format,
// "key:org_id:plan[,key:org_id:plan…]". Blank input yields no keys; blank
// entries (",,") are ignored; anything else malformed is an error naming the
// entry by position (never its key, which is a secret).
func parseKeyList(s string) ([]StaticKey, error) {
	var keys []StaticKey
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		k, err := parseKeyEntry(entry)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// parseKeyEntry parses one "key:org_id:plan".
func parseKeyEntry(entry string) (StaticKey, error) {
	parts := strings.Split(entry, ":")
	if len(parts) != 3 {
		return StaticKey{}, fmt.Errorf("expected key:org_id:plan, got %d colon-separated fields", len(parts))
	}
	k := StaticKey{Key: parts[0], OrgID: parts[1], Plan: parts[2]}
	if err := validKey(k.Key); err != nil { // a literal key: braces are no placeholder here
		return StaticKey{}, err
	}
	if err := k.Validate(); err != nil {
		return StaticKey{}, err
	}
	return k, nil
}

// splitKeyList parses a VALID_API_KEYS list as the Caddyfile adapter
// stores it: literal entries come back hashed (hashedStaticKey), and the
// entries holding a placeholder come back joined, to be expanded at
// provision (key_list). Errors name the entry by position.
func splitKeyList(s string) (hashed []StaticKey, withPlaceholders string, err error) {
	var later []string
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		switch {
		case entry == "":
		case caddyfileutil.HasPlaceholder(entry):
			later = append(later, entry)
		default:
			k, err := parseKeyEntry(entry)
			if err != nil {
				return nil, "", fmt.Errorf("entry %d: %w", i+1, err)
			}
			hashed = append(hashed, hashedStaticKey(k))
		}
	}
	return hashed, strings.Join(later, ","), nil
}

// Validate checks the key (or its hash), org ID and plan. A key that is
// still a placeholder is checked once expanded.
func (k StaticKey) Validate() error {
	switch {
	case k.Key != "" && k.KeyHash != "":
		return fmt.Errorf("both key and key_hash are set; give one")
	case k.Key == "" && k.KeyHash == "":
		return fmt.Errorf("empty key")
	case k.KeyHash != "":
		if _, err := parseKeyHash(k.KeyHash); err != nil {
			return err
		}
	case !caddyfileutil.HasPlaceholder(k.Key):
		if err := validKey(k.Key); err != nil {
			return err
		}
	}
	switch {
	case !tenant.ValidRequestID(k.OrgID): // the same alphabet and bound (1-128) as request IDs
		return fmt.Errorf("org_id %q: want 1-128 characters of letters, digits, '.', '_', '-'", k.OrgID)
	case !tenant.ValidPlanName(k.Plan):
		return fmt.Errorf("plan %q: want 1-64 characters of letters, digits, '.', '_', '-'", k.Plan)
	}
	return nil
}

// validKey checks a literal key: what a bearer token can carry.
func validKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty key")
	case len(key) > maxTokenBytes:
		return fmt.Errorf("key longer than %d bytes", maxTokenBytes)
	case !isToken68(key):
		return fmt.Errorf("key contains characters a bearer token cannot carry (allowed: letters, digits, -._~+/)")
	}
	return nil
}

// parseKeyHash decodes a key_hash: 64 hexadecimal digits.
func parseKeyHash(s string) (keystore.KeyHash, error) {
	var h keystore.KeyHash
	if len(s) != hex.EncodedLen(len(h)) {
		return h, fmt.Errorf("key_hash: want the key's SHA-256 as %d hexadecimal digits, got %d characters", hex.EncodedLen(len(h)), len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("key_hash: want the key's SHA-256 as %d hexadecimal digits: %v", hex.EncodedLen(len(h)), err)
	}
	return h, nil
}

// resolvedKey is a static key ready for the store: its hash, identity and
// whether it looks like a demo key.
type resolvedKey struct {
	hash      keystore.KeyHash
	orgID     string
	plan      string
	demoStyle bool
}

// resolveStaticKeys expands placeholders in keys (in the server's
// environment) and hashes them. what names the list in errors.
func resolveStaticKeys(repl *caddy.Replacer, what string, keys []StaticKey) ([]resolvedKey, error) {
	out := make([]resolvedKey, 0, len(keys))
	for i, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("%s %d: %w", what, i+1, err)
		}
		r := resolvedKey{orgID: k.OrgID, plan: k.Plan, demoStyle: k.DemoStyle}
		if k.KeyHash != "" {
			r.hash, _ = parseKeyHash(k.KeyHash) // checked by Validate
		} else {
			key := k.Key
			if caddyfileutil.HasPlaceholder(key) {
				expanded, err := repl.ReplaceOrErr(key, true, true)
				if err != nil {
					return nil, fmt.Errorf("%s %d: key %s: %w", what, i+1, key, err)
				}
				if err := validKey(expanded); err != nil {
					return nil, fmt.Errorf("%s %d: key %s: %w", what, i+1, key, err)
				}
				key = expanded
			}
			r.hash, r.demoStyle = keystore.HashKey(key), k.DemoStyle || demoStyleKey(key)
		}
		out = append(out, r)
	}
	return out, nil
}

// resolveKeyList expands list (for example {env.VALID_API_KEYS}) in the
// server's environment and parses it as VALID_API_KEYS.
func resolveKeyList(repl *caddy.Replacer, list string) ([]resolvedKey, error) {
	expanded, err := repl.ReplaceOrErr(list, false, true)
	if err != nil {
		return nil, fmt.Errorf("key_list: %w", err)
	}
	keys, err := parseKeyList(expanded)
	if err != nil {
		// The error names the entry, never the key; the placeholder says
		// where the list came from.
		if caddyfileutil.HasPlaceholder(list) {
			return nil, fmt.Errorf("key_list %s: %w", list, err)
		}
		return nil, fmt.Errorf("key_list: %w", err)
	}
	return resolveStaticKeys(repl, "key_list entry", keys)
}

// staticStore resolves static keys. It is built once at provision and never
// changes, so lookups take no lock.
type staticStore map[keystore.KeyHash]*tenant.Identity

// newStaticStore indexes the keys by hash. A key declared twice is a
// config error.
func newStaticStore(keys []resolvedKey) (staticStore, error) {
	store := make(staticStore, len(keys))
	for i, k := range keys {
		if _, dup := store[k.hash]; dup {
			return nil, fmt.Errorf("static key %d (%s): declared more than once", i+1, staticKeyID(k.hash))
		}
		store[k.hash] = tenant.NewIdentity(k.orgID, k.plan, staticKeyID(k.hash), tenant.LimitOverrides{})
	}
	return store, nil
}

// staticKeyID names a static key in logs and placeholders without revealing
// it: "static_" and the first 12 hex digits of its hash.
func staticKeyID(h keystore.KeyHash) string {
	return "static_" + hex.EncodeToString(h[:6])
}

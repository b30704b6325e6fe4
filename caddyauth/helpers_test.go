package caddyauth

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// staticStoreOf builds the static store of literal keys.
func staticStoreOf(tb testing.TB, keys ...StaticKey) staticStore {
	tb.Helper()
	resolved, err := resolveStaticKeys(caddy.NewReplacer(), "static key", keys)
	if err != nil {
		tb.Fatal(err)
	}
	store, err := newStaticStore(resolved)
	if err != nil {
		tb.Fatal(err)
	}
	return store
}

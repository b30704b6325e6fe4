package caddyauth

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestParseKeyList(t *testing.T) {
	keys, err := ParseKeyList(" sk_test_abc123:org_1:premium , ,sk_live_x:org-2:basic")
	if err != nil {
		t.Fatal(err)
	}
	want := []StaticKey{{"sk_test_abc123", "org_1", "premium"}, {"sk_live_x", "org-2", "basic"}}
	if len(keys) != len(want) {
		t.Fatalf("got %d keys, want %d", len(keys), len(want))
	}
	for i := range want {
		if keys[i] != want[i] {
			t.Errorf("key %d = %+v, want %+v", i, keys[i], want[i])
		}
	}
	if keys, err := ParseKeyList(""); err != nil || len(keys) != 0 {
		t.Errorf("empty list: %v, %v", keys, err)
	}
}

func TestParseKeyListErrorsNameTheEntryNotTheKey(t *testing.T) {
	for input, want := range map[string]string{
		"sk_a:org:premium,sk_secret_b:org":    "entry 2: expected key:org_id:plan",
		"sk_a:org:premium:extra":              "entry 1: expected key:org_id:plan, got 4",
		":org:premium":                        "entry 1: empty key",
		"sk_a::premium":                       `entry 1: org_id ""`,
		"sk_a:org:":                           `entry 1: plan ""`,
		"sk a:org:premium":                    "entry 1: key contains characters",
		"sk_a:org/1:premium":                  `entry 1: org_id "org/1"`,
		"sk_a:org:" + strings.Repeat("p", 65): "entry 1: plan",
	} {
		_, err := ParseKeyList(input)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKeyList(%q) = %v, want error containing %q", input, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "sk_secret_b") {
			t.Errorf("error reveals the key: %v", err)
		}
	}
}

func TestStaticStore(t *testing.T) {
	store, err := newStaticStore([]StaticKey{{"sk_test_abc123", "org_1", "premium"}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := store.Lookup(context.Background(), HashKey("sk_test_abc123"))
	if err != nil {
		t.Fatal(err)
	}
	if id.OrgID != "org_1" || id.Plan != "premium" || !strings.HasPrefix(id.KeyID, "static_") {
		t.Errorf("identity = %+v", id)
	}
	if strings.Contains(id.KeyID, "abc123") {
		t.Errorf("key id %q reveals the key", id.KeyID)
	}
	if _, err := store.Lookup(context.Background(), HashKey("sk_test_abc124")); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key: err = %v", err)
	}
	_, err = newStaticStore([]StaticKey{{"k1", "o", "p"}, {"k1", "o2", "p"}})
	if err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("duplicate key: err = %v", err)
	}
}

func TestHashKeyMatchesSHA256OfLongKeysToo(t *testing.T) {
	short, long := "sk_test_abc123", strings.Repeat("x", MaxTokenBytes+10)
	if HashKey(short) == HashKey(short+"x") {
		t.Fatal("different keys hash the same")
	}
	// The stack-buffer path and the heap path must agree with crypto/sha256.
	for _, k := range []string{short, long, strings.Repeat("y", MaxTokenBytes)} {
		if HashKey(k) != sha256Of(k) {
			t.Errorf("HashKey(%d bytes) differs from sha256", len(k))
		}
	}
}

package caddyauth

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestCaddyfileStoresKeysHashedAndPlaceholdersAsWritten(t *testing.T) {
	d := caddyfile.NewTestDispenser(`tenant_auth {
		keys sk_live_fromKeys:org_1:premium,{env.VALID_API_KEYS}
		key sk_live_fromKey org_2 basic
		key {env.OPS_KEY} ops enterprise
		demo_keys sk_test_abc123:org_1:premium
		database_url {env.DATABASE_URL}
	}`)
	var a TenantAuth
	if err := a.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	stored, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"sk_live_fromKeys", "sk_live_fromKey", "sk_test_abc123"} {
		if strings.Contains(string(stored), secret) {
			t.Errorf("the stored config holds %s in clear: %s", secret, stored)
		}
	}
	for _, kept := range []string{`"key_list":"{env.VALID_API_KEYS}"`, `"key":"{env.OPS_KEY}"`, `"database_url":"{env.DATABASE_URL}"`, `"demo_style":true`} {
		if !strings.Contains(string(stored), kept) {
			t.Errorf("the stored config lacks %s: %s", kept, stored)
		}
	}
	if len(a.Keys) != 3 || len(a.DemoKeys) != 1 {
		t.Fatalf("keys %+v, demo keys %+v", a.Keys, a.DemoKeys)
	}
	h := hashedStaticKey(StaticKey{Key: "sk_live_fromKey", OrgID: "org_2", Plan: "basic"})
	if a.Keys[1] != h {
		t.Errorf("key line stored as %+v, want %+v", a.Keys[1], h)
	}
}

func TestCaddyfileRepeatedSubdirectivesAreErrors(t *testing.T) {
	for _, line := range []string{
		"keys sk_a:o:basic", "demo_keys sk_a:o:basic", "forward_key", "database_url postgres://x/y",
		"cache_ttl 1m", "negative_cache_ttl 1m", "refresh_interval 1m", "cache_size 10", "negative_cache_size 10",
	} {
		name := strings.Fields(line)[0]
		d := caddyfile.NewTestDispenser("tenant_auth {\n\t" + line + "\n\t" + line + "\n}")
		var a TenantAuth
		err := a.UnmarshalCaddyfile(d)
		want := "tenant_auth: " + name + " given more than once (first on line 2)"
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), ":3") {
			t.Errorf("%s twice: error %v, want one naming line 3 and containing %q", name, err, want)
		}
	}
	d := caddyfile.NewTestDispenser("tenant_auth {\n\tkey sk_a o basic\n\tkey sk_b o basic\n}")
	var a TenantAuth
	if err := a.UnmarshalCaddyfile(d); err != nil || len(a.Keys) != 2 {
		t.Errorf("key twice: %v, %d keys; key is repeatable", err, len(a.Keys))
	}
}

func TestCaddyfileDemoKeysMustBeLiteral(t *testing.T) {
	d := caddyfile.NewTestDispenser("tenant_auth {\n\tdemo_keys {env.DEMO}\n}")
	var a TenantAuth
	if err := a.UnmarshalCaddyfile(d); err == nil || !strings.Contains(err.Error(), "demo_keys: placeholders are not supported") {
		t.Errorf("err = %v", err)
	}
}

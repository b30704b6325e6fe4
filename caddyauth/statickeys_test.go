package caddyauth

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tenantgate/tenantgate/keystore"
)

func TestParseKeyList(t *testing.T) {
	keys, err := parseKeyList(" sk_test_abc123:org_1:premium , ,sk_live_x:org-2:basic")
	if err != nil {
		t.Fatal(err)
	}
	want := []StaticKey{{Key: "sk_test_abc123", OrgID: "org_1", Plan: "premium"}, {Key: "sk_live_x", OrgID: "org-2", Plan: "basic"}}
	if len(keys) != len(want) {
		t.Fatalf("got %d keys, want %d", len(keys), len(want))
	}
	for i := range want {
		if keys[i] != want[i] {
			t.Errorf("key %d = %+v, want %+v", i, keys[i], want[i])
		}
	}
	if keys, err := parseKeyList(""); err != nil || len(keys) != 0 {
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
		_, err := parseKeyList(input)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKeyList(%q) = %v, want error containing %q", input, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "sk_secret_b") {
			t.Errorf("error reveals the key: %v", err)
		}
	}
}

func TestSplitKeyListHashesLiteralsAndKeepsPlaceholders(t *testing.T) {
	hashed, later, err := splitKeyList("sk_test_abc123:org_1:premium, {env.MORE_KEYS} ,{env.OPS_KEY}:ops:enterprise,sk_live_x:org_2:basic")
	if err != nil {
		t.Fatal(err)
	}
	if later != "{env.MORE_KEYS},{env.OPS_KEY}:ops:enterprise" {
		t.Errorf("placeholder entries = %q", later)
	}
	if len(hashed) != 2 {
		t.Fatalf("hashed %+v, want 2 keys", hashed)
	}
	h := keystore.HashKey("sk_test_abc123")
	if k := hashed[0]; k.Key != "" || k.KeyHash != hex.EncodeToString(h[:]) || k.OrgID != "org_1" || k.Plan != "premium" || !k.DemoStyle {
		t.Errorf("first key %+v, want the demo key's hash, org_1, premium, demo_style", k)
	}
	if k := hashed[1]; k.Key != "" || k.DemoStyle {
		t.Errorf("second key %+v, want hashed, not demo-style", k)
	}
	if _, _, err := splitKeyList("sk_a:org:premium,bad"); err == nil || !strings.Contains(err.Error(), "entry 2") {
		t.Errorf("malformed entry: err = %v", err)
	}
}

func TestDemoStyleKeys(t *testing.T) {
	generated, err := keystore.GenerateKey(true)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{
		"sk_test_abc123":     true,
		"sk_test_mine":       true,
		generated:            false, // made by `caddy tenant key create --test`
		"sk_live_handmade":   false,
		"service-account-42": false,
	} {
		if got := demoStyleKey(key); got != want {
			t.Errorf("demoStyleKey(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestStaticKeyValidate(t *testing.T) {
	h := keystore.HashKey("k")
	good := hex.EncodeToString(h[:])
	for _, c := range []struct {
		k    StaticKey
		want string // "" = valid
	}{
		{StaticKey{KeyHash: good, OrgID: "o", Plan: "p"}, ""},
		{StaticKey{KeyHash: strings.ToUpper(good), OrgID: "o", Plan: "p"}, ""},
		{StaticKey{Key: "{env.K}", OrgID: "o", Plan: "p"}, ""},
		{StaticKey{Key: "k", KeyHash: good, OrgID: "o", Plan: "p"}, "both key and key_hash"},
		{StaticKey{OrgID: "o", Plan: "p"}, "empty key"},
		{StaticKey{KeyHash: good[:63], OrgID: "o", Plan: "p"}, "key_hash: want the key's SHA-256 as 64 hexadecimal digits, got 63"},
		{StaticKey{KeyHash: "zz" + good[2:], OrgID: "o", Plan: "p"}, "key_hash: want"},
		{StaticKey{KeyHash: good, OrgID: "{env.ORG}", Plan: "p"}, "org_id"},
	} {
		err := c.k.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", c.k, err, c.want)
		}
	}
}

func TestStaticStore(t *testing.T) {
	h := keystore.HashKey("sk_live_hashed")
	store := staticStoreOf(t,
		StaticKey{Key: "sk_test_abc123", OrgID: "org_1", Plan: "premium"},
		StaticKey{KeyHash: hex.EncodeToString(h[:]), OrgID: "org_2", Plan: "basic"})
	id, ok := store[keystore.HashKey("sk_test_abc123")]
	if !ok {
		t.Fatal("the static key sk_test_abc123 is not in the store")
	}
	if id.OrgID != "org_1" || id.Plan != "premium" || !strings.HasPrefix(id.KeyID, "static_") {
		t.Errorf("identity = %+v", id)
	}
	if strings.Contains(id.KeyID, "abc123") {
		t.Errorf("key id %q reveals the key", id.KeyID)
	}
	if id, ok := store[keystore.HashKey("sk_live_hashed")]; !ok || id.OrgID != "org_2" {
		t.Errorf("key given by its hash: %+v, %v", id, ok)
	}
	if _, ok := store[keystore.HashKey("sk_test_abc124")]; ok {
		t.Error("an unknown key is in the store")
	}
	resolved, err := resolveStaticKeys(caddy.NewReplacer(), "static key", []StaticKey{{Key: "k1", OrgID: "o", Plan: "p"}, {Key: "k1", OrgID: "o2", Plan: "p"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = newStaticStore(resolved); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("duplicate key: err = %v", err)
	}
}

// provisionKeys runs the static-key part of Provision, with the database
// configured or not, and returns the handler and its logs.
func provisionKeys(t *testing.T, a *TenantAuth, withDatabase bool) (*TenantAuth, *observer.ObservedLogs, error) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	a.logger = zap.New(core)
	return a, logs, a.provisionStaticKeys(caddy.NewReplacer(), withDatabase)
}

func accepts(a *TenantAuth, key string) bool {
	_, ok := a.static[keystore.HashKey(key)]
	return ok
}

func TestDemoKeysOnlyWithoutDatabaseAndOtherKeys(t *testing.T) {
	demo := []StaticKey{hashedStaticKey(StaticKey{Key: "sk_test_abc123", OrgID: "org_1", Plan: "premium"})}
	t.Setenv("TG_TEST_EMPTY_KEYS", "")
	t.Setenv("TG_TEST_KEYS", "sk_live_mine:org_9:basic")
	for _, c := range []struct {
		name         string
		handler      TenantAuth
		withDatabase bool
		demoAccepted bool
	}{
		{"nothing else configured", TenantAuth{DemoKeys: demo, KeyList: "{env.TG_TEST_EMPTY_KEYS}"}, false, true},
		{"with a database", TenantAuth{DemoKeys: demo, KeyList: "{env.TG_TEST_EMPTY_KEYS}"}, true, false},
		{"with keys from the environment", TenantAuth{DemoKeys: demo, KeyList: "{env.TG_TEST_KEYS}"}, false, false},
		{"with a key", TenantAuth{DemoKeys: demo, Keys: []StaticKey{{Key: "sk_live_x", OrgID: "o", Plan: "basic"}}}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, logs, err := provisionKeys(t, &c.handler, c.withDatabase)
			if err != nil {
				t.Fatal(err)
			}
			if got := accepts(a, "sk_test_abc123"); got != c.demoAccepted {
				t.Errorf("demo key accepted = %v, want %v", got, c.demoAccepted)
			}
			if c.handler.KeyList == "{env.TG_TEST_KEYS}" && !accepts(a, "sk_live_mine") {
				t.Errorf("the key from the environment is refused")
			}
			wantLog := "demo keys are off"
			if c.demoAccepted {
				wantLog = "accepting the demo keys"
			}
			if logs.FilterMessageSnippet(wantLog).Len() != 1 {
				t.Errorf("no log line %q: %v", wantLog, logs.All())
			}
		})
	}
}

func TestDemoStyleKeyBesideDatabaseWarns(t *testing.T) {
	t.Setenv("TG_TEST_KEYS", "sk_test_abc123:org_1:premium")
	generated, err := keystore.GenerateKey(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name         string
		handler      TenantAuth
		withDatabase bool
		warnings     int
	}{
		{"published demo key from the environment", TenantAuth{KeyList: "{env.TG_TEST_KEYS}"}, true, 1},
		{"hand-made test key, hashed by the adapter", TenantAuth{Keys: []StaticKey{hashedStaticKey(StaticKey{Key: "sk_test_mine", OrgID: "o", Plan: "basic"})}}, true, 1},
		{"hand-made test key in clear", TenantAuth{Keys: []StaticKey{{Key: "sk_test_mine", OrgID: "o", Plan: "basic"}}}, true, 1},
		{"generated test key", TenantAuth{Keys: []StaticKey{{Key: generated, OrgID: "o", Plan: "basic"}}}, true, 0},
		{"demo key without a database", TenantAuth{KeyList: "{env.TG_TEST_KEYS}"}, false, 0},
		{"inactive demo keys beside a database", TenantAuth{DemoKeys: []StaticKey{hashedStaticKey(StaticKey{Key: "sk_test_abc123", OrgID: "org_1", Plan: "premium"})}}, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, logs, err := provisionKeys(t, &c.handler, c.withDatabase)
			if err != nil {
				t.Fatal(err)
			}
			warns := logs.FilterLevelExact(zapcore.WarnLevel)
			if warns.Len() != c.warnings {
				t.Fatalf("%d WARN lines, want %d: %v", warns.Len(), c.warnings, logs.All())
			}
			for _, e := range warns.All() {
				if !strings.Contains(e.Message, "demo-style") || !strings.HasPrefix(e.ContextMap()["key_id"].(string), "static_") {
					t.Errorf("warning %q %v", e.Message, e.ContextMap())
				}
			}
			for _, e := range logs.All() {
				for _, v := range e.ContextMap() {
					if s, _ := v.(string); strings.Contains(s, "sk_test_") {
						t.Errorf("a log line reveals a key: %v", e)
					}
				}
			}
		})
	}
}

func TestKeysFromPlaceholdersAreExpandedAtProvision(t *testing.T) {
	t.Setenv("TG_TEST_OPS_KEY", "sk_live_opsKey")
	t.Setenv("TG_TEST_NESTED", "{env.TG_TEST_OPS_KEY}:ops:enterprise")
	a, _, err := provisionKeys(t, &TenantAuth{Keys: []StaticKey{{Key: "{env.TG_TEST_OPS_KEY}", OrgID: "ops", Plan: "enterprise"}}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !accepts(a, "sk_live_opsKey") {
		t.Error("the key from {env.TG_TEST_OPS_KEY} is refused")
	}

	for _, c := range []struct {
		handler TenantAuth
		want    string
	}{
		{TenantAuth{Keys: []StaticKey{{Key: "{env.TG_TEST_UNSET}", OrgID: "o", Plan: "p"}}}, "static key 1: key {env.TG_TEST_UNSET}: evaluated placeholder {env.TG_TEST_UNSET} is empty"},
		{TenantAuth{Keys: []StaticKey{{Key: "{env.TG_TEST_OPS_KEY", OrgID: "o", Plan: "p"}}}, "static key 1"},
		{TenantAuth{KeyList: "{env.TG_TEST_OPS_KEY}"}, "key_list {env.TG_TEST_OPS_KEY}: entry 1: expected key:org_id:plan"},
		{TenantAuth{KeyList: "{nope.x}"}, "unrecognized placeholder {nope.x}"},
		// The list's content is keys, not more placeholders.
		{TenantAuth{KeyList: "{env.TG_TEST_NESTED}"}, "key_list {env.TG_TEST_NESTED}: entry 1: key contains characters a bearer token cannot carry"},
	} {
		_, _, err := provisionKeys(t, &c.handler, false)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want %q", c.handler, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "opsKey") {
			t.Errorf("error reveals the key: %v", err)
		}
	}
}

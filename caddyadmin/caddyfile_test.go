package caddyadmin

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestCaddyfileTenantAdmin(t *testing.T) {
	a := new(TenantAdmin)
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`tenant_admin {
		token {env.ADMIN_TOKEN}
		database_url postgres://db/keys
		usage_database_url postgres://db/usage
		idempotency_ttl 1h
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if a.Token != "{env.ADMIN_TOKEN}" || a.DatabaseURL != "postgres://db/keys" || a.UsageDatabaseURL != "postgres://db/usage" ||
		a.IdempotencyTTL != caddy.Duration(time.Hour) {
		t.Errorf("parsed %+v", a)
	}
	// Empty values (unset environment variables) mean none.
	a = new(TenantAdmin)
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("tenant_admin {\n token\n database_url\n}")); err != nil || a.Token != "" || a.DatabaseURL != "" {
		t.Errorf("empty values: %+v, %v", a, err)
	}
	if err := new(TenantAdmin).UnmarshalCaddyfile(caddyfile.NewTestDispenser("tenant_admin")); err != nil {
		t.Errorf("bare directive: %v", err)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for input, want := range map[string]string{
		"tenant_admin extra":                                         `unexpected argument "extra"`,
		"tenant_admin {\n tokn abc\n}":                               `unknown subdirective "tokn"`,
		"tenant_admin {\n token a b\n}":                              "token: expected one value, got 2",
		"tenant_admin {\n idempotency_ttl\n}":                        "idempotency_ttl: expected one duration",
		"tenant_admin {\n idempotency_ttl soon\n}":                   `idempotency_ttl: expected a positive duration such as 24h, got "soon"`,
		"tenant_admin {\n idempotency_ttl -1h\n}":                    "expected a positive duration",
		"tenant_admin {\n database_url a b\n}":                       "database_url: expected one value",
		"tenant_usage_report x":                                      `unexpected argument "x"`,
		"tenant_usage_report {\n database a\n}":                      `unknown subdirective "database"`,
		"tenant_usage_report {\n database_url a b\n}":                "expected one URL, got 2",
		"tenant_admin {\n token a\n token b\n}":                      "token given more than once (first on line 2)",
		"tenant_usage_report {\n database_url a\n database_url b\n}": "database_url given more than once",
	} {
		var err error
		d := caddyfile.NewTestDispenser(input)
		if strings.HasPrefix(input, "tenant_admin") {
			err = new(TenantAdmin).UnmarshalCaddyfile(d)
		} else {
			err = new(UsageReport).UnmarshalCaddyfile(d)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to contain %q", input, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%q: error %q does not name the line", input, err)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8081":       true,
		"tcp/127.0.0.1:8081":   true,
		"127.0.0.2:8081":       true,
		"[::1]:8081":           true,
		"localhost:8081":       true,
		"unix//run/admin.sock": true,
		":8081":                false,
		"0.0.0.0:8081":         false,
		"[::]:8081":            false,
		"10.0.0.5:8081":        false,
		"example.com:8081":     false,
		"not an address":       false,
	} {
		if got := loopbackOnly(addr); got != want {
			t.Errorf("loopbackOnly(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestRawHasTokenless(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"handler":"tenant_admin"}`:                                                                      true,
		`{"handler":"tenant_admin","token":""}`:                                                           true,
		`{"handler":"tenant_admin","token":"{env.TG_UNSET_IN_TESTS}"}`:                                    true,
		`{"handler":"tenant_admin","token":"0123456789abcdef"}`:                                           false,
		`{"handler":"subroute","routes":[{"handle":[{"handler":"rewrite"},{"handler":"tenant_admin"}]}]}`: true,
		`{"handler":"subroute","routes":[{"handle":[{"handler":"static_response"}]}]}`:                    false,
	} {
		if got := rawHasTokenless([]byte(raw)); got != want {
			t.Errorf("rawHasTokenless(%s) = %v, want %v", raw, got, want)
		}
	}
}

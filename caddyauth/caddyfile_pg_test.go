package caddyauth

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestCaddyfileDatabaseSettings(t *testing.T) {
	d := caddyfile.NewTestDispenser(`tenant_auth {
		database_url postgres://gw@db:5432/keys
		cache_ttl 10m
		negative_cache_ttl 45s
		refresh_interval 1h
		cache_size 5000
		negative_cache_size 700
	}`)
	var a TenantAuth
	if err := a.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := TenantAuth{
		DatabaseURL: "postgres://gw@db:5432/keys", CacheTTL: caddy.Duration(10 * time.Minute),
		NegativeCacheTTL: caddy.Duration(45 * time.Second), RefreshInterval: caddy.Duration(time.Hour),
		CacheSize: 5000, NegativeCacheSize: 700,
	}
	if a.DatabaseURL != want.DatabaseURL || a.CacheTTL != want.CacheTTL || a.NegativeCacheTTL != want.NegativeCacheTTL ||
		a.RefreshInterval != want.RefreshInterval || a.CacheSize != want.CacheSize || a.NegativeCacheSize != want.NegativeCacheSize {
		t.Errorf("parsed %+v, want %+v", a, want)
	}
}

func TestCaddyfileEmptyDatabaseURLMeansStaticKeysOnly(t *testing.T) {
	var a TenantAuth
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("tenant_auth {\n database_url\n}")); err != nil {
		t.Fatal(err)
	}
	if a.DatabaseURL != "" {
		t.Errorf("database_url = %q, want empty", a.DatabaseURL)
	}
}

func TestCaddyfileDatabaseSettingErrorsNameTheLine(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"cache_ttl soon", `cache_ttl: expected a positive duration such as 30s or 15m, got "soon"`},
		{"cache_ttl -5m", "cache_ttl: expected a positive duration"},
		{"negative_cache_ttl 0s", "negative_cache_ttl: expected a positive duration"},
		{"refresh_interval", "refresh_interval: expected one duration"},
		{"refresh_interval 1m 2m", "refresh_interval: expected one duration"},
		{"cache_size many", `cache_size: expected a number of entries from 1 to 10000000, got "many"`},
		{"negative_cache_size 0", "negative_cache_size: expected a number of entries"},
		{"database_url a b", "database_url: expected one URL"},
		{"cache_tll 1m", `unknown subdirective "cache_tll"`},
	} {
		d := caddyfile.NewTestDispenser("tenant_auth {\n\tkeys\n\t" + c.line + "\n}")
		var a TenantAuth
		err := a.UnmarshalCaddyfile(d)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), ":3") {
			t.Errorf("%q: error %v, want one naming line 3 and containing %q", c.line, err, c.want)
		}
	}
}

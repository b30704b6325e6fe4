package caddyauth

import (
	"hash/crc32"
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

func TestWellFormedKey(t *testing.T) {
	for i := range 100 {
		k, err := GenerateKey(i%2 == 0)
		if err != nil {
			t.Fatal(err)
		}
		if !WellFormedKey(k) || !keyPattern.MatchString(k) {
			t.Fatalf("generated key %q is not well formed", k)
		}
	}
	// The same shape with a wrong checksum: change one random character.
	k, err := GenerateKey(false)
	if err != nil {
		t.Fatal(err)
	}
	flipped := []byte(k)
	if flipped[10] == 'a' {
		flipped[10] = 'b'
	} else {
		flipped[10] = 'a'
	}
	if WellFormedKey(string(flipped)) {
		t.Errorf("a key with one character changed passes the checksum")
	}
	// Made-up keys of the right shape fail the checksum (false accept
	// rate 2^-32 each), so a flood of them never reaches Postgres.
	body := make([]byte, KeyBodyLen)
	for i := range 10000 {
		for j := range body {
			body[j] = base62[(i*7+j*13+i*j)%62]
		}
		if WellFormedKey(LiveKeyPrefix + string(body)) {
			t.Fatalf("made-up key %d passes the checksum", i)
		}
	}
	for _, bad := range []string{"", "sk_test_abc123", "sk_live_" + strings.Repeat("a", 31), "sk_live_" + strings.Repeat("a", 33),
		"pk_live_" + strings.Repeat("a", 32), "sk_live_" + strings.Repeat("a", 31) + "-", "SK_LIVE_" + strings.Repeat("a", 32)} {
		if WellFormedKey(bad) {
			t.Errorf("WellFormedKey(%q) = true", bad)
		}
	}
}

func TestChecksumIsCRC32(t *testing.T) {
	for _, s := range []string{"", "a", "sk_live_0123456789abcdefghijklmnop", strings.Repeat("xyz", 50)} {
		if got, want := checksum(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("checksum(%q) = %08x, want %08x", s, got, want)
		}
	}
}

func TestGenerateKeyIsUniform(t *testing.T) {
	// Rejection sampling must make every base62 character about equally
	// likely; modulo bias would favour the first 8 characters by ~1/31.
	counts := make(map[byte]int)
	const keys = 20000
	for range keys {
		k, err := GenerateKey(false)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(LiveKeyPrefix); i < len(LiveKeyPrefix)+KeyRandomLen; i++ {
			counts[k[i]]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("%d distinct characters, want 62", len(counts))
	}
	expected := float64(keys*KeyRandomLen) / 62
	var chi2 float64
	for _, n := range counts {
		d := float64(n) - expected
		chi2 += d * d / expected
	}
	// 61 degrees of freedom: p < 0.0001 beyond ~110.
	if chi2 > 110 {
		t.Errorf("chi-square %.1f: characters are not uniform", chi2)
	}
}

package keystore

import (
	"hash/crc32"
	"regexp"
	"strings"
	"testing"
)

var keyPattern = regexp.MustCompile(`^sk_(live|test)_[A-Za-z0-9]{32}$`)

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
	// rate 2^-32 each): typos are refused without a query.
	body := make([]byte, keyBodyLen)
	for i := range 10000 {
		for j := range body {
			body[j] = base62[(i*7+j*13+i*j)%62]
		}
		if WellFormedKey(liveKeyPrefix + string(body)) {
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
		for i := len(liveKeyPrefix); i < len(liveKeyPrefix)+keyRandomLen; i++ {
			counts[k[i]]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("%d distinct characters, want 62", len(counts))
	}
	expected := float64(keys*keyRandomLen) / 62
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

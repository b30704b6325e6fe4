package caddyauth

import (
	"crypto/rand"
	"fmt"
)

// Database API keys are "sk_live_" or "sk_test_" followed by KeyRandomLen
// base62 characters (DESIGN §4), about 190 bits from crypto/rand.
const (
	LiveKeyPrefix  = "sk_live_"
	TestKeyPrefix  = "sk_test_"
	KeyRandomLen   = 32
	KeyLen         = len(LiveKeyPrefix) + KeyRandomLen
	DisplayPrefLen = 12 // stored and shown: "sk_live_AbCd"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// GenerateKey returns a new random API key. Random bytes of 248 and above
// are rejected so that every base62 character is equally likely (248 is the
// largest multiple of 62 that fits a byte): no modulo bias.
func GenerateKey(test bool) (string, error) {
	prefix := LiveKeyPrefix
	if test {
		prefix = TestKeyPrefix
	}
	key := make([]byte, 0, KeyLen)
	key = append(key, prefix...)
	var rnd [48]byte
	for len(key) < KeyLen {
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range rnd {
			if b >= 248 {
				continue
			}
			key = append(key, base62[b%62])
			if len(key) == KeyLen {
				break
			}
		}
	}
	return string(key), nil
}

// WellFormedKey reports whether token has the shape of a database key.
// Tokens of any other shape cannot be in the database, so they are refused
// without a query.
func WellFormedKey(token string) bool {
	if len(token) != KeyLen {
		return false
	}
	if p := token[:len(LiveKeyPrefix)]; p != LiveKeyPrefix && p != TestKeyPrefix {
		return false
	}
	for i := len(LiveKeyPrefix); i < len(token); i++ {
		c := token[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// DisplayPrefix is the part of a key that is stored and shown in listings.
func DisplayPrefix(key string) string {
	return key[:DisplayPrefLen]
}

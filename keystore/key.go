package keystore

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
)

// KeyHash is the SHA-256 of an API key: the only form in which keys are
// stored, cached or compared.
type KeyHash [sha256.Size]byte

// maxHashedInPlace is the longest key HashKey hashes from a stack buffer;
// bearer tokens are at most 256 bytes.
const maxHashedInPlace = 256

// HashKey returns the SHA-256 of key. Keys up to 256 bytes are copied into
// a stack buffer first, so hashing a presented key allocates nothing.
func HashKey(key string) KeyHash {
	if len(key) <= maxHashedInPlace {
		var buf [maxHashedInPlace]byte
		n := copy(buf[:], key)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(key))
}

// Database API keys are "sk_live_" or "sk_test_" followed by keyBodyLen
// base62 characters: keyRandomLen from crypto/rand (about 154 bits) and a
// keyChecksumLen-character CRC-32 of everything before it, as GitHub's
// tokens carry. The checksum catches typos without a database query and
// lets secret scanners recognise a leaked key. It is not a secret: anyone
// can mint well-formed keys, so it does not keep a flood of made-up keys
// away from PostgreSQL; the key filter and the lookup lanes do (lanes.go).
const (
	liveKeyPrefix    = "sk_live_"
	TestKeyPrefix    = "sk_test_"
	keyBodyLen       = 32
	keyRandomLen     = 26
	keyChecksumLen   = keyBodyLen - keyRandomLen
	keyLen           = len(liveKeyPrefix) + keyBodyLen
	displayPrefixLen = 12 // stored and shown: "sk_live_AbCd"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// GenerateKey returns a new random API key. Random bytes of 248 and above
// are rejected so that every base62 character is equally likely (248 is the
// largest multiple of 62 that fits a byte): no modulo bias.
func GenerateKey(test bool) (string, error) {
	prefix := liveKeyPrefix
	if test {
		prefix = TestKeyPrefix
	}
	const randomEnd = keyLen - keyChecksumLen
	key := make([]byte, 0, keyLen)
	key = append(key, prefix...)
	var rnd [48]byte
	for len(key) < randomEnd {
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range rnd {
			if b >= 248 {
				continue
			}
			key = append(key, base62[b%62])
			if len(key) == randomEnd {
				break
			}
		}
	}
	key = appendChecksum(key, checksum(string(key)))
	return string(key), nil
}

// checksum is the IEEE CRC-32 of s (crc32.ChecksumIEEE), computed over the
// string in place: no conversion to []byte, so checking a presented key
// allocates nothing.
func checksum(s string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = crc32.IEEETable[byte(crc)^s[i]] ^ (crc >> 8)
	}
	return ^crc
}

// appendChecksum appends sum in base62, keyChecksumLen characters wide
// (62^6 > 2^32, so every CRC-32 fits).
func appendChecksum(dst []byte, sum uint32) []byte {
	var digits [keyChecksumLen]byte
	for i := keyChecksumLen - 1; i >= 0; i-- {
		digits[i] = base62[sum%62]
		sum /= 62
	}
	return append(dst, digits[:]...)
}

// WellFormedKey reports whether token has the shape of a database key and
// a valid checksum. Other tokens cannot be in the database, so they are
// refused without a query. It allocates nothing.
func WellFormedKey(token string) bool {
	if len(token) != keyLen {
		return false
	}
	if p := token[:len(liveKeyPrefix)]; p != liveKeyPrefix && p != TestKeyPrefix {
		return false
	}
	for i := len(liveKeyPrefix); i < len(token); i++ {
		c := token[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	const randomEnd = keyLen - keyChecksumLen
	var want [keyChecksumLen]byte
	appendChecksum(want[:0], checksum(token[:randomEnd]))
	return token[randomEnd:] == string(want[:])
}

// displayPrefix is the part of a key that is stored and shown in listings.
func displayPrefix(key string) string {
	return key[:displayPrefixLen]
}

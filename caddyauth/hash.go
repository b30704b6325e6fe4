package caddyauth

import "crypto/sha256"

// KeyHash is the SHA-256 of an API key: the only form in which keys are
// stored, cached or compared.
type KeyHash [sha256.Size]byte

// HashKey returns the SHA-256 of key. Keys up to MaxTokenBytes are copied
// into a stack buffer first, so hashing a presented key allocates nothing.
func HashKey(key string) KeyHash {
	if len(key) <= MaxTokenBytes {
		var buf [MaxTokenBytes]byte
		n := copy(buf[:], key)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(key))
}

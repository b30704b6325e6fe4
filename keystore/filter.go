package keystore

import (
	"crypto/rand"
	"sync"

	"github.com/bits-and-blooms/bloom/v3"
)

// The key filter is a Bloom filter of the hashes of every key that is not
// revoked, so that a cache miss for a forged key can be told from a miss
// for a real one without a query (lanes.go). It answers "maybe a key" for
// every real key and, for about 1 % of forged ones, falsely; those take
// the normal lane and are then cached as refusals.
//
// It is built by streaming every such hash from PostgreSQL once the LISTEN
// connection is up (so no key created meanwhile is missed), and kept
// current by the notifications that carry each new key's hash. Keys are
// never removed: a revoked key left in the filter only takes the normal
// lane, where PostgreSQL refuses it. It is rebuilt after the LISTEN
// connection was lost (notifications may have been missed), and when more
// keys were added than it was sized for.
//
// A Bloom filter takes inserts, which binary fuse and xor filters (smaller
// for the same false-positive rate) do not; at 1 % it costs about 1.2
// bytes per key, and the filter is sized with a quarter of headroom.
type keyFilter struct {
	mu       sync.RWMutex
	bits     *bloom.BloomFilter
	capacity uint
	added    uint
	// salt is mixed into every hash, different in each filter, so that a
	// forged key found to be a false positive here is not one on other
	// gateways, nor here after the next rebuild.
	salt KeyHash
}

// Filter sizing: the false-positive rate at capacity, and the least
// headroom for keys created before the next rebuild.
const (
	filterFalsePositiveRate = 0.01
	filterMinHeadroom       = 1024
)

// newKeyFilter returns an empty filter sized for expected keys plus headroom.
func newKeyFilter(expected int) *keyFilter {
	capacity := uint(expected + max(expected/4, filterMinHeadroom))
	f := &keyFilter{bits: bloom.NewWithEstimates(capacity, filterFalsePositiveRate), capacity: capacity}
	_, _ = rand.Read(f.salt[:]) // never fails (crypto/rand panics instead)
	return f
}

func (f *keyFilter) salted(h KeyHash) KeyHash {
	for i := range h {
		h[i] ^= f.salt[i]
	}
	return h
}

// add inserts h and reports whether the filter now holds more keys than it
// was sized for (its false-positive rate is then above target). A key
// added again (a notification of a change) is not counted twice.
func (f *keyFilter) add(h KeyHash) (overfull bool) {
	s := f.salted(h)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.bits.TestAndAdd(s[:]) {
		f.added++
	}
	return f.added > f.capacity
}

// mayContain reports whether h may be the hash of a key (no false negatives).
func (f *keyFilter) mayContain(h KeyHash) bool {
	s := f.salted(h)
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.bits.Test(s[:])
}

// size returns the number of keys added (about: a new key that was a false
// positive is not counted) and the bytes of the bit array.
func (f *keyFilter) size() (keys uint, bytes uint) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.added, f.bits.Cap() / 8
}

package caddyusage

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// newEventID returns a UUIDv7 (RFC 9562) for an event of time t: 48 bits
// of Unix milliseconds, then 74 random bits. The random bits come from
// math/rand/v2's per-thread ChaCha8 generator (its initial state is
// secure random): IDs must be unique, not secret, and this costs no system
// call or lock.
func newEventID(t time.Time) uuid.UUID {
	var id uuid.UUID
	ms := uint64(t.UnixMilli())
	binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	r := rand.Uint64()
	binary.BigEndian.PutUint64(id[0:8], ms<<16|r&0xffff)
	id[6] = id[6]&0x0f | 0x70 // version 7
	id[8] = id[8]&0x3f | 0x80 // RFC 9562 variant
	return id
}

// maxServiceLabels bounds the distinct service labels of a process; later
// new labels become "other". The label is a dimension of every rollup, so
// its cardinality must not follow what clients send.
const (
	maxServiceLabels = 1000
	maxServiceLen    = 64
	otherService     = "other"
)

// serviceLabels bounds the service dimension: labels are cleaned and the
// set of distinct labels is capped. Lookups are lock-free (a copy-on-write
// map); adding a label takes a lock, at most maxServiceLabels times.
type serviceLabels struct {
	known atomic.Pointer[map[string]string]
	mu    sync.Mutex
}

func newServiceLabels() *serviceLabels {
	s := new(serviceLabels)
	m := map[string]string{"": "", otherService: otherService}
	s.known.Store(&m)
	return s
}

// label returns the bounded label for s.
func (s *serviceLabels) label(v string) string {
	if l, ok := (*s.known.Load())[v]; ok {
		return l
	}
	if !cleanLabel(v) {
		return otherService
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := *s.known.Load()
	if l, ok := m[v]; ok {
		return l
	}
	if len(m) >= maxServiceLabels {
		return otherService
	}
	next := make(map[string]string, len(m)+1)
	for k, l := range m {
		next[k] = l
	}
	v = string([]byte(v)) // own it: v may point into a request's path
	next[v] = v
	s.known.Store(&next)
	return v
}

func cleanLabel(v string) bool {
	if len(v) > maxServiceLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

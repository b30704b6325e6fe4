package keystore

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

// BenchmarkCachedLookup measures what a request with a cached database key
// costs the store and what tenant_auth does before asking it: the shape
// and checksum check, hashing the presented key, and the cache lookup. It
// needs no database (the pool never connects).
func BenchmarkCachedLookup(b *testing.B) {
	s := testStore(b, "postgres://127.0.0.1:1/none", testSettings(), options{noBackground: true})
	key, err := GenerateKey(false)
	if err != nil {
		b.Fatal(err)
	}
	v := verdict{entry: keyEntry{rec: &cachedKey{Identity: *tenant.NewIdentity("org", "basic", "key", tenant.LimitOverrides{})}}}
	v.entry.rec.flushed.Store(math.MaxInt64) // uses are marked, but there is no database to write them to
	s.remember(HashKey(key), v, s.gen(HashKey(key)), time.Now())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if !WellFormedKey(key) {
			b.Fatal("not well formed")
		}
		if _, err := s.Lookup(ctx, HashKey(key)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMissLookup measures a miss answered by Postgres (a real
// database from TEST_DATABASE_URL): each lookup is of a key evicted just
// before. It reports the median and the 99th percentile.
func BenchmarkMissLookup(b *testing.B) {
	dsn := testenv.MigratedDatabase(b)
	conn := testenv.Connect(b, dsn)
	org := newTestOrg(b, conn, "basic")
	hashes := make([]KeyHash, 64)
	for i := range hashes {
		hashes[i] = HashKey(newTestKey(b, conn, org.ID, 0).Key)
	}
	s := testStore(b, dsn, testSettings(), options{noBackground: true})
	ctx := context.Background()
	if _, err := s.Lookup(ctx, hashes[0]); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	durations := make([]time.Duration, 0, 1024)
	b.ResetTimer()
	i := 0
	for b.Loop() {
		h := hashes[i%len(hashes)]
		i++
		s.invalidate(h)
		start := time.Now()
		if _, err := s.Lookup(ctx, h); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(durations[len(durations)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkWellFormedKey measures the shape and checksum check every
// database-shaped token passes before any lookup.
func BenchmarkWellFormedKey(b *testing.B) {
	key, err := GenerateKey(false)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !WellFormedKey(key) {
			b.Fatal("generated key not well formed")
		}
	}
}

// BenchmarkHashKey measures hashing a presented key.
func BenchmarkHashKey(b *testing.B) {
	b.ReportAllocs()
	var sink KeyHash
	for b.Loop() {
		sink = HashKey("sk_live_0123456789abcdefghijABCDEFGHIJ")
	}
	_ = sink
}

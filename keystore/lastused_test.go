package keystore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// lastUsed reads a key's last_used_at; the zero time when it is null.
func lastUsed(t *testing.T, conn *pgx.Conn, keyID string) time.Time {
	t.Helper()
	var at *time.Time
	if err := conn.QueryRow(context.Background(), `SELECT last_used_at FROM api_keys WHERE id = $1`, keyID).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if at == nil {
		return time.Time{}
	}
	return *at
}

// flush runs one flush and checks how many keys it wrote.
func flush(t *testing.T, b *Store, want int) {
	t.Helper()
	n, err := b.flushLastUse(context.Background())
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	if n != want {
		t.Errorf("flush wrote %d keys, want %d", n, want)
	}
}

// use looks a key up and fails the test unless it is accepted.
func use(t *testing.T, b *Store, h KeyHash) {
	t.Helper()
	if _, err := b.Lookup(context.Background(), h); err != nil {
		t.Fatal(err)
	}
}

func TestPGUsageFlushRecordsTheLastUse(t *testing.T) {
	dsn := migratedDB(t)
	conn := connect(t, dsn)
	org := seedOrg(t, conn, "basic")
	k, unused := seedKey(t, conn, org.ID, 0), seedKey(t, conn, org.ID, 0)
	clock := testenv.NewClock(time.Now())
	queries := new(queryCounter)
	b := testStore(t, dsn, testSettings(), options{noBackground: true, now: clock.Now, tracer: queries})
	h := HashKey(k.Key)

	use(t, b, h) // a miss
	clock.Advance(5 * time.Second)
	use(t, b, h) // a hit
	want := clock.Now().Truncate(time.Second)
	flush(t, b, 1)
	if got := lastUsed(t, conn, k.ID); !got.Equal(want) {
		t.Errorf("last_used_at = %v, want the clock's second %v", got, want)
	}
	if got := lastUsed(t, conn, unused.ID); !got.IsZero() {
		t.Errorf("unused key's last_used_at = %v, want null", got)
	}
	if n := queries.lastUses.Load(); n != 1 {
		t.Errorf("the flush made %d UPDATEs, want 1", n)
	}

	// No use since, or only uses within the second already written: no query.
	flush(t, b, 0)
	use(t, b, h)
	flush(t, b, 0)
	if n := queries.lastUses.Load(); n != 1 {
		t.Errorf("flushes with nothing new made %d more UPDATEs, want 0", n-1)
	}

	// Another gateway, whose clock is ahead, records a later use; this one's
	// later flush of an older second does not move it backwards.
	ahead := testenv.NewClock(want.Add(time.Hour))
	other := testStore(t, dsn, testSettings(), options{noBackground: true, now: ahead.Now})
	use(t, other, h)
	flush(t, other, 1)
	clock.Advance(10 * time.Second)
	use(t, b, h)
	flush(t, b, 1)
	if got := lastUsed(t, conn, k.ID); !got.Equal(want.Add(time.Hour)) {
		t.Errorf("last_used_at = %v after an older flush, want the later %v kept", got, want.Add(time.Hour))
	}
	// …and once this gateway's use is the latest, it is written.
	clock.Advance(2 * time.Hour)
	use(t, b, h)
	flush(t, b, 1)
	if got, want := lastUsed(t, conn, k.ID), clock.Now().Truncate(time.Second); !got.Equal(want) {
		t.Errorf("last_used_at = %v, want %v", got, want)
	}
}

func TestPGUsageFlushWritesInBatches(t *testing.T) {
	dsn := migratedDB(t)
	conn := connect(t, dsn)
	org := seedOrg(t, conn, "basic")
	const n = 2*lastUseBatchSize + 500
	hashes := make([]KeyHash, n)
	raw := make([][]byte, n)
	for i := range hashes {
		hashes[i] = sha256.Sum256(fmt.Appendf(nil, "usage-key-%d", i))
		raw[i] = hashes[i][:]
	}
	if _, err := conn.Exec(context.Background(), `INSERT INTO api_keys (organization_id, name, key_prefix, key_hash)
		SELECT $1, 'bulk', 'sk_live_bulk', h FROM unnest($2::bytea[]) AS h`, org.ID, raw); err != nil {
		t.Fatal(err)
	}
	clock := testenv.NewClock(time.Now())
	queries := new(queryCounter)
	s := testSettings()
	s.CacheSize = 2 * n
	b := testStore(t, dsn, s, options{noBackground: true, now: clock.Now, tracer: queries})
	if err := b.warm(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hashes {
		use(t, b, h)
	}
	if q := queries.n.Load(); q != 0 {
		t.Fatalf("%d lookups after the warm start, want 0", q)
	}
	flush(t, b, n)
	if got, want := queries.lastUses.Load(), int64(3); got != want {
		t.Errorf("flushing %d keys made %d UPDATEs, want %d", n, got, want)
	}
	var recorded int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM api_keys WHERE last_used_at = $1`,
		clock.Now().Truncate(time.Second)).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != n {
		t.Errorf("%d keys have last_used_at set, want %d", recorded, n)
	}
}

func TestPGUsageFlushDoesNotInvalidateTheCache(t *testing.T) {
	dsn := migratedDB(t)
	conn := connect(t, dsn)
	ctx := context.Background()
	org := seedOrg(t, conn, "basic")
	k, sentinel := seedKey(t, conn, org.ID, 0), seedKey(t, conn, org.ID, 0)
	queries := new(queryCounter)
	s := testSettings()
	s.CacheTTL = 24 * time.Hour
	b := testStore(t, dsn, s, options{tracer: queries})
	waitFor(t, 5*time.Second, "the LISTEN connection", b.state.listening.Load)
	h := HashKey(k.Key)
	use(t, b, h)
	use(t, b, HashKey(sentinel.Key))
	before, _ := b.keys.get(h)

	flush(t, b, 2)
	if lastUsed(t, conn, k.ID).IsZero() {
		t.Fatal("the flush did not record the use")
	}
	// Notifications arrive in commit order: once the sentinel's revocation
	// has been applied, any notification the flush caused has been too.
	if _, err := NewAdmin(conn).RevokeKey(ctx, sentinel.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the sentinel's revocation", func() bool {
		_, err := b.Lookup(ctx, HashKey(sentinel.Key))
		return errors.Is(err, ErrRevokedKey)
	})
	after, ok := b.keys.get(h)
	if !ok || after.rec != before.rec {
		t.Fatal("the flush invalidated the used key's cache entry")
	}
	q := queries.n.Load()
	use(t, b, h)
	if n := queries.n.Load() - q; n != 0 {
		t.Errorf("a cached key made %d queries after a flush, want 0", n)
	}
}

func TestPGUsageSurvivesReplacedEntries(t *testing.T) {
	dsn := migratedDB(t)
	conn := connect(t, dsn)
	ctx := context.Background()
	org := seedOrg(t, conn, "basic")
	unchanged, changed, notified := seedKey(t, conn, org.ID, 0), seedKey(t, conn, org.ID, 0), seedKey(t, conn, org.ID, 0)
	clock := testenv.NewClock(time.Now())
	queries := new(queryCounter)
	b := testStore(t, dsn, testSettings(), options{noBackground: true, now: clock.Now, tracer: queries})
	for _, k := range []NewAPIKey{unchanged, changed, notified} {
		use(t, b, HashKey(k.Key))
	}
	want := clock.Now().Truncate(time.Second)
	clock.Advance(time.Minute)

	// The refresh replaces every entry: one with the same identity, one
	// whose plan changed. A notification drops the third.
	if _, err := conn.Exec(ctx, `UPDATE api_keys SET plan_tier = 'premium' WHERE id = $1`, changed.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.revalidate(); err != nil {
		t.Fatal(err)
	}
	if e, ok := b.keys.get(HashKey(changed.Key)); !ok || e.rec.Plan != "premium" {
		t.Fatalf("changed key after the refresh: cached %v, %+v; want plan premium", ok, e.rec)
	}
	b.invalidate(HashKey(notified.Key))

	flush(t, b, 3)
	if got := lastUsed(t, conn, unchanged.ID); !got.Equal(want) {
		t.Errorf("key refreshed unchanged: last_used_at = %v, want %v", got, want)
	}
	if got := lastUsed(t, conn, changed.ID); !got.Equal(want) {
		t.Errorf("key refreshed with a new plan: last_used_at = %v, want %v", got, want)
	}
	if got := lastUsed(t, conn, notified.ID); !got.Equal(want) {
		t.Errorf("key dropped by a notification: last_used_at = %v, want %v", got, want)
	}
	if n := queries.lastUses.Load(); n != 1 {
		t.Errorf("the flush made %d UPDATEs, want 1", n)
	}
	flush(t, b, 0) // what was carried over is not written twice
}

func TestPGUsageFlushFailureKeepsTheMarks(t *testing.T) {
	dsn := migratedDB(t)
	conn := connect(t, dsn)
	org := seedOrg(t, conn, "basic")
	cached, dropped := seedKey(t, conn, org.ID, 0), seedKey(t, conn, org.ID, 0)
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	clock := testenv.NewClock(time.Now())
	b := testStore(t, viaProxy, testSettings(), options{noBackground: true, now: clock.Now})
	use(t, b, HashKey(cached.Key))
	use(t, b, HashKey(dropped.Key))
	b.invalidate(HashKey(dropped.Key)) // its use waits outside the cache
	want := clock.Now().Truncate(time.Second)

	proxy.Cut()
	if n, err := b.flushLastUse(context.Background()); err == nil {
		t.Fatalf("flush with Postgres down wrote %d keys and no error", n)
	}
	use(t, b, HashKey(cached.Key)) // cached keys are served meanwhile
	proxy.Restore()
	flush(t, b, 2)
	for _, k := range []NewAPIKey{cached, dropped} {
		if got := lastUsed(t, conn, k.ID); !got.Equal(want) {
			t.Errorf("%s: last_used_at = %v after the retry, want %v", k.ID, got, want)
		}
	}
}

func TestPGUsageFlushDoesNotSlowRequests(t *testing.T) {
	dsn := migratedDB(t)
	conn := connect(t, dsn)
	k := seedKey(t, conn, seedOrg(t, conn, "basic").ID, 0)
	queries := &queryCounter{lastUseDelay: time.Second} // a slow UPDATE
	b := testStore(t, dsn, testSettings(), options{noBackground: true, tracer: queries})
	h := HashKey(k.Key)
	use(t, b, h)

	done := make(chan error, 1)
	go func() {
		_, err := b.flushLastUse(context.Background())
		done <- err
	}()
	waitFor(t, time.Second, "the flush to start writing", func() bool { return queries.lastUses.Load() == 1 })
	start := time.Now()
	for range 1000 {
		use(t, b, h)
	}
	if d := time.Since(start); d > queries.lastUseDelay/4 {
		t.Errorf("1000 cached lookups during a slow flush took %s", d)
	}
	select {
	case err := <-done:
		t.Fatalf("the flush ended before the lookups: %v", err)
	default:
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

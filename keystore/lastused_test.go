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
func flush(t *testing.T, s *Store, want int) {
	t.Helper()
	n, err := s.flushLastUse(context.Background())
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	if n != want {
		t.Errorf("flush wrote %d keys, want %d", n, want)
	}
}

// use looks a key up and fails the test unless it is accepted.
func use(t *testing.T, s *Store, h KeyHash) {
	t.Helper()
	if _, err := s.Lookup(context.Background(), h); err != nil {
		t.Fatal(err)
	}
}

func TestLastUseFlushRecordsTheLastUse(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	k, unused := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0)
	clock := testenv.NewClock(time.Now())
	queries := new(queryCounter)
	s := testStore(t, dsn, testSettings(), options{noBackground: true, now: clock.Now, tracer: queries})
	h := HashKey(k.Key)

	use(t, s, h) // a miss
	clock.Advance(5 * time.Second)
	use(t, s, h) // a hit
	want := clock.Now().Truncate(time.Second)
	flush(t, s, 1)
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
	flush(t, s, 0)
	use(t, s, h)
	flush(t, s, 0)
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
	use(t, s, h)
	flush(t, s, 1)
	if got := lastUsed(t, conn, k.ID); !got.Equal(want.Add(time.Hour)) {
		t.Errorf("last_used_at = %v after an older flush, want the later %v kept", got, want.Add(time.Hour))
	}
	// …and once this gateway's use is the latest, it is written.
	clock.Advance(2 * time.Hour)
	use(t, s, h)
	flush(t, s, 1)
	if got, want := lastUsed(t, conn, k.ID), clock.Now().Truncate(time.Second); !got.Equal(want) {
		t.Errorf("last_used_at = %v, want %v", got, want)
	}
}

func TestLastUseFlushWritesInBatches(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
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
	set := testSettings()
	set.CacheSize = 2 * n
	s := testStore(t, dsn, set, options{noBackground: true, now: clock.Now, tracer: queries})
	if err := s.warm(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hashes {
		use(t, s, h)
	}
	if q := queries.n.Load(); q != 0 {
		t.Fatalf("%d lookups after the warm start, want 0", q)
	}
	flush(t, s, n)
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

func TestLastUseFlushDoesNotInvalidateTheCache(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	org := newTestOrg(t, conn, "basic")
	k, sentinel := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0)
	queries := new(queryCounter)
	set := testSettings()
	set.CacheTTL = 24 * time.Hour
	s := testStore(t, dsn, set, options{tracer: queries})
	testenv.WaitFor(t, 5*time.Second, "the LISTEN connection", s.state.listening.Load)
	h := HashKey(k.Key)
	use(t, s, h)
	use(t, s, HashKey(sentinel.Key))
	before, _ := s.keys.get(h)

	flush(t, s, 2)
	if lastUsed(t, conn, k.ID).IsZero() {
		t.Fatal("the flush did not record the use")
	}
	// Notifications arrive in commit order: once the sentinel's revocation
	// has been applied, any notification the flush caused has been too.
	if _, err := NewAdmin(conn).RevokeKey(ctx, sentinel.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the sentinel's revocation", func() bool {
		_, err := s.Lookup(ctx, HashKey(sentinel.Key))
		return errors.Is(err, ErrRevokedKey)
	})
	after, ok := s.keys.get(h)
	if !ok || after.rec != before.rec {
		t.Fatal("the flush invalidated the used key's cache entry")
	}
	q := queries.n.Load()
	use(t, s, h)
	if n := queries.n.Load() - q; n != 0 {
		t.Errorf("a cached key made %d queries after a flush, want 0", n)
	}
}

func TestLastUseSurvivesReplacedEntries(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	org := newTestOrg(t, conn, "basic")
	unchanged, changed, notified := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0)
	clock := testenv.NewClock(time.Now())
	queries := new(queryCounter)
	s := testStore(t, dsn, testSettings(), options{noBackground: true, now: clock.Now, tracer: queries})
	for _, k := range []NewAPIKey{unchanged, changed, notified} {
		use(t, s, HashKey(k.Key))
	}
	want := clock.Now().Truncate(time.Second)
	clock.Advance(time.Minute)

	// The refresh replaces every entry: one with the same identity, one
	// whose plan changed. A notification drops the third.
	if _, err := conn.Exec(ctx, `UPDATE api_keys SET plan_tier = 'premium' WHERE id = $1`, changed.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.revalidate(); err != nil {
		t.Fatal(err)
	}
	if e, ok := s.keys.get(HashKey(changed.Key)); !ok || e.rec.Plan != "premium" {
		t.Fatalf("changed key after the refresh: cached %v, %+v; want plan premium", ok, e.rec)
	}
	s.invalidate(HashKey(notified.Key))

	flush(t, s, 3)
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
	flush(t, s, 0) // what was carried over is not written twice
}

func TestLastUseFlushFailureKeepsTheMarks(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	cached, dropped := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0)
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	clock := testenv.NewClock(time.Now())
	s := testStore(t, viaProxy, testSettings(), options{noBackground: true, now: clock.Now})
	use(t, s, HashKey(cached.Key))
	use(t, s, HashKey(dropped.Key))
	s.invalidate(HashKey(dropped.Key)) // its use waits outside the cache
	want := clock.Now().Truncate(time.Second)

	proxy.Cut()
	if n, err := s.flushLastUse(context.Background()); err == nil {
		t.Fatalf("flush with Postgres down wrote %d keys and no error", n)
	}
	use(t, s, HashKey(cached.Key)) // cached keys are served meanwhile
	proxy.Restore()
	flush(t, s, 2)
	for _, k := range []NewAPIKey{cached, dropped} {
		if got := lastUsed(t, conn, k.ID); !got.Equal(want) {
			t.Errorf("%s: last_used_at = %v after the retry, want %v", k.ID, got, want)
		}
	}
}

func TestLastUseFlushDoesNotBlockRequests(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	release := make(chan struct{})
	queries := &queryCounter{onQuery: func(d pgx.TraceQueryStartData) {
		if d.SQL == sqlRecordLastUse {
			<-release // the UPDATE hangs until the lookups are done
		}
	}}
	s := testStore(t, dsn, testSettings(), options{noBackground: true, tracer: queries})
	h := HashKey(k.Key)
	use(t, s, h)

	done := make(chan error, 1)
	go func() {
		_, err := s.flushLastUse(context.Background())
		done <- err
	}()
	testenv.WaitFor(t, 5*time.Second, "the flush to start writing", func() bool { return queries.lastUses.Load() == 1 })
	for range 1000 {
		use(t, s, h) // would deadlock if a lookup waited for the flush
	}
	select {
	case err := <-done:
		t.Fatalf("the flush ended before the lookups: %v", err)
	default:
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

package keystore

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

func TestLookupReturnsTheKeysIdentity(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	perMin, burst := int64(42), int64(0)
	org, err := NewAdmin(conn).CreateOrg(ctx, OrgInput{Name: "acme", Plan: "premium", Limits: Limits{PerMinute: &perMin, Burst: &burst}})
	if err != nil {
		t.Fatal(err)
	}
	plain := newTestKey(t, conn, org.ID, 0)
	enterprise := "enterprise"
	override, err := NewAdmin(conn).CreateKey(ctx, KeyInput{OrgID: org.ID, Name: "override", Plan: &enterprise})
	if err != nil {
		t.Fatal(err)
	}
	s := testStore(t, dsn, testSettings(), options{noBackground: true})

	id, err := s.Lookup(ctx, HashKey(plain.Key))
	if err != nil {
		t.Fatal(err)
	}
	want := tenant.LimitOverrides{PerMinute: 42, Burst: 0, BurstSet: true}
	if id.OrgID != org.ID || id.Plan != "premium" || id.KeyID != plain.ID || id.Limits != want {
		t.Errorf("identity = %+v, want org %s plan premium key %s limits %+v", id, org.ID, plain.ID, want)
	}
	id, err = s.Lookup(ctx, HashKey(override.Key))
	if err != nil || id.Plan != "enterprise" {
		t.Errorf("key with plan override: identity %+v, err %v; want plan enterprise", id, err)
	}
}

func TestCacheHitMakesNoQuery(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	queries := new(queryCounter)
	s := testStore(t, dsn, testSettings(), options{noBackground: true, tracer: queries})

	h := HashKey(k.Key)
	if _, err := s.Lookup(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if n := queries.n.Load(); n != 1 {
		t.Fatalf("first lookup made %d queries, want 1", n)
	}
	for range 100 {
		if _, err := s.Lookup(context.Background(), h); err != nil {
			t.Fatal(err)
		}
	}
	if n := queries.n.Load(); n != 1 {
		t.Errorf("100 cached lookups made %d more queries, want 0", n-1)
	}
}

func TestConcurrentMissesMakeOneQuery(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	// The query is slowed down so that every goroutine misses while it runs.
	queries := &queryCounter{delay: 100 * time.Millisecond}
	s := testStore(t, dsn, testSettings(), options{noBackground: true, tracer: queries})

	const n = 50
	h := HashKey(k.Key)
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			<-start
			_, err := s.Lookup(context.Background(), h)
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := queries.n.Load(); got != 1 {
		t.Errorf("%d concurrent misses made %d queries, want 1", n, got)
	}
}

func TestRandomKeyFloodStaysWithinTheNegativeBound(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	queries := new(queryCounter)
	set := testSettings()
	// 16 refusals per shard: the last 10 are never the earliest-expiring
	// among the entries sampled for eviction.
	set.NegativeCacheSize = 1024
	s := testStore(t, dsn, set, options{noBackground: true, tracer: queries})

	const flood = 4000
	var last []KeyHash
	for i := range flood {
		h := HashKey(randomKey(t))
		if _, err := s.Lookup(context.Background(), h); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("random key %d: err = %v, want ErrUnknownKey", i, err)
		}
		if i >= flood-10 {
			last = append(last, h)
		}
	}
	if n, bound := s.rejects.len(), s.rejects.capacity(); n > bound || bound > set.NegativeCacheSize+cacheShards {
		t.Errorf("after %d random keys the negative cache holds %d entries; bound %d (configured %d)", flood, n, bound, set.NegativeCacheSize)
	}
	if s.keys.len() != 0 {
		t.Errorf("unknown keys entered the positive cache: %d entries", s.keys.len())
	}
	// The latest refusals are remembered: repeating them costs no query.
	before := queries.n.Load()
	for _, h := range last {
		if _, err := s.Lookup(context.Background(), h); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("repeated random key: err = %v", err)
		}
	}
	if got := queries.n.Load() - before; got != 0 {
		t.Errorf("repeating the last %d refused keys made %d queries, want 0", len(last), got)
	}
}

func TestTTLsFollowTheInjectedClock(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	clock := testenv.NewClock(time.Now())
	queries := new(queryCounter)
	set := testSettings()
	set.CacheTTL, set.NegativeCacheTTL = time.Minute, 30*time.Second
	s := testStore(t, dsn, set, options{noBackground: true, tracer: queries, now: clock.Now})
	ctx := context.Background()
	known, unknown := HashKey(k.Key), HashKey(randomKey(t))

	step := func(what string, advance time.Duration, wantQueries int64) {
		t.Helper()
		clock.Advance(advance)
		before := queries.n.Load()
		if _, err := s.Lookup(ctx, known); err != nil {
			t.Fatalf("%s: known key: %v", what, err)
		}
		if _, err := s.Lookup(ctx, unknown); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("%s: unknown key: %v", what, err)
		}
		if got := queries.n.Load() - before; got != wantQueries {
			t.Errorf("%s: %d queries, want %d", what, got, wantQueries)
		}
	}
	step("cold", 0, 2)
	step("both cached", 29*time.Second, 0)
	step("negative entry expired", 2*time.Second, 1)   // t=31s
	step("both cached again", 28*time.Second, 0)       // t=59s
	step("positive entry expired", 2*time.Second, 1+1) // t=61s; negative (from 31s) expired too
}

func TestCachedKeyExpiresOnTime(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, time.Hour)
	clock := testenv.NewClock(time.Now())
	queries := new(queryCounter)
	set := testSettings()
	set.CacheTTL = 24 * time.Hour
	s := testStore(t, dsn, set, options{noBackground: true, tracer: queries, now: clock.Now})
	h := HashKey(k.Key)
	if _, err := s.Lookup(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Minute)
	if _, err := s.Lookup(context.Background(), h); err != nil {
		t.Fatalf("59 minutes in: %v", err)
	}
	clock.Advance(2 * time.Minute)
	if _, err := s.Lookup(context.Background(), h); !errors.Is(err, ErrExpiredKey) {
		t.Fatalf("61 minutes in: err = %v, want ErrExpiredKey", err)
	}
	if n := queries.n.Load(); n != 1 {
		t.Errorf("%d queries, want 1: expiry of a cached key needs no query", n)
	}
}

func TestRefusalsAreSpecific(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	org := newTestOrg(t, conn, "basic")
	revoked := newTestKey(t, conn, org.ID, 0)
	if _, err := NewAdmin(conn).RevokeKey(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	expired := newTestKey(t, conn, org.ID, 0)
	if _, err := conn.Exec(ctx, `UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, expired.ID); err != nil {
		t.Fatal(err)
	}
	other := newTestOrg(t, conn, "premium")
	disabled := newTestKey(t, conn, other.ID, 0)
	if _, err := NewAdmin(conn).DisableOrg(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	s := testStore(t, dsn, testSettings(), options{noBackground: true})
	for _, c := range []struct {
		name string
		key  string
		want error
	}{
		{"revoked", revoked.Key, ErrRevokedKey},
		{"expired", expired.Key, ErrExpiredKey},
		{"disabled org", disabled.Key, ErrDisabledOrg},
		{"unknown", randomKey(t), ErrUnknownKey},
	} {
		for _, round := range []string{"from Postgres", "from the negative cache"} {
			if _, err := s.Lookup(ctx, HashKey(c.key)); !errors.Is(err, c.want) {
				t.Errorf("%s key %s: err = %v, want %v", c.name, round, err, c.want)
			}
		}
	}
}

func TestOutageServesCachedKeysAndAnswersMissesUnavailable(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	used := newTestKey(t, conn, org.ID, 0)
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	clock := testenv.NewClock(time.Now())
	s := testStore(t, viaProxy, testSettings(), options{noBackground: true, now: clock.Now})
	ctx := context.Background()
	if _, err := s.Lookup(ctx, HashKey(used.Key)); err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	clock.Advance(defaultCacheTTL + time.Minute) // the cached copy is stale now
	if id, err := s.Lookup(ctx, HashKey(used.Key)); err != nil || id.KeyID != used.ID {
		t.Errorf("cached key during the outage: %v, %v; want it served (stale-if-error)", id, err)
	}
	newKey := newTestKey(t, conn, org.ID, 0) // created directly, not through the proxy
	_, err := s.Lookup(ctx, HashKey(newKey.Key))
	if !errors.Is(err, ErrStoreUnavailable) || IsRejection(err) {
		t.Errorf("uncached key during the outage: err = %v, want ErrStoreUnavailable (503), not a refusal", err)
	}
	if r := s.health(false); r.Status != tenant.StatusDegraded {
		t.Errorf("health during the outage with cached keys = %+v, want degraded", r)
	}

	proxy.Restore()
	clock.Advance(2 * retryPause)
	if id, err := s.Lookup(ctx, HashKey(newKey.Key)); err != nil || id.KeyID != newKey.ID {
		t.Errorf("new key after recovery: %v, %v; want it accepted", id, err)
	}
}

func TestStartsWithPostgresDown(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	proxy.Cut()
	s := testStore(t, viaProxy, testSettings(), options{})
	ctx := context.Background()
	testenv.WaitFor(t, 5*time.Second, "the store to notice that Postgres is down", func() bool {
		return s.health(false).Status == tenant.StatusDown
	})
	if _, err := s.Lookup(ctx, HashKey(k.Key)); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("lookup with Postgres down: err = %v, want ErrStoreUnavailable", err)
	}
	proxy.Restore()
	testenv.WaitFor(t, 10*time.Second, "the store to reconnect", func() bool {
		return s.health(false).Status == tenant.StatusOK
	})
	if _, err := s.Lookup(ctx, HashKey(k.Key)); err != nil {
		t.Fatalf("lookup after Postgres came up: %v", err)
	}
}

func TestWarmStartLoadsActiveKeys(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	active := []NewAPIKey{newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, time.Hour)}
	revoked := newTestKey(t, conn, org.ID, 0)
	if _, err := NewAdmin(conn).RevokeKey(context.Background(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	queries := new(queryCounter)
	s := testStore(t, dsn, testSettings(), options{tracer: queries})
	testenv.WaitFor(t, 5*time.Second, "the warm start", func() bool { return s.keys.len() == len(active) })
	for _, k := range active {
		if _, err := s.Lookup(context.Background(), HashKey(k.Key)); err != nil {
			t.Fatal(err)
		}
	}
	if n := queries.n.Load(); n != 0 {
		t.Errorf("lookups of active keys after warm start made %d queries, want 0", n)
	}
	if _, err := s.Lookup(context.Background(), HashKey(revoked.Key)); !errors.Is(err, ErrRevokedKey) {
		t.Errorf("revoked key: %v", err)
	}
}

func TestNotificationsInvalidateAtOnce(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	org := newTestOrg(t, conn, "basic")
	k1, k2 := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0)
	set := testSettings()
	set.CacheTTL = 24 * time.Hour
	s := testStore(t, dsn, set, options{})
	testenv.WaitFor(t, 5*time.Second, "the LISTEN connection", s.state.listening.Load)
	for _, k := range []NewAPIKey{k1, k2} {
		if _, err := s.Lookup(ctx, HashKey(k.Key)); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := NewAdmin(conn).RevokeKey(ctx, k1.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Second, "the revoked key to be refused", func() bool {
		_, err := s.Lookup(ctx, HashKey(k1.Key))
		return errors.Is(err, ErrRevokedKey)
	})
	if _, err := conn.Exec(ctx, `UPDATE organizations SET plan_tier = 'enterprise' WHERE id = $1`, org.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Second, "the organization's new plan", func() bool {
		id, err := s.Lookup(ctx, HashKey(k2.Key))
		return err == nil && id.Plan == "enterprise"
	})
	if _, err := NewAdmin(conn).DisableOrg(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Second, "the disabled organization's key to be refused", func() bool {
		_, err := s.Lookup(ctx, HashKey(k2.Key))
		return errors.Is(err, ErrDisabledOrg)
	})
}

func TestResyncsAfterTheListenConnectionDies(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	set := testSettings()
	set.CacheTTL = 24 * time.Hour
	s := testStore(t, viaProxy, set, options{})
	testenv.WaitFor(t, 5*time.Second, "the LISTEN connection", s.state.listening.Load)
	if _, err := s.Lookup(ctx, HashKey(k.Key)); err != nil {
		t.Fatal(err)
	}

	proxy.Cut() // kills the LISTEN connection: the revocation's notification is lost
	testenv.WaitFor(t, 5*time.Second, "the store to notice", func() bool { return !s.state.listening.Load() })
	if _, err := NewAdmin(conn).RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, HashKey(k.Key)); err != nil {
		t.Fatalf("cached key while Postgres is cut off: %v (want it still served)", err)
	}
	proxy.Restore()
	testenv.WaitFor(t, 10*time.Second, "the resync to refuse the revoked key", func() bool {
		_, err := s.Lookup(ctx, HashKey(k.Key))
		return errors.Is(err, ErrRevokedKey)
	})
}

func TestRefreshRereadsCachedKeys(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	org := newTestOrg(t, conn, "basic")
	kept, revoked, deleted := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0)
	queries := new(queryCounter)
	s := testStore(t, dsn, testSettings(), options{noBackground: true, tracer: queries})
	for _, k := range []NewAPIKey{kept, revoked, deleted} {
		if _, err := s.Lookup(ctx, HashKey(k.Key)); err != nil {
			t.Fatal(err)
		}
	}
	// No listener runs here: only the refresh can notice these.
	if _, err := NewAdmin(conn).RevokeKey(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM api_keys WHERE id = $1`, deleted.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.revalidate(); err != nil {
		t.Fatal(err)
	}
	before := queries.n.Load()
	if _, err := s.Lookup(ctx, HashKey(kept.Key)); err != nil {
		t.Errorf("kept key: %v", err)
	}
	if _, err := s.Lookup(ctx, HashKey(revoked.Key)); !errors.Is(err, ErrRevokedKey) {
		t.Errorf("revoked key after refresh: %v", err)
	}
	if _, err := s.Lookup(ctx, HashKey(deleted.Key)); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("deleted key after refresh: %v", err)
	}
	if n := queries.n.Load() - before; n != 0 {
		t.Errorf("lookups after the refresh made %d single-key queries, want 0", n)
	}
}

func TestNotificationOvertakingAQueryIsNotLost(t *testing.T) {
	s := testStore(t, "postgres://127.0.0.1:1/none", testSettings(), options{noBackground: true})
	var h KeyHash
	_, _ = rand.Read(h[:])
	gen := s.gen(h)
	s.invalidate(h) // arrives while the (simulated) query runs
	v := verdict{entry: keyEntry{rec: &cachedKey{Identity: *tenant.NewIdentity("o", "basic", "k", tenant.LimitOverrides{})}}}
	s.remember(h, v, gen, time.Now())
	if _, ok := s.keys.get(h); ok {
		t.Error("a query result older than an invalidation was cached")
	}
}

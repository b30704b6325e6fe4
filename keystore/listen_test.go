package keystore

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

// TestSlowWarmStartDoesNotHoldUpRevocations holds the warm start's reads
// far longer than several query timeouts: LISTEN is up meanwhile, a
// revocation applies at once, PostgreSQL is not marked failing, and the
// warm start completes when its reads are let go.
func TestSlowWarmStartDoesNotHoldUpRevocations(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	org := newTestOrg(t, conn, "basic")
	k := newTestKey(t, conn, org.ID, 0)
	for range 10 {
		newTestKey(t, conn, org.ID, 0)
	}
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	queries := &queryCounter{onQuery: func(d pgx.TraceQueryStartData) {
		if d.SQL == sqlFilterKeys || d.SQL == sqlActiveKeys {
			<-release // a huge key table, or a slow network
		}
	}}
	set := testSettings()
	set.CacheTTL = 24 * time.Hour
	const timeout = 100 * time.Millisecond
	s := testStore(t, dsn, set, options{tracer: queries, queryTimeout: timeout})
	testenv.WaitFor(t, 5*time.Second, "the LISTEN connection", s.state.listening.Load)
	if _, err := s.Lookup(ctx, HashKey(k.Key)); err != nil {
		t.Fatal(err)
	}

	if _, err := NewAdmin(conn).RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the revocation during the warm start", func() bool {
		_, err := s.Lookup(ctx, HashKey(k.Key))
		return errors.Is(err, ErrRevokedKey)
	})
	time.Sleep(10 * timeout) // the warm start is held past any multiple of the query timeout
	if s.filter.Load() != nil || s.warmed.Load() {
		t.Fatal("the warm start finished while its reads were held")
	}
	if r := s.health(false); r.Status != tenant.StatusOK || s.state.failing.Load() {
		t.Errorf("health during a slow warm start = %+v, want ok", r)
	}

	close(release)
	testenv.WaitFor(t, 5*time.Second, "the warm start to complete", func() bool { return s.warmed.Load() && s.filter.Load() != nil })
	if n := s.keys.len(); n != 10 {
		t.Errorf("%d keys cached after the warm start, want the 10 active ones", n)
	}
}

// TestRevocationRightAfterAnOutage cuts PostgreSQL long enough for the
// LISTEN reconnection backoff to reach its cap, restores it, revokes a
// cached key 50 ms later, and requires the store to refuse it within a
// second (a correctness bound, polled).
func TestRevocationRightAfterAnOutage(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	set := testSettings()
	set.CacheTTL = 24 * time.Hour
	s := testStore(t, viaProxy, set, options{})
	testenv.WaitFor(t, 5*time.Second, "the warm start", s.warmed.Load)
	if _, err := s.Lookup(ctx, HashKey(k.Key)); err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	testenv.WaitFor(t, 5*time.Second, "the store to notice the outage", func() bool { return !s.state.listening.Load() })
	time.Sleep(3 * time.Second) // several failed reconnections: the backoff is at its cap
	proxy.Restore()
	time.Sleep(50 * time.Millisecond)
	if _, err := NewAdmin(conn).RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	testenv.WaitFor(t, time.Second, "the revoked key to be refused", func() bool {
		_, err := s.Lookup(ctx, HashKey(k.Key))
		return errors.Is(err, ErrRevokedKey)
	})
	t.Logf("refused %s after the revocation", time.Since(revoked).Round(time.Millisecond))
}

// TestSuccessfulQueryWakesTheListener gives the LISTEN connection an hour
// of backoff: once PostgreSQL is back, only the wake-up by a successful
// lookup can reconnect it.
func TestSuccessfulQueryWakesTheListener(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	clock := testenv.NewClock(time.Now())
	s := testStore(t, viaProxy, testSettings(), options{now: clock.Now, listenMinBackoff: time.Hour, listenMaxBackoff: time.Hour})
	testenv.WaitFor(t, 5*time.Second, "the LISTEN connection", s.state.listening.Load)

	proxy.Cut()
	testenv.WaitFor(t, 5*time.Second, "the store to notice the outage", func() bool { return !s.state.listening.Load() })
	proxy.Restore()
	clock.Advance(2 * retryPause) // misses may try PostgreSQL again
	k := newTestKey(t, conn, org.ID, 0)
	if _, err := s.Lookup(context.Background(), HashKey(k.Key)); err != nil {
		t.Fatalf("lookup once PostgreSQL is back: %v", err)
	}
	testenv.WaitFor(t, 5*time.Second, "the LISTEN connection to be back", s.state.listening.Load)
}

// TestDeadPooledConnectionIsNotAnOutage: a network blip kills the pool's
// idle connection; the next miss meets it, and must still be answered from
// PostgreSQL rather than fail with 503 and pause every other miss.
func TestDeadPooledConnectionIsNotAnOutage(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	s := testStore(t, viaProxy, testSettings(), options{noBackground: true, noIdlePing: true})
	ctx := context.Background()
	first, second := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0)
	if _, err := s.Lookup(ctx, HashKey(first.Key)); err != nil {
		t.Fatal(err) // leaves one idle connection in the pool
	}
	proxy.DropConnections()
	if _, err := s.Lookup(ctx, HashKey(second.Key)); err != nil {
		t.Fatalf("first miss after the pooled connection died: %v", err)
	}
	if s.state.failing.Load() {
		t.Error("a dead pooled connection was reported as a PostgreSQL outage")
	}
}

// TestQueryTimeoutWhileListeningIsNotAnOutage: a lookup that runs out of
// time while the LISTEN connection is up (a slow server, or a gateway
// starved of CPU by a flood) fails alone: PostgreSQL is not reported down
// and the next miss is not paused.
func TestQueryTimeoutWhileListeningIsNotAnOutage(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	var slow atomic.Pointer[KeyHash]
	queries := &queryCounter{onQuery: func(d pgx.TraceQueryStartData) {
		if h := slow.Load(); h != nil && d.SQL == sqlKeyByHash && bytes.Equal(d.Args[0].([]byte), h[:]) {
			time.Sleep(500 * time.Millisecond)
		}
	}}
	s := testStore(t, dsn, testSettings(), options{tracer: queries, queryTimeout: 200 * time.Millisecond})
	testenv.WaitFor(t, 5*time.Second, "the warm start", s.warmed.Load)
	slowKey, fastKey := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, 0) // not cached
	h := HashKey(slowKey.Key)
	slow.Store(&h)

	_, err := s.Lookup(context.Background(), h)
	if !errors.Is(err, ErrStoreUnavailable) || IsRejection(err) {
		t.Fatalf("lookup past its deadline: %v, want ErrStoreUnavailable (503)", err)
	}
	if s.state.failing.Load() || s.state.pausing(s.now().UnixNano()) {
		t.Error("one slow query marked PostgreSQL as failing")
	}
	if id, err := s.Lookup(context.Background(), HashKey(fastKey.Key)); err != nil || id.KeyID != fastKey.ID {
		t.Errorf("the next miss: %v, %v; want it looked up, not paused", id, err)
	}
	if r := s.health(false); r.Status != tenant.StatusOK {
		t.Errorf("health after a slow query = %+v, want ok", r)
	}
}

// TestHungPostgresIsReported: PostgreSQL stops answering but keeps its
// connections open. The lookup's timeout has the LISTEN connection check
// PostgreSQL, which fails, and the reconnection reports the outage.
func TestHungPostgresIsReported(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	s := testStore(t, viaProxy+"&connect_timeout=1", testSettings(), options{queryTimeout: 200 * time.Millisecond})
	testenv.WaitFor(t, 5*time.Second, "the warm start", s.warmed.Load)

	proxy.SetDelay(time.Hour) // nothing comes back
	if _, err := s.Lookup(context.Background(), HashKey(randomKey(t))); !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("lookup on a hung server: %v, want ErrStoreUnavailable", err)
	}
	testenv.WaitFor(t, 10*time.Second, "the hang to be reported", func() bool {
		return s.state.failing.Load() && s.health(false).Status == tenant.StatusDown
	})
	_ = proxy.Close() // else closing the store's connections waits for the hung server
}

package keystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

func randomHash() KeyHash {
	var h KeyHash
	_, _ = rand.Read(h[:])
	return h
}

func TestFilterHasNoFalseNegativesAndFewFalsePositives(t *testing.T) {
	const n = 100_000
	f := newKeyFilter(n)
	added := make([]KeyHash, n)
	for i := range added {
		added[i] = randomHash()
		if f.add(added[i]) {
			t.Fatalf("filter sized for %d keys says it is overfull after %d", n, i+1)
		}
	}
	for _, h := range added {
		if !f.mayContain(h) {
			t.Fatal("a key added to the filter is not in it")
		}
	}
	positives := 0
	for range n {
		if f.mayContain(randomHash()) {
			positives++
		}
	}
	// Sized with headroom, the filter holding n keys is below its 1 % target.
	if rate := float64(positives) / n; rate > 1.5*filterFalsePositiveRate {
		t.Errorf("false-positive rate %.4f, want at most %.4f", rate, 1.5*filterFalsePositiveRate)
	}
	// A new key that is a false positive is not counted: about 1 % fewer.
	if keys, bytes := f.size(); keys < n*98/100 || keys > n || bytes > 2*n {
		t.Errorf("filter of %d keys: counts %d keys, %d bytes; want about %d, under 2 bytes per key", n, keys, bytes, n)
	}
}

func TestFiltersAreSaltedApart(t *testing.T) {
	// The same false positive on two filters would let a forger who found
	// one on a gateway flood every gateway's normal lane with it.
	a, b := newKeyFilter(1000), newKeyFilter(1000)
	for range 1000 {
		h := randomHash()
		a.add(h)
		b.add(h)
	}
	shared, positives := 0, 0
	for range 100_000 {
		h := randomHash()
		if a.mayContain(h) {
			positives++
			if b.mayContain(h) {
				shared++
			}
		}
	}
	if positives == 0 || shared > positives/4 {
		t.Errorf("%d of %d false positives of one filter are false positives of another, want few", shared, positives)
	}
}

func TestOverfullFilterAsksForARebuild(t *testing.T) {
	s := testStore(t, "postgres://127.0.0.1:1/none", testSettings(), options{noBackground: true})
	f := newKeyFilter(0)
	s.filter.Store(f)
	for i := uint(0); i < f.capacity; i++ {
		s.addToFilter(randomHash())
	}
	select {
	case <-s.rebuild:
		t.Fatal("rebuild asked for before the filter was full")
	default:
	}
	for range f.capacity / 10 { // some of those were false positives, not counted
		s.addToFilter(randomHash())
	}
	select {
	case <-s.rebuild:
	default:
		t.Fatal("no rebuild asked for once the filter holds more keys than it was sized for")
	}
}

func TestFilterHoldsEveryKeyThatIsNotRevoked(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	ctx := context.Background()
	admin := NewAdmin(conn)
	org, other := newTestOrg(t, conn, "basic"), newTestOrg(t, conn, "premium")
	active, expiring := newTestKey(t, conn, org.ID, 0), newTestKey(t, conn, org.ID, time.Hour)
	expired := newTestKey(t, conn, org.ID, 0)
	if _, err := conn.Exec(ctx, `UPDATE api_keys SET expires_at = now() - interval '1 hour' WHERE id = $1`, expired.ID); err != nil {
		t.Fatal(err)
	}
	ofDisabled := newTestKey(t, conn, other.ID, 0) // may work again with EnableOrg
	if _, err := admin.DisableOrg(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	s := testStore(t, dsn, testSettings(), options{noBackground: true})
	if err := s.buildFilter(); err != nil {
		t.Fatal(err)
	}
	f := s.filter.Load()
	for _, k := range []NewAPIKey{active, expiring, expired, ofDisabled} {
		if !f.mayContain(HashKey(k.Key)) {
			t.Errorf("key %s (%s) is not in the filter", k.ID, k.Name)
		}
	}
	if keys, _ := f.size(); keys != 4 {
		t.Errorf("filter built from 4 unrevoked keys holds %d", keys)
	}
}

func TestKeyUnknownToTheFilterIsStillAccepted(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	s := testStore(t, dsn, testSettings(), options{noBackground: true})
	if err := s.buildFilter(); err != nil {
		t.Fatal(err)
	}
	// Created after the filter, and no LISTEN connection to announce it:
	// it goes through the unverified lane, and then joins the filter.
	k := newTestKey(t, conn, org.ID, 0)
	if id, err := s.Lookup(context.Background(), HashKey(k.Key)); err != nil || id.KeyID != k.ID {
		t.Fatalf("key created after the filter: %v, %v", id, err)
	}
	if !s.filter.Load().mayContain(HashKey(k.Key)) {
		t.Error("a key found in PostgreSQL was not added to the filter")
	}
}

func TestNewKeyJoinsTheFilterByNotification(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	s := testStore(t, dsn, testSettings(), options{})
	testenv.WaitFor(t, 10*time.Second, "the key filter", func() bool { return s.filter.Load() != nil })
	k := newTestKey(t, conn, org.ID, 0)
	testenv.WaitFor(t, 5*time.Second, "the new key's notification to reach the filter", func() bool {
		return s.filter.Load().mayContain(HashKey(k.Key))
	})
}

// holdForged is a tracer hook that holds the lookups of every key but
// real until release is closed.
func holdForged(real KeyHash, release <-chan struct{}) func(pgx.TraceQueryStartData) {
	return func(d pgx.TraceQueryStartData) {
		if d.SQL != sqlKeyByHash || len(d.Args) != 1 {
			return
		}
		if arg, _ := d.Args[0].([]byte); !bytes.Equal(arg, real[:]) {
			<-release
		}
	}
}

func TestUnverifiedLaneOverflowFailsFastWithoutMarkingPostgresDown(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	real := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	queries := &queryCounter{onQuery: holdForged(HashKey(real.Key), release)}
	s := testStore(t, dsn, testSettings(), options{noBackground: true, tracer: queries})
	if err := s.buildFilter(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Fill the unverified lane: its slots run (held), its queue waits.
	room := cap(s.unverified.slots) + int(s.unverified.maxWaiting)
	var wg sync.WaitGroup
	errs := make(chan error, room)
	for range room {
		wg.Go(func() {
			_, err := s.Lookup(ctx, HashKey(randomKey(t)))
			errs <- err
		})
	}
	testenv.WaitFor(t, 5*time.Second, "the unverified lane to fill", func() bool {
		return queries.inFlight.Load() == int64(cap(s.unverified.slots)) && s.unverified.waiting.Load() == s.unverified.maxWaiting
	})

	_, err := s.Lookup(ctx, HashKey(randomKey(t)))
	if !errors.Is(err, ErrBusy) || !errors.Is(err, ErrStoreUnavailable) || IsRejection(err) {
		t.Errorf("forged key beyond the lane: %v, want ErrBusy (503)", err)
	}
	if id, err := s.Lookup(ctx, HashKey(real.Key)); err != nil || id.KeyID != real.ID {
		t.Errorf("real key while the unverified lane is full: %v, %v; want it accepted", id, err)
	}
	if s.state.failing.Load() || s.state.pausing(s.now().UnixNano()) {
		t.Error("a full lane marked PostgreSQL as failing")
	}
	if r := s.health(false); r.Status == tenant.StatusDown {
		t.Errorf("health with a full lane = %+v, want not down", r)
	}

	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrUnknownKey) {
			t.Errorf("forged key that waited its turn: %v, want ErrUnknownKey", err)
		}
	}
}

func TestWaitingForAPoolConnectionIsNotAPostgresFailure(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	k := newTestKey(t, conn, newTestOrg(t, conn, "basic").ID, 0)
	s := testStore(t, dsn+"&pool_max_conns=1", testSettings(), options{noBackground: true, queryTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	busy, err := s.pool.Acquire(ctx) // the only connection
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Lookup(ctx, HashKey(k.Key))
	if !errors.Is(err, ErrBusy) || IsRejection(err) {
		t.Errorf("lookup while the pool is busy: %v, want ErrBusy (503)", err)
	}
	if s.state.failing.Load() || s.state.pausing(s.now().UnixNano()) {
		t.Error("waiting for a pool connection marked PostgreSQL as failing")
	}
	if r := s.health(false); r.Status == tenant.StatusDown {
		t.Errorf("health while the pool is busy = %+v, want not down", r)
	}
	busy.Release()
	if id, err := s.Lookup(ctx, HashKey(k.Key)); err != nil || id.KeyID != k.ID {
		t.Errorf("lookup once the connection is free: %v, %v", id, err)
	}
}

// TestForgedKeyFloodDoesNotStarveRealKeys: PostgreSQL 20 ms away, thousands
// of clients sending forged but well-formed keys as fast as they can; real
// keys never used before are accepted in the middle, health stays up, and
// PostgreSQL sees a bounded number of concurrent lookups.
func TestForgedKeyFloodDoesNotStarveRealKeys(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	conn := testenv.Connect(t, dsn)
	org := newTestOrg(t, conn, "basic")
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	proxy.SetDelay(10 * time.Millisecond) // each way
	queries := new(queryCounter)
	s := testStore(t, viaProxy, testSettings(), options{tracer: queries})
	testenv.WaitFor(t, 10*time.Second, "the warm start", s.warmed.Load)
	// Created now, the keys are not cached; their notifications put them
	// in the key filter.
	real := make([]NewAPIKey, 5)
	for i := range real {
		real[i] = newTestKey(t, conn, org.ID, 0)
	}
	testenv.WaitFor(t, 5*time.Second, "the keys' notifications", func() bool {
		return s.filter.Load().mayContain(HashKey(real[len(real)-1].Key))
	})

	const attackers = 4000
	var stop atomic.Bool
	var forged, refused, shed, other atomic.Int64
	var wg sync.WaitGroup
	for range attackers {
		wg.Go(func() {
			for !stop.Load() {
				_, err := s.Lookup(context.Background(), HashKey(randomKey(t)))
				forged.Add(1)
				switch {
				case errors.Is(err, ErrUnknownKey):
					refused.Add(1)
				case errors.Is(err, ErrBusy):
					shed.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	testenv.WaitFor(t, 10*time.Second, "the flood to reach PostgreSQL", func() bool { return refused.Load() > 10 && shed.Load() > 1000 })

	for i, k := range real {
		time.Sleep(100 * time.Millisecond) // spread over the flood
		id, err := s.Lookup(context.Background(), HashKey(k.Key))
		if err != nil || id.KeyID != k.ID {
			t.Errorf("real, never cached key %d during the flood: %v, %v; want it accepted", i, id, err)
		}
		if health := s.health(false); health.Status != tenant.StatusOK || s.state.failing.Load() {
			t.Errorf("health during the flood = %+v (failing %v), want ok", health, s.state.failing.Load())
		}
	}
	time.Sleep(100 * time.Millisecond) // the flood goes on after the real keys
	stop.Store(true)
	wg.Wait()

	bound := int64(cap(s.normal.slots) + cap(s.unverified.slots))
	if m := queries.maxInFlight.Load(); m > bound {
		t.Errorf("%d concurrent lookups reached PostgreSQL, want at most %d (the lanes)", m, bound)
	}
	if o := other.Load(); o != 0 {
		t.Errorf("%d forged keys got neither a refusal nor ErrBusy", o)
	}
	t.Logf("%d forged lookups: %d refused by PostgreSQL (%d queries), %d shed (503); at most %d lookups at once (bound %d)",
		forged.Load(), refused.Load(), queries.n.Load(), shed.Load(), queries.maxInFlight.Load(), bound)
}

// BenchmarkKeyFilter builds a filter of 1 000 000 keys and reports its size
// per key; each iteration is one lookup in it (a cache miss pays it).
func BenchmarkKeyFilter(b *testing.B) {
	const n = 1_000_000
	f := newKeyFilter(n)
	for range n {
		f.add(randomHash())
	}
	h := randomHash()
	b.ReportAllocs()
	for b.Loop() {
		f.mayContain(h)
	}
	_, size := f.size()
	b.ReportMetric(float64(size)/n, "bytes/key")
}

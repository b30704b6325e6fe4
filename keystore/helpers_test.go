package keystore

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// newTestOrg creates an organization with the admin operations.
func newTestOrg(t testing.TB, conn *pgx.Conn, plan string) Organization {
	t.Helper()
	o, err := NewAdmin(conn).CreateOrg(context.Background(), OrgInput{Name: "org " + plan, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// newTestKey creates a key for org.
func newTestKey(t testing.TB, conn *pgx.Conn, orgID string, expiresIn time.Duration) NewAPIKey {
	t.Helper()
	k, err := NewAdmin(conn).CreateKey(context.Background(), KeyInput{OrgID: orgID, Name: "test key", ExpiresIn: expiresIn})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// queryCounter is a pgx tracer that counts the store's single-key lookups
// as PostgreSQL receives them, the most that ran at once, and the
// statements recording last uses. Lookups can be slowed down (delay) or
// held until hold is closed; onQuery sees every statement first and may
// hold it too.
type queryCounter struct {
	n, inFlight, maxInFlight atomic.Int64
	delay                    time.Duration
	lastUses                 atomic.Int64
	hold                     chan struct{} // if not nil, lookups wait for it to close
	onQuery                  func(pgx.TraceQueryStartData)
}

type queryCounterKey struct{}

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	switch d.SQL {
	case sqlKeyByHash:
		c.n.Add(1)
		n := c.inFlight.Add(1)
		for {
			m := c.maxInFlight.Load()
			if n <= m || c.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		ctx = context.WithValue(ctx, queryCounterKey{}, true)
	case sqlRecordLastUse:
		c.lastUses.Add(1)
	}
	if c.onQuery != nil {
		c.onQuery(d)
	}
	switch d.SQL {
	case sqlKeyByHash:
		if c.hold != nil {
			<-c.hold
		}
		time.Sleep(c.delay)
	}
	return ctx
}

func (c *queryCounter) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if ctx.Value(queryCounterKey{}) != nil {
		c.inFlight.Add(-1)
	}
}

// testSettings are small caches with the production TTLs.
func testSettings() Settings {
	return Settings{CacheSize: 1000, NegativeCacheSize: 256}
}

// testStore builds a store on dsn, destroyed at the end of the test.
func testStore(t testing.TB, dsn string, s Settings, opts options) *Store {
	t.Helper()
	st, err := newStore(dsn, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Destruct() })
	return st
}

// randomKey is a well-formed key that is in no database: what anyone can
// mint.
func randomKey(t testing.TB) string {
	t.Helper()
	k, err := GenerateKey(false)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

package caddyauth

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// pgMigratedDB returns the URL of a fresh, migrated database for this test.
func pgMigratedDB(t testing.TB) string {
	t.Helper()
	dsn := testenv.FreshDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Migrate(context.Background(), cfg); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return dsn
}

// pgEmptyDB returns the URL of a fresh, empty database.
func pgEmptyDB(t testing.TB) string {
	t.Helper()
	return testenv.FreshDatabase(t)
}

// pgConnect opens a connection closed at the end of the test.
func pgConnect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgSeedOrg creates an organization with the admin code the CLI uses.
func pgSeedOrg(t testing.TB, conn *pgx.Conn, plan string) Organization {
	t.Helper()
	o, err := createOrg(context.Background(), conn, orgInput{Name: "org " + plan, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// pgSeedKey creates a key for org.
func pgSeedKey(t testing.TB, conn *pgx.Conn, orgID string, expiresIn time.Duration) NewAPIKey {
	t.Helper()
	k, err := createKey(context.Background(), conn, keyInput{OrgID: orgID, Name: "test key", ExpiresIn: expiresIn})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyQueryCounter is a pgx tracer that counts the gateway's single-key
// lookups as Postgres receives them, and can slow them down. It also
// counts the statements that record key usage, and can slow them down.
type keyQueryCounter struct {
	n          atomic.Int64
	delay      time.Duration
	usages     atomic.Int64
	usageDelay time.Duration
}

func (c *keyQueryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	switch d.SQL {
	case sqlKeyByHash:
		c.n.Add(1)
		time.Sleep(c.delay)
	case sqlRecordUsage:
		c.usages.Add(1)
		time.Sleep(c.usageDelay)
	}
	return ctx
}

func (c *keyQueryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// testPGSettings are small caches with the production TTLs.
func testPGSettings() pgSettings {
	return pgSettings{
		cacheTTL: DefaultCacheTTL, negativeCacheTTL: DefaultNegativeCacheTTL,
		refreshInterval: DefaultRefreshInterval, cacheSize: 1000, negativeSize: 256,
	}
}

// pgTestBackend builds a store on dsn, destroyed at the end of the test.
func pgTestBackend(t testing.TB, dsn string, s pgSettings, opts pgOptions) pgKeys {
	t.Helper()
	b, err := newPGBackend(dsn, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Destruct() })
	return pgKeys{pgBackend: b, metrics: newAuthMetricsUnregistered()}
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

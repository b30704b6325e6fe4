// Package usagetest gives the usage tests what they share: a migrated usage
// store on the real PostgreSQL (TEST_DATABASE_URL) or on TimescaleDB
// (TEST_TIMESCALE_URL), a Kafka cluster speaking the real protocol
// (franz-go's kfake) on a free loopback port, and events to feed them.
package usagetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/usagestore"
)

// FreshStore migrates a new database on TEST_DATABASE_URL and opens a
// store on it; both go away when the test ends. It returns the URL too.
func FreshStore(t testing.TB, opts usagestore.Options) (*usagestore.Store, string) {
	t.Helper()
	dsn := testenv.FreshDatabase(t)
	return openMigrated(t, dsn, opts), dsn
}

// TimescaleStore migrates the database of TEST_TIMESCALE_URL (the PGlite
// TimescaleDB build that .ci/run starts) and opens a store with one
// connection on it. PGlite is a single session shared by every connection:
// per-connection settings such as search_path do not isolate tests, so tests
// on it share the schema and keep apart by organization (UniqueOrg). Without
// TEST_TIMESCALE_URL the test skips, or fails under CI=true.
func TimescaleStore(t testing.TB, opts usagestore.Options) (*usagestore.Store, string) {
	t.Helper()
	base := os.Getenv("TEST_TIMESCALE_URL")
	if base == "" {
		testenv.Unavailable(t, "TEST_TIMESCALE_URL is not set: skipping a test that needs TimescaleDB (.ci/run starts it; see scripts/timescaledb)")
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	// One backend serves every connection in turn: named prepared
	// statements of two connections would collide, and so would two open
	// transactions. So: unnamed statements, one connection.
	q.Set("default_query_exec_mode", "describe_exec")
	u.RawQuery = q.Encode()
	opts.MaxConns = 1
	return openMigrated(t, u.String(), opts), u.String()
}

// UniqueOrg returns an organization ID no other test uses.
func UniqueOrg(prefix string) string { return testenv.UniqueName(prefix) }

func openMigrated(t testing.TB, dsn string, opts usagestore.Options) *usagestore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	testenv.Migrate(t, dsn)
	s, err := usagestore.Open(ctx, dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// NewEventID returns a UUIDv7 for time t.
func NewEventID(t time.Time) uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		panic(err)
	}
	ms := uint64(t.UnixMilli())
	for i := 0; i < 6; i++ {
		id[i] = byte(ms >> (40 - 8*i))
	}
	return id
}

// Events returns n events of org at times spread over [from, from+span),
// cycling through keys, services and outcomes, with latencies from 100 µs
// to 100 ms.
func Events(n int, org string, from time.Time, span time.Duration) []usagestore.Event {
	outcomes := []usagestore.Outcome{usagestore.OutcomeAllowed, usagestore.OutcomeAllowed, usagestore.OutcomeAllowed,
		usagestore.OutcomeRateLimitedMinute, usagestore.OutcomeRateLimitedDay, usagestore.OutcomeBackendError, usagestore.OutcomeGatewayError}
	statuses := map[usagestore.Outcome]int{usagestore.OutcomeAllowed: 200, usagestore.OutcomeRateLimitedMinute: 429,
		usagestore.OutcomeRateLimitedDay: 429, usagestore.OutcomeBackendError: 502, usagestore.OutcomeGatewayError: 500}
	evs := make([]usagestore.Event, n)
	for i := range evs {
		at := from
		if span > 0 {
			at = from.Add(time.Duration(int64(span) * int64(i) / int64(n)))
		}
		oc := outcomes[i%len(outcomes)]
		evs[i] = usagestore.Event{
			ID: NewEventID(at), Time: at, Node: "test-node",
			OrgID: org, KeyID: fmt.Sprintf("key_%d", i%3), Plan: "premium",
			Service: []string{"api", "billing"}[i%2], Method: "GET", Status: statuses[oc], Outcome: oc,
			BytesIn: int64(i % 100), BytesOut: int64(100 + i%1000), DurationUS: 100 + rand.Int64N(100_000),
			RequestID: uuid.NewString(), RateLimitSource: "redis",
		}
	}
	return evs
}

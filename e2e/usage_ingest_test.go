package e2e

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/internal/usagetest"
)

// `caddy tenant usage ingest` is killed with SIGKILL in the middle of a
// batch — its events and rollups written, its transaction not committed —
// and restarted: the totals stay exactly N.
func TestUsageIngestKilledMidBatch(t *testing.T) {
	_, brokers := usagetest.Kafka(t, usageTopic, 2)
	dsn, store := usageDB(t)
	org := usagetest.UniqueOrg("org_ingest_")
	const n = 3000
	evs := usagetest.Events(n, org, time.Now().Add(-time.Minute), time.Minute)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.DefaultProduceTopic(usageTopic))
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]*kgo.Record, n)
	for i := range evs {
		recs[i] = &kgo.Record{Key: []byte(org), Value: evs[i].AppendCloudEvent(nil)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	// Hold the offsets table: the consumer's first batch inserts its events
	// and rollups, then waits on the offsets upsert, inside its transaction.
	blocker, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(context.Background())
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE usage_consumer_offsets IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	first := startIngest(t, brokers, dsn, "e2e-kill")
	testenv.WaitFor(t, 30*time.Second, "the consumer to wait inside its batch transaction", func() bool {
		var waiting int
		_ = store.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'tenantgate-usage-ingest' AND wait_event_type = 'Lock'`).Scan(&waiting)
		return waiting > 0
	})
	var uncommitted int
	if err := store.Pool().QueryRow(ctx, `SELECT count(*) FROM usage_events WHERE org_id = $1`, org).Scan(&uncommitted); err != nil {
		t.Fatal(err)
	}
	_ = first.kill(syscall.SIGKILL)
	_ = tx.Rollback(ctx)
	if uncommitted != 0 {
		t.Fatalf("%d events visible before the batch committed", uncommitted)
	}

	second := startIngest(t, brokers, dsn, "e2e-kill")
	waitForEvents(t, store, org, n, 60*time.Second)
	reconcileExactly(t, store, org, n)
	if err := second.kill(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	// Restarted once more, it resumes at the stored offsets: nothing new.
	third := startIngest(t, brokers, dsn, "e2e-kill")
	time.Sleep(2 * time.Second)
	_ = third.kill(syscall.SIGTERM)
	reconcileExactly(t, store, org, n)
	offsets, err := store.Offsets(context.Background(), "e2e-kill", usageTopic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, next := range offsets {
		sum += next
	}
	if sum != n {
		t.Fatalf("stored offsets %v sum to %s, want %d", offsets, strconv.FormatInt(sum, 10), n)
	}
}

package usagestore_test

import (
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/internal/usagetest"
	"github.com/tenantgate/tenantgate/usagestore"
)

// On TimescaleDB (the PGlite build), the migrations make hypertables, and
// the same events — replayed once — answer the same reports as on plain
// PostgreSQL.
func TestTimescaleAnswersLikePostgres(t *testing.T) {
	clock := testenv.NewClock(base.Add(24 * time.Hour))
	ts, _ := usagetest.TimescaleStore(t, usagestore.Options{Now: clock.Now})
	pg, _ := usagetest.FreshStore(t, usagestore.Options{Now: clock.Now})
	ctx := ctxT(t)

	hyper, err := ts.Timescale(ctx)
	if err != nil || !hyper {
		t.Fatalf("usage_events is not a hypertable on TimescaleDB (err %v)", err)
	}
	var n int
	if err := ts.Pool().QueryRow(ctx, `SELECT count(*) FROM timescaledb_information.hypertables
		WHERE hypertable_schema = current_schema() AND hypertable_name LIKE 'usage_%'`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("%d hypertables (err %v), want usage_events and three rollups", n, err)
	}
	if plain, err := pg.Timescale(ctx); err != nil || plain {
		t.Fatalf("plain PostgreSQL reports a hypertable (err %v)", err)
	}

	org := usagetest.UniqueOrg("org_ts_")
	evs := usagetest.Events(400, org, base, 4*time.Hour)
	for _, s := range []*usagestore.Store{ts, pg} {
		for range 2 {
			if _, err := s.Ingest(ctx, usagestore.Batch{Events: evs}); err != nil {
				t.Fatal(err)
			}
		}
		reconcile(t, s, org, 400)
		if _, err := s.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []usagestore.ReportQuery{
		{OrgID: org, From: base, To: base.Add(5 * time.Hour), Granularity: usagestore.Hour, GroupBy: []usagestore.Dimension{usagestore.ByOutcome}},
		{OrgID: org, From: base, To: base.Add(5 * time.Hour), Granularity: usagestore.Day, GroupBy: []usagestore.Dimension{usagestore.ByKey, usagestore.ByService}},
	} {
		a, err := ts.Report(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		b, err := pg.Report(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(a) == 0 || len(a) != len(b) {
			t.Fatalf("TimescaleDB %d rows, PostgreSQL %d", len(a), len(b))
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("row %d: TimescaleDB %+v, PostgreSQL %+v", i, a[i], b[i])
			}
		}
	}
}

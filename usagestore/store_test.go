package usagestore_test

import (
	"context"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/internal/usagetest"
	"github.com/tenantgate/tenantgate/usagestore"
)

var base = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func reconcile(t *testing.T, s *usagestore.Store, org string, want int64) {
	t.Helper()
	r, err := s.Reconcile(ctxT(t), org)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(want); err != nil {
		t.Fatal(err)
	}
}

// A batch applied twice, then again in part mixed with new events, counts
// every event exactly once in the raw table and in each rollup level.
func TestIngestReplayCountsEachEventOnce(t *testing.T) {
	clock := testenv.NewClock(base.Add(time.Hour))
	s, _ := usagetest.FreshStore(t, usagestore.Options{Now: clock.Now})
	ctx := ctxT(t)
	evs := usagetest.Events(500, "org_a", base, 3*time.Hour)

	res, err := s.Ingest(ctx, usagestore.Batch{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 500 || res.Duplicates != 0 {
		t.Fatalf("first ingest: %+v, want 500 inserted", res)
	}
	res, err = s.Ingest(ctx, usagestore.Batch{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 0 || res.Duplicates != 500 {
		t.Fatalf("replay: %+v, want 500 duplicates", res)
	}
	more := usagetest.Events(100, "org_a", base.Add(30*time.Minute), time.Hour)
	mixed := append(append([]usagestore.Event{}, evs[100:200]...), more...)
	mixed = append(mixed, more[:10]...) // the same event twice in one batch
	res, err = s.Ingest(ctx, usagestore.Batch{Events: mixed})
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 100 || res.Duplicates != 110 {
		t.Fatalf("mixed batch: %+v, want 100 inserted, 110 duplicates", res)
	}
	reconcile(t, s, "org_a", 600)
}

// An event stamped hours before the batch that carries it lands in the
// buckets of its own time, not of its arrival.
func TestIngestBackdatedEventLandsInItsBucket(t *testing.T) {
	clock := testenv.NewClock(base)
	s, _ := usagetest.FreshStore(t, usagestore.Options{Now: clock.Now})
	ctx := ctxT(t)
	old := usagetest.Events(1, "org_b", base.Add(-26*time.Hour-7*time.Minute), 0)
	if _, err := s.Ingest(ctx, usagestore.Batch{Events: old}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []usagestore.Granularity{usagestore.Minute, usagestore.Hour, usagestore.Day} {
		rows, err := s.Report(ctx, usagestore.ReportQuery{OrgID: "org_b", From: base.Add(-72 * time.Hour), To: base, Granularity: g})
		if err != nil {
			t.Fatal(err)
		}
		want := g.Truncate(old[0].Time)
		if len(rows) != 1 || rows[0].Requests != 1 || !rows[0].Bucket.Equal(want) {
			t.Fatalf("%s report: %+v, want one request in bucket %s", g, rows, want)
		}
	}
	reconcile(t, s, "org_b", 1)
}

// Events older than the raw retention, or stamped a day ahead, go to the
// dead letters, not the rollups; replaying them adds no dead letter either.
func TestIngestLateAndFutureEventsAreDeadLettered(t *testing.T) {
	clock := testenv.NewClock(base)
	s, _ := usagetest.FreshStore(t, usagestore.Options{Now: clock.Now, RawRetention: 48 * time.Hour})
	ctx := ctxT(t)
	late := usagetest.Events(3, "org_c", base.Add(-49*time.Hour), time.Minute)
	future := usagetest.Events(2, "org_c", base.Add(25*time.Hour), time.Minute)
	fine := usagetest.Events(5, "org_c", base.Add(-47*time.Hour), time.Minute)
	batch := usagestore.Batch{Events: append(append(append([]usagestore.Event{}, late...), future...), fine...)}
	for range 2 {
		res, err := s.Ingest(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		if res.Late != 3 || res.Future != 2 {
			t.Fatalf("result %+v, want 3 late and 2 future", res)
		}
	}
	var late2, future2 int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE reason = 'late'), count(*) FILTER (WHERE reason = 'future')
		FROM usage_dead_letters`).Scan(&late2, &future2); err != nil {
		t.Fatal(err)
	}
	if late2 != 3 || future2 != 2 {
		t.Fatalf("dead letters: %d late, %d future; want 3 and 2", late2, future2)
	}
	reconcile(t, s, "org_c", 5)
}

// Poison records are kept with their Kafka position, once, and offsets
// stored with a batch only move forward.
func TestIngestDeadLettersAndOffsets(t *testing.T) {
	s, _ := usagetest.FreshStore(t, usagestore.Options{})
	ctx := ctxT(t)
	poison := usagestore.DeadLetter{Reason: usagestore.ReasonPoison, Error: "invalid JSON", Topic: "t", Partition: 2, Offset: 41, Payload: []byte("{not json")}
	for _, next := range []int64{42, 40} {
		b := usagestore.Batch{DeadLetters: []usagestore.DeadLetter{poison},
			Offsets: []usagestore.Offset{{Group: "g", Topic: "t", Partition: 2, Next: next}}}
		if _, err := s.Ingest(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	var next int64
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM usage_dead_letters WHERE topic = 't' AND kafka_offset = 41`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	offsets, err := s.Offsets(ctx, "g", "t")
	if err != nil {
		t.Fatal(err)
	}
	next = offsets[2]
	if n != 1 || next != 42 {
		t.Fatalf("%d dead letters at offset 41 (want 1), next offset %d (want 42)", n, next)
	}
}

// The report counts 429s by kind and errors per group, and its percentiles
// come from the merged histograms; the in-memory summary of the same rows
// answers the same.
func TestReportMatchesSummary(t *testing.T) {
	clock := testenv.NewClock(base.Add(24 * time.Hour))
	s, _ := usagetest.FreshStore(t, usagestore.Options{Now: clock.Now})
	ctx := ctxT(t)
	evs := usagetest.Events(700, "org_d", base, 5*time.Hour)
	evs = append(evs, usagetest.Events(50, "org_other", base, time.Hour)...)
	if _, err := s.Ingest(ctx, usagestore.Batch{Events: evs}); err != nil {
		t.Fatal(err)
	}
	mem := make(map[usagestore.RollupKey]*usagestore.RollupRow)
	for i := range evs {
		e := &evs[i]
		k := usagestore.RollupKey{Bucket: e.Time.Truncate(time.Minute), OrgID: e.OrgID, KeyID: e.KeyID, Service: e.Service, Outcome: e.Outcome}
		if mem[k] == nil {
			mem[k] = &usagestore.RollupRow{RollupKey: k}
		}
		mem[k].Add(e)
	}
	var rows []usagestore.RollupRow
	for _, r := range mem {
		rows = append(rows, *r)
	}
	for _, q := range []usagestore.ReportQuery{
		{OrgID: "org_d", From: base.Add(-time.Hour), To: base.Add(6 * time.Hour), Granularity: usagestore.Hour},
		{OrgID: "org_d", From: base, To: base.Add(6 * time.Hour), Granularity: usagestore.Day, GroupBy: []usagestore.Dimension{usagestore.ByKey, usagestore.ByOutcome}},
		{OrgID: "org_d", From: base.Add(time.Hour), To: base.Add(2 * time.Hour), Granularity: usagestore.Minute, GroupBy: []usagestore.Dimension{usagestore.ByService}},
	} {
		got, err := s.Report(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		want, err := usagestore.Summarize(rows, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || len(got) != len(want) {
			t.Fatalf("%+v: %d rows from the store, %d from memory", q, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%+v row %d:\nstore  %+v\nmemory %+v", q, i, got[i], want[i])
			}
		}
	}
	total, err := s.Report(ctx, usagestore.ReportQuery{OrgID: "org_d", From: base, To: base.Add(24 * time.Hour), Granularity: usagestore.Day})
	if err != nil {
		t.Fatal(err)
	}
	r := total[0]
	// Events cycles 7 outcomes: 3 allowed, 1 each of the others.
	if r.Requests != 700 || r.Allowed != 300 || r.RateLimitedMinute != 100 || r.RateLimitedDay != 100 ||
		r.BackendErrors != 100 || r.GatewayErrors != 100 {
		t.Fatalf("day total %+v", r)
	}
	if !(r.LatencyP50US > 0 && r.LatencyP50US <= r.LatencyP95US && r.LatencyP95US <= r.LatencyP99US && r.LatencyP99US <= 100_100) {
		t.Fatalf("percentiles p50 %d p95 %d p99 %d not ordered within the latencies' range", r.LatencyP50US, r.LatencyP95US, r.LatencyP99US)
	}
}

func TestReportRejectsBadQueries(t *testing.T) {
	for _, q := range []usagestore.ReportQuery{
		{OrgID: "", From: base, To: base.Add(time.Hour), Granularity: usagestore.Hour},
		{OrgID: "o", From: base, To: base, Granularity: usagestore.Hour},
		{OrgID: "o", From: base, To: base.Add(time.Hour), Granularity: "week"},
		{OrgID: "o", From: base, To: base.Add(24 * 365 * time.Hour), Granularity: usagestore.Minute},
		{OrgID: "o", From: base, To: base.Add(time.Hour), Granularity: usagestore.Hour, GroupBy: []usagestore.Dimension{"path"}},
		{OrgID: "o", From: base, To: base.Add(time.Hour), Granularity: usagestore.Hour, GroupBy: []usagestore.Dimension{"key", "key"}},
	} {
		if err := q.Validate(); err == nil {
			t.Errorf("%+v: no error", q)
		}
	}
}

// Maintenance makes the partitions of the coming days and drops the days
// past the raw retention, with their events.
func TestMaintainCreatesAndDropsPartitions(t *testing.T) {
	clock := testenv.NewClock(base)
	s, _ := usagetest.FreshStore(t, usagestore.Options{Now: clock.Now, RawRetention: 48 * time.Hour})
	ctx := ctxT(t)
	if _, err := s.Ingest(ctx, usagestore.Batch{Events: usagetest.Events(10, "org_e", base.Add(-47*time.Hour), time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	partitions := func() []string {
		rows, err := s.Pool().Query(ctx, `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'usage_events'::regclass ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return names
	}
	got := partitions()
	for _, want := range []string{"usage_events_20260312", "usage_events_20260314", "usage_events_20260317"} {
		if !contains(got, want) {
			t.Fatalf("partitions %v lack %s", got, want)
		}
	}
	clock.Advance(48 * time.Hour) // now 2026-03-16 15:09: the 12th and 13th ended more than 48 h ago
	dropped, err := s.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got = partitions()
	if dropped != 2 || contains(got, "usage_events_20260312") || contains(got, "usage_events_20260313") ||
		!contains(got, "usage_events_20260314") || !contains(got, "usage_events_20260319") {
		t.Fatalf("after two days: dropped %d, partitions %v", dropped, got)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

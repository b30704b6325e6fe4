package caddyusage

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/internal/usagetest"
	"github.com/tenantgate/tenantgate/usagestore"
)

// The postgres sink with PostgreSQL cut off (a real outage through a TCP
// proxy): events are spooled, /health/ready says degraded, and when the
// database is back the spool drains into it: exactly N.
func TestPostgresSinkOutageSpoolsThenDrains(t *testing.T) {
	store, dsn := usagetest.FreshStore(t, usagestore.Options{})
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	p := testPipeline(t, 1000, 16<<20, func(m *metrics) (sink, error) {
		return newPostgresSink(viaProxy, 0, m, zaptest.NewLogger(t))
	})
	org := usagetest.UniqueOrg("org_pg_")
	evs := pointers(usagetest.Events(600, org, time.Now(), time.Second))
	for _, e := range evs[:200] {
		p.emit(e)
	}
	eventually(t, 20*time.Second, func() bool { return testutil.ToFloat64(p.metrics.delivered.WithLabelValues("postgres")) == 200 },
		func() string { return "the first 200 events did not reach PostgreSQL" })

	proxy.Cut()
	for _, e := range evs[200:] {
		p.emit(e)
	}
	eventually(t, 30*time.Second, func() bool { return p.spool.records() > 0 }, func() string { return "nothing spooled during the outage" })
	if st, detail := p.state(); st != "degraded" {
		t.Errorf("state %s (%s) during the outage, want degraded", st, detail)
	}
	proxy.Restore()
	eventually(t, 60*time.Second, func() bool { return p.spool.records() == 0 && p.sink.Load().failing() == nil },
		func() string { return "the spool did not drain: " + itoa(p.spool.records()) })
	reconcileN(t, store, org, 600)
	if st, _ := p.state(); st != "ok" {
		t.Errorf("state %s after recovery, want ok", st)
	}
}

// The memory sink answers reports of the last 24 hours and stays bounded.
func TestMemorySinkReportsAndIsBounded(t *testing.T) {
	clock := testenv.NewClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	m := newMetrics()
	s := newMemoryStore(clock.Now, m)
	evs := usagetest.Events(500, "org_m", clock.Now().Add(-2*time.Hour), time.Hour)
	old := usagetest.Events(5, "org_m", clock.Now().Add(-25*time.Hour), 0)
	_ = s.deliverAll(context.Background(), pointers(append(evs, old...)))
	rows, err := s.report(usagestore.ReportQuery{OrgID: "org_m", From: clock.Now().Add(-48 * time.Hour), To: clock.Now(), Granularity: usagestore.Day})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Requests != 500 {
		t.Fatalf("report %+v, want the 500 events of the last 24 h", rows)
	}
	clock.Advance(22*time.Hour + 30*time.Minute) // the events are now 23.5 to 24.5 h old
	_ = s.deliverAll(context.Background(), nil)
	rows, _ = s.report(usagestore.ReportQuery{OrgID: "org_m", From: clock.Now().Add(-48 * time.Hour), To: clock.Now(), Granularity: usagestore.Day})
	var n int64
	for _, r := range rows {
		n += r.Requests
	}
	if n == 0 || n >= 500 {
		t.Fatalf("after 23 h, %d requests remain; want only the last hour's part", n)
	}
	// Bounded: one organization cannot hold more than its share of rows.
	many := make([]*usagestore.Event, 0, memoryMaxRowsPerOrg+100)
	for i := 0; i < memoryMaxRowsPerOrg+100; i++ {
		many = append(many, &usagestore.Event{OrgID: "org_flood", KeyID: itoa(int64(i)), Time: clock.Now(), Outcome: usagestore.OutcomeAllowed})
	}
	_ = s.deliverAll(context.Background(), many)
	if len(s.orgs["org_flood"]) > memoryMaxRowsPerOrg || testutil.ToFloat64(m.dropped.WithLabelValues("memory_full")) < 100 {
		t.Fatalf("org_flood holds %d rows (bound %d)", len(s.orgs["org_flood"]), memoryMaxRowsPerOrg)
	}
}

package caddyusage

import (
	"context"
	"sync"
	"time"

	"github.com/tenantgate/tenantgate/usagestore"
)

// The memory sink keeps per-minute rollups of the last 24 hours in the
// process, for a gateway without Kafka or PostgreSQL. It is bounded: at
// most memoryMaxRows rows in all and memoryMaxRowsPerOrg per organization;
// events beyond are dropped and counted (memory_full).
const (
	memoryWindow        = 24 * time.Hour
	memoryMaxRows       = 200_000
	memoryMaxRowsPerOrg = 50_000
)

type memoryStore struct {
	now     func() time.Time
	metrics *metrics

	mu     sync.Mutex
	orgs   map[string]map[usagestore.RollupKey]*usagestore.RollupRow
	rows   int
	pruned time.Time
}

func newMemoryStore(now func() time.Time, m *metrics) *memoryStore {
	return &memoryStore{now: now, metrics: m, orgs: make(map[string]map[usagestore.RollupKey]*usagestore.RollupRow)}
}

func (*memoryStore) name() string { return "memory" }

func (s *memoryStore) deliver(batch []*usagestore.Event, _ func([]*usagestore.Event)) {
	_ = s.deliverAll(context.Background(), batch)
}

func (s *memoryStore) deliverAll(_ context.Context, events []*usagestore.Event) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.pruned) >= time.Minute {
		s.prune(now)
	}
	oldest := now.Add(-memoryWindow)
	dropped := 0
	for _, e := range events {
		if e.Time.Before(oldest) {
			continue // outside the window: it would be pruned at once
		}
		k := usagestore.RollupKey{Bucket: usagestore.Minute.Truncate(e.Time), OrgID: e.OrgID, KeyID: e.KeyID, Service: e.Service, Outcome: e.Outcome}
		org := s.orgs[e.OrgID]
		r := org[k]
		if r == nil {
			if s.rows >= memoryMaxRows || len(org) >= memoryMaxRowsPerOrg {
				dropped++
				continue
			}
			if org == nil {
				org = make(map[usagestore.RollupKey]*usagestore.RollupRow)
				s.orgs[e.OrgID] = org
			}
			r = &usagestore.RollupRow{RollupKey: k}
			org[k] = r
			s.rows++
		}
		r.Add(e)
	}
	if dropped > 0 {
		s.metrics.dropped.WithLabelValues("memory_full").Add(float64(dropped))
	}
	s.metrics.delivered.WithLabelValues("memory").Add(float64(len(events) - dropped))
	return nil
}

// prune forgets rows older than the window. Callers hold mu.
func (s *memoryStore) prune(now time.Time) {
	oldest := now.Add(-memoryWindow).Truncate(time.Minute)
	for org, rows := range s.orgs {
		for k := range rows {
			if k.Bucket.Before(oldest) {
				delete(rows, k)
				s.rows--
			}
		}
		if len(rows) == 0 {
			delete(s.orgs, org)
		}
	}
	s.pruned = now
}

// report answers a report from the rows held.
func (s *memoryStore) report(q usagestore.ReportQuery) ([]usagestore.ReportRow, error) {
	s.mu.Lock()
	rows := make([]usagestore.RollupRow, 0, len(s.orgs[q.OrgID]))
	for _, r := range s.orgs[q.OrgID] {
		rows = append(rows, *r)
	}
	s.mu.Unlock()
	return usagestore.Summarize(rows, q)
}

func (*memoryStore) failing() error { return nil }

func (*memoryStore) close(context.Context, func([]*usagestore.Event)) {}

// Interface guard
var _ sink = (*memoryStore)(nil)

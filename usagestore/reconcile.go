package usagestore

import (
	"context"
	"fmt"
	"strings"
)

// Reconciliation compares the raw events with every rollup level.
type Reconciliation struct {
	// Raw and Distinct count usage_events rows and distinct event IDs.
	Raw, Distinct int64
	// Minute, Hour and Day sum the requests of each rollup level.
	Minute, Hour, Day int64
	// Mismatches lists the (level, organization, bucket) whose rollup
	// differs from the raw count.
	Mismatches []string
}

// Reconcile checks the store's invariants for one organization (every
// organization when orgID is empty): each event ID is stored once, and the
// requests of each rollup level equal the raw events per organization and
// bucket. Raw events are compared while within the raw retention.
func (s *Store) Reconcile(ctx context.Context, orgID string) (Reconciliation, error) {
	var r Reconciliation
	err := s.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM usage_events
		WHERE $1 = '' OR org_id = $1`, orgID).Scan(&r.Raw, &r.Distinct)
	if err != nil {
		return r, fmt.Errorf("counting raw usage: %w", err)
	}
	for _, level := range []struct {
		name, unit string
		into       *int64
	}{{"usage_rollup_minute", "minute", &r.Minute}, {"usage_rollup_hour", "hour", &r.Hour}, {"usage_rollup_day", "day", &r.Day}} {
		err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(requests), 0)::bigint FROM `+level.name+`
			WHERE $1 = '' OR org_id = $1`, orgID).Scan(level.into)
		if err != nil {
			return r, fmt.Errorf("summing %s: %w", level.name, err)
		}
		rows, err := s.pool.Query(ctx, `
			WITH raw AS (
				SELECT org_id, date_trunc('`+level.unit+`', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, count(*) AS n
				FROM usage_events WHERE $1 = '' OR org_id = $1 GROUP BY 1, 2),
			roll AS (
				SELECT org_id, bucket, sum(requests) AS n FROM `+level.name+`
				WHERE $1 = '' OR org_id = $1 GROUP BY 1, 2)
			SELECT coalesce(raw.org_id, roll.org_id), coalesce(raw.bucket, roll.bucket)::text,
			       coalesce(raw.n, 0)::bigint, coalesce(roll.n, 0)::bigint
			FROM raw FULL JOIN roll ON raw.org_id = roll.org_id AND raw.bucket = roll.bucket
			WHERE coalesce(raw.n, 0) <> coalesce(roll.n, 0)`, orgID)
		if err != nil {
			return r, fmt.Errorf("comparing %s: %w", level.name, err)
		}
		for rows.Next() {
			var org, bucket string
			var raw, roll int64
			if err := rows.Scan(&org, &bucket, &raw, &roll); err != nil {
				rows.Close()
				return r, fmt.Errorf("comparing %s: %w", level.name, err)
			}
			r.Mismatches = append(r.Mismatches, fmt.Sprintf("%s %s %s: raw %d, rollup %d", level.unit, org, bucket, raw, roll))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return r, fmt.Errorf("comparing %s: %w", level.name, err)
		}
	}
	return r, nil
}

// Check returns an error unless every invariant holds and the store holds
// exactly want events.
func (r Reconciliation) Check(want int64) error {
	var problems []string
	if r.Raw != r.Distinct {
		problems = append(problems, fmt.Sprintf("%d raw rows but %d distinct event IDs", r.Raw, r.Distinct))
	}
	for _, c := range []struct {
		name string
		n    int64
	}{{"raw events", r.Raw}, {"minute rollups", r.Minute}, {"hour rollups", r.Hour}, {"day rollups", r.Day}} {
		if c.n != want {
			problems = append(problems, fmt.Sprintf("%s count %d, want %d", c.name, c.n, want))
		}
	}
	problems = append(problems, r.Mismatches...)
	if len(problems) > 0 {
		return fmt.Errorf("usage does not reconcile: %s", strings.Join(problems, "; "))
	}
	return nil
}

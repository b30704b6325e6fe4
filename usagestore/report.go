package usagestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Granularity is the width of a report's time buckets.
type Granularity string

// Granularities, each read from its rollup table.
const (
	Minute Granularity = "minute"
	Hour   Granularity = "hour"
	Day    Granularity = "day"
)

// Dimension is what a report can be grouped by besides time.
type Dimension string

// Dimensions.
const (
	ByKey     Dimension = "key"
	ByService Dimension = "service"
	ByOutcome Dimension = "outcome"
)

// maxReportBuckets bounds the number of time buckets of one report.
const maxReportBuckets = 50_000

// ReportQuery selects one organization's usage.
type ReportQuery struct {
	OrgID string
	// From (inclusive) and To (exclusive) bound the buckets' start times.
	From, To time.Time
	// Granularity: minute, hour or day.
	Granularity Granularity
	// GroupBy: any of key, service, outcome, each at most once.
	GroupBy []Dimension
}

// ReportRow is one time bucket (and group) of a report.
type ReportRow struct {
	Bucket time.Time `json:"bucket"`
	// KeyID, Service and Outcome are set when grouped by them.
	KeyID   string  `json:"key_id,omitempty"`
	Service string  `json:"service,omitempty"`
	Outcome Outcome `json:"outcome,omitempty"`

	Totals
	LatencyP50US int64 `json:"latency_p50_us"`
	LatencyP95US int64 `json:"latency_p95_us"`
	LatencyP99US int64 `json:"latency_p99_us"`
}

// Totals are the counts of a report row: the requests, each outcome's
// share of them, and their bytes. Totals of several rows add up.
type Totals struct {
	Requests          int64 `json:"requests"`
	Allowed           int64 `json:"allowed"`
	RateLimitedMinute int64 `json:"rate_limited_minute"`
	RateLimitedDay    int64 `json:"rate_limited_day"`
	BackendErrors     int64 `json:"backend_errors"`
	GatewayErrors     int64 `json:"gateway_errors"`
	BytesIn           int64 `json:"bytes_in"`
	BytesOut          int64 `json:"bytes_out"`
}

// Add adds o's counts to t.
func (t *Totals) Add(o *Totals) {
	t.Requests += o.Requests
	t.Allowed += o.Allowed
	t.RateLimitedMinute += o.RateLimitedMinute
	t.RateLimitedDay += o.RateLimitedDay
	t.BackendErrors += o.BackendErrors
	t.GatewayErrors += o.GatewayErrors
	t.BytesIn += o.BytesIn
	t.BytesOut += o.BytesOut
}

// addRollup counts a rollup row: its requests, under its outcome too.
func (t *Totals) addRollup(r *RollupRow) {
	t.Requests += r.Requests
	switch r.Outcome {
	case OutcomeAllowed:
		t.Allowed += r.Requests
	case OutcomeRateLimitedMinute:
		t.RateLimitedMinute += r.Requests
	case OutcomeRateLimitedDay:
		t.RateLimitedDay += r.Requests
	case OutcomeBackendError:
		t.BackendErrors += r.Requests
	case OutcomeGatewayError:
		t.GatewayErrors += r.Requests
	}
	t.BytesIn += r.BytesIn
	t.BytesOut += r.BytesOut
}

// ParseGranularity checks a granularity name.
func ParseGranularity(s string) (Granularity, error) {
	switch g := Granularity(s); g {
	case Minute, Hour, Day:
		return g, nil
	}
	return "", fmt.Errorf("granularity must be minute, hour or day, got %q", s)
}

// ParseGroupBy reads a comma-separated list of dimensions ("" is none).
func ParseGroupBy(s string) ([]Dimension, error) {
	var dims []Dimension
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		d := Dimension(part)
		switch d {
		case ByKey, ByService, ByOutcome:
		default:
			return nil, fmt.Errorf("group by must be a list of key, service and outcome, got %q", part)
		}
		if slices.Contains(dims, d) {
			return nil, fmt.Errorf("group by names %q twice", part)
		}
		dims = append(dims, d)
	}
	return dims, nil
}

// Validate checks the query.
func (q *ReportQuery) Validate() error {
	if q.OrgID == "" || len(q.OrgID) > maxFieldLen {
		return fmt.Errorf("organization ID must be 1-%d bytes", maxFieldLen)
	}
	if _, err := ParseGranularity(string(q.Granularity)); err != nil {
		return err
	}
	if !q.From.Before(q.To) {
		return errors.New("the report's start must be before its end")
	}
	if q.To.Sub(q.From)/q.Granularity.width() > maxReportBuckets {
		return fmt.Errorf("too many %s buckets (more than %d): use a coarser granularity or a shorter period", q.Granularity, maxReportBuckets)
	}
	_, err := ParseGroupBy(FormatGroupBy(q.GroupBy))
	return err
}

// Column is the rollup column a report grouped by d reads: key_id,
// service or outcome.
func (d Dimension) Column() string {
	switch d {
	case ByKey:
		return "key_id"
	case ByService:
		return "service"
	case ByOutcome:
		return "outcome"
	}
	return ""
}

// Group is the row's value of dimension d ("" when the report is not
// grouped by it).
func (r *ReportRow) Group(d Dimension) string {
	switch d {
	case ByKey:
		return r.KeyID
	case ByService:
		return r.Service
	case ByOutcome:
		return string(r.Outcome)
	}
	return ""
}

// FormatGroupBy writes dimensions as ParseGroupBy reads them: key,service.
func FormatGroupBy(ds []Dimension) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = string(d)
	}
	return strings.Join(s, ",")
}

func (g Granularity) width() time.Duration {
	switch g {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	}
	return 24 * time.Hour
}

// Truncate returns the start of t's bucket (UTC).
func (g Granularity) Truncate(t time.Time) time.Time {
	t = t.UTC()
	if g == Day {
		y, m, d := t.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	}
	return t.Truncate(g.width())
}

const sqlReport = `SELECT bucket, %s,
		sum(requests)::bigint,
		coalesce(sum(requests) FILTER (WHERE outcome = 'allowed'), 0)::bigint,
		coalesce(sum(requests) FILTER (WHERE outcome = 'rate_limited_minute'), 0)::bigint,
		coalesce(sum(requests) FILTER (WHERE outcome = 'rate_limited_day'), 0)::bigint,
		coalesce(sum(requests) FILTER (WHERE outcome = 'backend_error'), 0)::bigint,
		coalesce(sum(requests) FILTER (WHERE outcome = 'gateway_error'), 0)::bigint,
		sum(bytes_in)::bigint, sum(bytes_out)::bigint, usage_hist_sum(latency)
	FROM usage_rollup_%s
	WHERE org_id = $1 AND bucket >= $2 AND bucket < $3
	GROUP BY 1, 2, 3, 4
	ORDER BY 1, 2, 3, 4`

// Report answers one organization's usage per time bucket and group,
// oldest first, from the rollup table of the granularity. Buckets without
// requests are absent.
func (s *Store) Report(ctx context.Context, q ReportQuery) ([]ReportRow, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	cols := make([]string, 3)
	for i, d := range []Dimension{ByKey, ByService, ByOutcome} {
		cols[i] = "''"
		if slices.Contains(q.GroupBy, d) {
			cols[i] = d.Column()
		}
	}
	sql := fmt.Sprintf(sqlReport, strings.Join(cols, ", "), q.Granularity)
	rows, err := s.pool.Query(ctx, sql, q.OrgID, q.Granularity.Truncate(q.From), q.To)
	if err != nil {
		return nil, fmt.Errorf("reading usage: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ReportRow, error) {
		var r ReportRow
		var hist []int64
		err := row.Scan(&r.Bucket, &r.KeyID, &r.Service, &r.Outcome, &r.Requests, &r.Allowed,
			&r.RateLimitedMinute, &r.RateLimitedDay, &r.BackendErrors, &r.GatewayErrors,
			&r.BytesIn, &r.BytesOut, &hist)
		h := histogramFromSlice(hist)
		r.setLatency(&h)
		r.Bucket = r.Bucket.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading usage: %w", err)
	}
	return out, nil
}

func (r *ReportRow) setLatency(h *histogram) {
	r.LatencyP50US = h.Percentile(0.50)
	r.LatencyP95US = h.Percentile(0.95)
	r.LatencyP99US = h.Percentile(0.99)
}

// Summarize answers a report from rollup rows held in memory, exactly as
// Report answers it from the database: rows of other organizations or
// outside the period are ignored, buckets are re-cut to the granularity.
func Summarize(rows []RollupRow, q ReportQuery) ([]ReportRow, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	type acc struct {
		row  ReportRow
		hist histogram
	}
	from := q.Granularity.Truncate(q.From)
	groups := make(map[ReportRow]*acc)
	for i := range rows {
		in := &rows[i]
		if in.OrgID != q.OrgID {
			continue
		}
		b := q.Granularity.Truncate(in.Bucket)
		if b.Before(from) || !b.Before(q.To) {
			continue
		}
		k := ReportRow{Bucket: b}
		if slices.Contains(q.GroupBy, ByKey) {
			k.KeyID = in.KeyID
		}
		if slices.Contains(q.GroupBy, ByService) {
			k.Service = in.Service
		}
		if slices.Contains(q.GroupBy, ByOutcome) {
			k.Outcome = in.Outcome
		}
		a := groups[k]
		if a == nil {
			a = &acc{row: k}
			groups[k] = a
		}
		a.row.addRollup(in)
		a.hist.Merge(&in.latency)
	}
	out := make([]ReportRow, 0, len(groups))
	for _, a := range groups {
		a.row.setLatency(&a.hist)
		out = append(out, a.row)
	}
	// The order of Report: by bucket, then key, service and outcome (one
	// organization, so compareKeys's organization is the same for all).
	slices.SortFunc(out, func(a, b ReportRow) int {
		ka, kb := a.key(), b.key()
		return compareKeys(&ka, &kb)
	})
	return out, nil
}

// key is the row's bucket and groups as a rollup key.
func (r *ReportRow) key() RollupKey {
	return RollupKey{Bucket: r.Bucket, KeyID: r.KeyID, Service: r.Service, Outcome: r.Outcome}
}

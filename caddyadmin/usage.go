package caddyadmin

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantgate/tenantgate/caddyusage"
	"github.com/tenantgate/tenantgate/usagestore"
)

// usageSource answers usage reports with the query `caddy tenant usage
// report` runs, from the first of:
//
//  1. the usage database configured on the handler (usage_database_url);
//  2. what this process's usage pipeline writes to: its memory store (the
//     last 24 hours), or the database of its postgres sink;
//  3. the key database (database_url), where `caddy tenant migrate` puts
//     the usage tables too (a Kafka consumer fills them).
type usageSource struct {
	configured *usagestore.Store // usage_database_url's
	keyDB      *usagestore.Store // on the key database's pool
	dsn        string            // usage_database_url, to release its pool
}

// newUsageSource prepares the sources; dsn is usage_database_url (may be
// empty), keyPool the key database's pool (may be nil).
func newUsageSource(dsn string, keyPool *pgxpool.Pool) (*usageSource, error) {
	s := &usageSource{}
	if dsn != "" {
		pool, err := acquirePool(dsn)
		if err != nil {
			return nil, err
		}
		s.configured, s.dsn = usagestore.NewStore(pool, usagestore.Options{}), dsn
	}
	if keyPool != nil {
		s.keyDB = usagestore.NewStore(keyPool, usagestore.Options{})
	}
	return s, nil
}

// release gives back the usage database's pool (never closes a store:
// the pools are shared).
func (s *usageSource) release() error {
	if s.dsn == "" {
		return nil
	}
	return releasePool(s.dsn)
}

// report answers q and says where it was read ("postgres" or "memory").
func (s *usageSource) report(ctx context.Context, q usagestore.ReportQuery) ([]usagestore.ReportRow, string, error) {
	var rows []usagestore.ReportRow
	var err error
	source := "postgres"
	switch {
	case s.configured != nil:
		rows, err = s.configured.Report(ctx, q)
	default:
		rows, source, err = caddyusage.Report(ctx, q)
		if errors.Is(err, caddyusage.ErrNoUsageStore) {
			if s.keyDB == nil {
				return nil, "", &apiError{status: http.StatusServiceUnavailable,
					msg: "no usage store: this gateway keeps no usage in memory or in PostgreSQL (tenant_usage's sink is Kafka, or absent); configure the usage database the consumer fills (tenant_admin usage_database_url, tenant_usage_report database_url)"}
			}
			source = "postgres"
			rows, err = s.keyDB.Report(ctx, q)
		}
	}
	if err != nil {
		return nil, "", usageError(err)
	}
	if rows == nil {
		rows = []usagestore.ReportRow{}
	}
	return rows, source, nil
}

// usageError maps a failed usage query (the query itself was checked
// before): no schema is a 503 saying what to run; a database that cannot
// be reached a 503; an error from PostgreSQL a 500.
func usageError(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01":
		return &apiError{status: http.StatusServiceUnavailable, msg: "the database has no usage schema: run `caddy tenant migrate` first", cause: err}
	case errors.As(err, &pgErr):
		return &apiError{status: http.StatusInternalServerError, msg: "internal error", cause: err}
	}
	return &apiError{status: http.StatusServiceUnavailable, msg: "the usage store is unavailable: retry later", cause: err}
}

// usageReport is the answer of GET /v1/orgs/{id}/usage.
type usageReport struct {
	OrgID       string                 `json:"organization_id"`
	From        time.Time              `json:"from"`
	To          time.Time              `json:"to"`
	Granularity usagestore.Granularity `json:"granularity"`
	GroupBy     []usagestore.Dimension `json:"group_by"`
	Source      string                 `json:"source"`
	Rows        []usagestore.ReportRow `json:"rows"`
}

// orgIDPattern is what an organization ID may be: a database
// organization's UUID, or a static key's organization (org_1).
var orgIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// orgUsage answers an organization's usage report, as JSON or CSV.
func (a *TenantAdmin) orgUsage(c *call) (*reply, error) {
	orgID := c.r.PathValue("id")
	if !orgIDPattern.MatchString(orgID) {
		return nil, &apiError{status: http.StatusNotFound, msg: "unknown organization"}
	}
	asCSV, err := wantsCSV(c.r.Header.Get("Accept"))
	if err != nil {
		return nil, err
	}
	q, err := reportQuery(c.r, orgID, time.Now())
	if err != nil {
		return nil, err
	}
	// A database organization must exist; a static key's has no record.
	if id, perr := uuid.Parse(orgID); perr == nil && a.pool != nil {
		if _, err := c.admin().GetOrg(c.r.Context(), id.String()); err != nil {
			return nil, err
		}
		q.OrgID = id.String()
	}
	rows, source, err := a.usage.report(c.r.Context(), q)
	if err != nil {
		return nil, err
	}
	if asCSV {
		var buf bytes.Buffer
		if err := caddyusage.WriteCSV(&buf, q, rows); err != nil {
			return nil, err
		}
		return &reply{status: http.StatusOK, raw: buf.Bytes(), contentType: "text/csv; charset=utf-8"}, nil
	}
	groupBy := q.GroupBy
	if groupBy == nil {
		groupBy = []usagestore.Dimension{}
	}
	return jsonReply(http.StatusOK, usageReport{OrgID: q.OrgID, From: q.From.UTC(), To: q.To.UTC(), Granularity: q.Granularity,
		GroupBy: groupBy, Source: source, Rows: rows})
}

// reportQuery reads from, to, granularity and group_by; each bad value is
// a 400 naming its parameter.
func reportQuery(r *http.Request, orgID string, now time.Time) (usagestore.ReportQuery, error) {
	v := r.URL.Query()
	q := usagestore.ReportQuery{OrgID: orgID, To: now, Granularity: usagestore.Hour}
	for name, into := range map[string]*time.Time{"from": &q.From, "to": &q.To} {
		if s := v.Get(name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return q, badField(name, "%s: expected an RFC 3339 time such as 2026-01-25T00:00:00Z, got %q", name, s)
			}
			*into = t
		}
	}
	if v.Get("from") == "" {
		q.From = q.To.Add(-24 * time.Hour)
	}
	if s := v.Get("granularity"); s != "" {
		g, err := usagestore.ParseGranularity(s)
		if err != nil {
			return q, badField("granularity", "%v", err)
		}
		q.Granularity = g
	}
	dims, err := usagestore.ParseGroupBy(v.Get("group_by"))
	if err != nil {
		return q, badField("group_by", "%v", err)
	}
	q.GroupBy = dims
	if !q.From.Before(q.To) {
		return q, badField("from", "from must be before to")
	}
	if err := q.Validate(); err != nil {
		return q, badField("granularity", "%v", err)
	}
	return q, nil
}

// wantsCSV reads the Accept header: CSV when text/csv comes first among
// what the API serves, JSON for application/json, */* or no header, 406
// for anything else.
func wantsCSV(accept string) (bool, error) {
	if strings.TrimSpace(accept) == "" {
		return false, nil
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(part, ";")
		switch strings.ToLower(strings.TrimSpace(mt)) {
		case "text/csv", "text/*":
			return true, nil
		case "application/json", "application/*", "*/*":
			return false, nil
		}
	}
	return false, &apiError{status: http.StatusNotAcceptable, msg: "usage is served as application/json or text/csv", field: "Accept"}
}

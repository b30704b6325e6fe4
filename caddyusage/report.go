package caddyusage

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/tenantgate/tenantgate/usagestore"
)

// Usage reports: reading the usage this process keeps (for tenant_admin,
// tenant_usage_report and Caddy's admin endpoint) and rendering a report
// as a table or CSV (for `caddy tenant usage report` and the admin API).
// The query is always usagestore's, so every reader answers alike.

func init() {
	caddy.RegisterModule(adminAPI{})
}

// ErrNoUsageStore means this process's pipeline keeps no usage it can
// read: there is no pipeline, or its sink is Kafka (the consumer writes
// the usage database; read that with usagestore).
var ErrNoUsageStore = errors.New("this gateway's usage pipeline keeps no usage it can read")

// Report answers a report from this process's pipeline: its memory store
// (the last 24 hours; source "memory"), or the usage database its postgres
// sink writes (source "postgres"). It fails with ErrNoUsageStore otherwise.
func Report(ctx context.Context, q usagestore.ReportQuery) (rows []usagestore.ReportRow, source string, err error) {
	p := runningPipeline()
	if p == nil {
		return nil, "", ErrNoUsageStore
	}
	if mem := p.memoryStore(); mem != nil {
		rows, err = mem.report(q)
		return rows, "memory", err
	}
	box := p.sink.Load()
	if box == nil {
		return nil, "", ErrNoUsageStore
	}
	if pg, ok := box.sink.(*postgresSink); ok {
		rows, err = pg.store.Report(ctx, q)
		return rows, "postgres", err
	}
	return nil, "", ErrNoUsageStore
}

// runningPipeline is the process's pipeline, or nil.
func runningPipeline() *pipeline {
	var p *pipeline
	pipelinePool.Range(func(_, v any) bool {
		p, _ = v.(*pipeline)
		return false
	})
	return p
}

// reportPath is the admin API route that answers usage reports from the
// memory sink of the running gateway.
const reportPath = "/tenant_usage/report"

// adminAPI serves the memory sink's usage on Caddy's admin endpoint, for
// `caddy tenant usage report` without a database:
//
//	GET /tenant_usage/report?org=ID&from=RFC3339&to=RFC3339&by=minute|hour|day&group_by=key,service,outcome
//
// from defaults to 24 hours ago, to to now, by to hour.
type adminAPI struct{}

// Interface guard
var _ caddy.AdminRouter = adminAPI{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.tenant_usage",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes implements caddy.AdminRouter.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: reportPath, Handler: caddy.AdminHandlerFunc(a.report)}}
}

// reportResponse is the admin API's answer.
type reportResponse struct {
	Sink string                 `json:"sink"`
	Rows []usagestore.ReportRow `json:"rows"`
}

func (adminAPI) report(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed: use GET")}
	}
	q, err := reportQueryFromURL(r, time.Now())
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	p := runningPipeline()
	if p == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no tenant_usage pipeline is running in this gateway")}
	}
	mem := p.memoryStore()
	if mem == nil {
		name := "none"
		if box := p.sink.Load(); box != nil {
			name = box.name()
		}
		return caddy.APIError{HTTPStatus: http.StatusConflict,
			Err: fmt.Errorf("this gateway delivers usage to its %s sink and keeps none in memory: read the usage database (caddy tenant usage report --database-url …)", name)}
	}
	rows, err := mem.report(q)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	if rows == nil {
		rows = []usagestore.ReportRow{}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(reportResponse{Sink: "memory", Rows: rows})
}

// reportQueryFromURL reads a report query from URL parameters.
func reportQueryFromURL(r *http.Request, now time.Time) (usagestore.ReportQuery, error) {
	v := r.URL.Query()
	q := usagestore.ReportQuery{OrgID: v.Get("org"), From: now.Add(-24 * time.Hour), To: now, Granularity: usagestore.Hour}
	for name, into := range map[string]*time.Time{"from": &q.From, "to": &q.To} {
		if s := v.Get(name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return q, fmt.Errorf("%s: expected an RFC 3339 time, got %q", name, s)
			}
			*into = t
		}
	}
	if s := v.Get("by"); s != "" {
		g, err := usagestore.ParseGranularity(s)
		if err != nil {
			return q, err
		}
		q.Granularity = g
	}
	dims, err := usagestore.ParseGroupBy(v.Get("group_by"))
	if err != nil {
		return q, err
	}
	q.GroupBy = dims
	return q, q.Validate()
}

// reportHeader names the columns of a report: the bucket, the groups,
// the counts and the latency percentiles.
func reportHeader(q usagestore.ReportQuery) []string {
	h := []string{"bucket"}
	for _, d := range q.GroupBy {
		h = append(h, d.Column())
	}
	return append(h, "requests", "allowed", "429_minute", "429_day", "backend_errors", "gateway_errors",
		"bytes_in", "bytes_out", "p50_ms", "p95_ms", "p99_ms")
}

// reportRecord renders one row in the columns of reportHeader.
func reportRecord(q usagestore.ReportQuery, r usagestore.ReportRow) []string {
	rec := []string{r.Bucket.UTC().Format(time.RFC3339)}
	for _, d := range q.GroupBy {
		rec = append(rec, r.Group(d))
	}
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	ms := func(us int64) string { return strconv.FormatFloat(float64(us)/1000, 'f', 2, 64) }
	return append(rec, i(r.Requests), i(r.Allowed), i(r.RateLimitedMinute), i(r.RateLimitedDay), i(r.BackendErrors),
		i(r.GatewayErrors), i(r.BytesIn), i(r.BytesOut), ms(r.LatencyP50US), ms(r.LatencyP95US), ms(r.LatencyP99US))
}

// WriteCSV writes a report as CSV, as `caddy tenant usage report --csv`
// does: a header row, then a row per bucket and group.
func WriteCSV(w io.Writer, q usagestore.ReportQuery, rows []usagestore.ReportRow) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(reportHeader(q))
	for _, r := range rows {
		_ = cw.Write(reportRecord(q, r))
	}
	cw.Flush()
	return cw.Error()
}

// writeTable writes a report as the CLI's aligned table.
func writeTable(w io.Writer, q usagestore.ReportQuery, rows []usagestore.ReportRow) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintf(w, "no usage for %s from %s to %s\n", q.OrgID, q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(reportHeader(q), "\t")+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(reportRecord(q, r), "\t")+"\t")
	}
	return tw.Flush()
}

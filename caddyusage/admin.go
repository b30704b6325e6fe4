package caddyusage

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/tenantgate/tenantgate/usagestore"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// ReportPath is the admin API route that answers usage reports from the
// memory sink of the running gateway.
const ReportPath = "/tenant_usage/report"

// adminAPI serves the memory sink's usage on Caddy's admin endpoint, for
// `caddy tenant usage report` without a database:
//
//	GET /tenant_usage/report?org=ID&from=RFC3339&to=RFC3339&by=minute|hour|day&group_by=key,service,outcome
//
// from defaults to 24 hours ago, to to now, by to hour.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.tenant_usage",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes implements caddy.AdminRouter.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: ReportPath, Handler: caddy.AdminHandlerFunc(a.report)}}
}

// ReportResponse is the admin API's answer.
type ReportResponse struct {
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
	var p *pipeline
	pipelinePool.Range(func(_, v any) bool {
		p, _ = v.(*pipeline)
		return false
	})
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
	return json.NewEncoder(w).Encode(ReportResponse{Sink: "memory", Rows: rows})
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

// Interface guard
var _ caddy.AdminRouter = adminAPI{}

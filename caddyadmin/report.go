package caddyadmin

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/usagestore"
)

// tenant_usage_report lives here, beside tenant_admin, because it answers
// with the same two readers as the admin API's usage and limits routes:
// the usage report and the limiter's live state.

func init() {
	caddy.RegisterModule(UsageReport{})
}

// UsageReport answers the calling tenant's own usage and limits: today's
// and this month's requests, outcomes and bytes, per key; its current
// limits and what is left of them. It must run after tenant_auth (and
// after tenant_ratelimit, so the call itself is counted like any other);
// the organization is always the caller's, whatever the request says.
type UsageReport struct {
	// DatabaseURL is the usage database to read: a PostgreSQL connection
	// string, URL or key=value form. Placeholders such as
	// {env.USAGE_DATABASE_URL} are expanded. Default: none (what this
	// process's usage pipeline writes to: its memory store, or its
	// postgres sink's database).
	DatabaseURL string `json:"database_url,omitempty"`

	usage    *usageSource
	registry *tenant.Registry
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (UsageReport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.tenant_usage_report",
		New: func() caddy.Module { return new(UsageReport) },
	}
}

// Provision sets up the usage source and finds the config's registry,
// through which it reads the rate limiter's live state.
func (u *UsageReport) Provision(ctx caddy.Context) error {
	u.logger = ctx.Logger()
	var err error
	if u.registry, err = tenant.RegistryFromContext(ctx); err != nil {
		return fmt.Errorf("tenant_usage_report: %w", err)
	}
	if u.usage, err = newUsageSource(caddy.NewReplacer().ReplaceKnown(u.DatabaseURL, ""), nil); err != nil {
		return fmt.Errorf("tenant_usage_report: database_url: %w", err)
	}
	return nil
}

// Cleanup releases the usage database's pool.
func (u *UsageReport) Cleanup() error {
	if u.usage != nil {
		return u.usage.release()
	}
	return nil
}

// tenantReport is the answer.
type tenantReport struct {
	OrgID string `json:"organization_id"`
	Plan  string `json:"plan"`
	// KeyID is the key that made this call.
	KeyID string `json:"key_id"`
	// Limits is the limiter's live state; null without tenant_ratelimit.
	Limits *tenant.LimitState `json:"limits"`
	Today  usagePeriod        `json:"today"`
	Month  usagePeriod        `json:"month"`
	// Source is where the usage was read: "postgres", or "memory" (this
	// gateway's own store, which keeps the last 24 hours only).
	Source      string    `json:"source"`
	GeneratedAt time.Time `json:"generated_at"`
}

// usagePeriod is the usage of one period: totals, and per key.
type usagePeriod struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	usagestore.Totals
	Keys []keyUsage `json:"keys"`
}

// keyUsage is one key's counts in a period.
type keyUsage struct {
	KeyID string `json:"key_id"`
	usagestore.Totals
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. It answers the request
// itself. Nothing of the request but its identity is read.
func (u *UsageReport) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	tr := tenant.RequestFromContext(r.Context())
	if tr == nil || tr.Identity == nil {
		rid := ""
		if tr != nil {
			rid = tr.ID
		}
		u.logger.Error("request reached tenant_usage_report without a tenant identity: tenant_auth must run before it in the same route")
		return tenant.WriteError(w, http.StatusInternalServerError, "internal server error: usage report is misconfigured", nil, rid)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return tenant.WriteError(w, http.StatusMethodNotAllowed, "method not allowed: use GET", nil, tr.ID)
	}
	id := tr.Identity
	now := time.Now().UTC()
	day := usagestore.Day.Truncate(now)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	q := usagestore.ReportQuery{OrgID: id.OrgID, From: month, To: now.Add(time.Nanosecond), Granularity: usagestore.Day,
		GroupBy: []usagestore.Dimension{usagestore.ByKey}}
	rows, source, err := u.usage.report(r.Context(), q)
	if err != nil {
		return u.fail(w, tr, err)
	}
	rep := tenantReport{OrgID: id.OrgID, Plan: id.Plan, KeyID: id.KeyID, Source: source, GeneratedAt: now,
		Today: period(rows, day, now), Month: period(rows, month, now)}
	if u.registry.Limiter() != nil {
		st, err := peekLimits(r.Context(), u.registry, id)
		if err != nil {
			return u.fail(w, tr, err)
		}
		rep.Limits = &st
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return u.fail(w, tr, err)
	}
	writeRaw(w, http.StatusOK, body)
	return nil
}

// fail answers an error in the envelope with the request's ID.
func (u *UsageReport) fail(w http.ResponseWriter, tr *tenant.Request, err error) error {
	e := storeError(err)
	if e.status >= 500 {
		u.logger.Error("usage report failed", zap.String("request_id", tr.ID), zap.Error(err))
	}
	return tenant.WriteError(w, e.status, e.msg, nil, tr.ID)
}

// period sums the daily per-key rows from `from` on.
func period(rows []usagestore.ReportRow, from, to time.Time) usagePeriod {
	p := usagePeriod{From: from, To: to, Keys: []keyUsage{}}
	byKey := make(map[string]*keyUsage)
	for i := range rows {
		r := &rows[i]
		if r.Bucket.Before(from) {
			continue
		}
		p.Add(&r.Totals)
		k := byKey[r.KeyID]
		if k == nil {
			k = &keyUsage{KeyID: r.KeyID}
			byKey[r.KeyID] = k
		}
		k.Add(&r.Totals)
	}
	for _, k := range byKey {
		p.Keys = append(p.Keys, *k)
	}
	slices.SortFunc(p.Keys, func(a, b keyUsage) int {
		return cmp.Or(cmp.Compare(b.Requests, a.Requests), strings.Compare(a.KeyID, b.KeyID))
	})
	return p
}

// Interface guards
var (
	_ caddy.Provisioner           = (*UsageReport)(nil)
	_ caddy.CleanerUpper          = (*UsageReport)(nil)
	_ caddyhttp.MiddlewareHandler = (*UsageReport)(nil)
)

package caddyadmin

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5/pgxpool"
)

// usageSource answers usage reports. (Filled in once the usage store is
// merged.)
type usageSource struct{}

func newUsageSource(caddy.Context, string, *pgxpool.Pool) (*usageSource, error) {
	return &usageSource{}, nil
}

func (*usageSource) release() error { return nil }

func (a *TenantAdmin) orgUsage(c *call) (*reply, error) {
	return nil, &apiError{status: http.StatusServiceUnavailable, msg: "usage is not available yet"}
}

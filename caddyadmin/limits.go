package caddyadmin

import (
	"context"
	"errors"
	"net/http"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/keystore"
)

// orgLimits is the answer of GET /v1/orgs/{id}/limits: the limiter's
// live state of the organization.
type orgLimits struct {
	OrgID string `json:"organization_id"`
	tenant.LimitState
}

// orgLimits reads the limiter's live state of an organization, under its
// plan and overrides. Reading it consumes nothing.
func (a *TenantAdmin) orgLimits(c *call) (*reply, error) {
	id, err := pathID(c.r, "organization")
	if err != nil {
		return nil, err
	}
	o, err := c.admin().GetOrg(c.r.Context(), id)
	if err != nil {
		return nil, err
	}
	st, err := peekLimits(c.r.Context(), a.registry, tenant.NewIdentity(o.ID, o.Plan, "", overrides(o.Limits)))
	if err != nil {
		return nil, err
	}
	return jsonReply(http.StatusOK, orgLimits{OrgID: o.ID, LimitState: st})
}

// peekLimits reads the live state from the config's rate limiter.
func peekLimits(ctx context.Context, reg *tenant.Registry, id *tenant.Identity) (tenant.LimitState, error) {
	l := reg.Limiter()
	if l == nil {
		return tenant.LimitState{}, &apiError{status: http.StatusServiceUnavailable,
			msg: "no rate limiter: this configuration has no tenant_ratelimit, so there is no live state to read"}
	}
	st, err := l.PeekLimits(ctx, id)
	switch {
	case errors.Is(err, tenant.ErrNoPlanLimits):
		return st, &apiError{status: http.StatusConflict, msg: "the organization's plan " + id.Plan + " has no limits in tenant_ratelimit: add a plan line for it"}
	case err != nil:
		return st, &apiError{status: http.StatusServiceUnavailable, msg: "the rate limiter's state cannot be read now: retry later", cause: err}
	}
	return st, nil
}

// overrides converts an organization's limit overrides to the form the
// limiter reads from tenant_auth's identities.
func overrides(l keystore.Limits) tenant.LimitOverrides {
	var o tenant.LimitOverrides
	if l.PerMinute != nil {
		o.PerMinute = *l.PerMinute
	}
	if l.PerDay != nil {
		o.PerDay = *l.PerDay
	}
	if l.Burst != nil {
		o.Burst, o.BurstSet = *l.Burst, true
	}
	return o
}

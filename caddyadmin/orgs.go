package caddyadmin

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/tenantgate/tenantgate/keystore"
)

// maxPageSize bounds the limit of a list.
const maxPageSize = keystore.MaxPageSize

// orgBody is the body of POST /v1/orgs and PATCH /v1/orgs/{id}. Fields are
// decoded one by one, so that a wrong type names its field and PATCH can
// tell an absent field (unchanged) from null (back to the plan's value).
type orgBody struct {
	Name      json.RawMessage `json:"name"`
	Plan      json.RawMessage `json:"plan"`
	PerMinute json.RawMessage `json:"rate_limit_per_minute"`
	PerDay    json.RawMessage `json:"rate_limit_per_day"`
	Burst     json.RawMessage `json:"burst"`
	Disabled  json.RawMessage `json:"disabled"` // PATCH only
}

// limitFields are the limit overrides of a body, each with its presence.
type limitFields struct {
	values  keystore.Limits
	present bool // at least one was given
}

func (b *orgBody) limits(base keystore.Limits) (limitFields, error) {
	lf := limitFields{values: base}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		into **int64
	}{{"rate_limit_per_minute", b.PerMinute, &lf.values.PerMinute}, {"rate_limit_per_day", b.PerDay, &lf.values.PerDay}, {"burst", b.Burst, &lf.values.Burst}} {
		v, present, err := field[int64](f.name, f.raw, "a whole number or null")
		if err != nil {
			return lf, err
		}
		if present {
			*f.into, lf.present = v, true
		}
	}
	return lf, nil
}

// checkPlan refuses a plan the config's rate limiter has no limits for
// (any well-formed plan is accepted when the config has no limiter).
func (a *TenantAdmin) checkPlan(plan string) error {
	l := a.registry.Limiter()
	if l == nil {
		return nil
	}
	known := l.PlanNames()
	if slices.Contains(known, plan) {
		return nil
	}
	shown := plan
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	return invalidField("plan", "unknown plan %q: tenant_ratelimit knows %s", shown, strings.Join(known, ", "))
}

func (a *TenantAdmin) listOrgs(c *call) (*reply, error) {
	cursor, limit, err := pageParams(c.r)
	if err != nil {
		return nil, err
	}
	orgs, next, err := c.admin().ListOrgs(c.r.Context(), cursor, limit)
	if err != nil {
		return nil, cursorError(err, cursor)
	}
	return jsonReply(http.StatusOK, newPage(orgs, next))
}

func (a *TenantAdmin) createOrg(c *call) (*reply, error) {
	var b orgBody
	if err := decodeBody(c.body, &b); err != nil {
		return nil, err
	}
	if b.Disabled != nil {
		return nil, badField("disabled", `unknown field "disabled": create the organization, then PATCH it`)
	}
	name, _, err := field[string]("name", b.Name, "a string")
	if err != nil {
		return nil, err
	}
	if name == nil {
		return nil, invalidField("name", "name is required")
	}
	in := keystore.OrgInput{Name: *name, Plan: defaultPlan}
	plan, _, err := field[string]("plan", b.Plan, "a string")
	if err != nil {
		return nil, err
	}
	if plan != nil {
		in.Plan = *plan
	}
	if err := a.checkPlan(in.Plan); err != nil {
		return nil, err
	}
	lf, err := b.limits(keystore.Limits{})
	if err != nil {
		return nil, err
	}
	in.Limits = lf.values
	o, err := c.admin().CreateOrg(c.r.Context(), in)
	if err != nil {
		return nil, err
	}
	rep, err := jsonReply(http.StatusCreated, o)
	if err == nil {
		rep.location, rep.orgID = "/v1/orgs/"+o.ID, o.ID
	}
	return rep, err
}

// defaultPlan is an organization's plan when none is given, as for `caddy
// tenant org create`.
const defaultPlan = "basic"

func (a *TenantAdmin) getOrg(c *call) (*reply, error) {
	id, err := pathID(c.r, "organization")
	if err != nil {
		return nil, err
	}
	o, err := c.admin().GetOrg(c.r.Context(), id)
	if err != nil {
		return nil, err
	}
	return jsonReply(http.StatusOK, o)
}

// updateOrg changes what the body names, in one serializable transaction:
// name, plan, any limit override (null: back to the plan's), disabled.
func (a *TenantAdmin) updateOrg(c *call) (*reply, error) {
	id, err := pathID(c.r, "organization")
	if err != nil {
		return nil, err
	}
	var b orgBody
	if err := decodeBody(c.body, &b); err != nil {
		return nil, err
	}
	var u keystore.OrgUpdate
	if u.Name, _, err = field[string]("name", b.Name, "a string"); err != nil {
		return nil, err
	}
	if b.Name != nil && u.Name == nil {
		return nil, invalidField("name", "name cannot be null")
	}
	if u.Plan, _, err = field[string]("plan", b.Plan, "a string"); err != nil {
		return nil, err
	}
	if b.Plan != nil && u.Plan == nil {
		return nil, invalidField("plan", "plan cannot be null")
	}
	if u.Plan != nil {
		if err := a.checkPlan(*u.Plan); err != nil {
			return nil, err
		}
	}
	disabled, _, err := field[bool]("disabled", b.Disabled, "true or false")
	if err != nil {
		return nil, err
	}
	if b.Disabled != nil && disabled == nil {
		return nil, invalidField("disabled", "disabled cannot be null")
	}
	ctx, admin := c.r.Context(), c.admin()
	cur, err := admin.GetOrg(ctx, id)
	if err != nil {
		return nil, err
	}
	lf, err := b.limits(cur.Limits)
	if err != nil {
		return nil, err
	}
	if lf.present {
		u.Limits = &lf.values
	}
	o, err := admin.UpdateOrg(ctx, id, u)
	if err != nil {
		return nil, err
	}
	switch {
	case disabled != nil && *disabled:
		o, err = admin.DisableOrg(ctx, id)
	case disabled != nil:
		o, err = admin.EnableOrg(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	return jsonReply(http.StatusOK, o)
}

// cursorError makes the store's refusal of a malformed cursor a 400 naming
// the parameter.
func cursorError(err error, cursor string) error {
	if e := storeError(err); e.status == http.StatusUnprocessableEntity && cursor != "" {
		return badField("cursor", "malformed page cursor: pass the next_cursor of the previous page")
	}
	return err
}

package caddyadmin

import (
	"encoding/json"
	"net/http"

	"github.com/tenantgate/tenantgate/keystore"
)

// keyBody is the body of POST /v1/orgs/{id}/keys.
type keyBody struct {
	Name      json.RawMessage `json:"name"`
	Plan      json.RawMessage `json:"plan"`
	ExpiresIn json.RawMessage `json:"expires_in"`
	Test      json.RawMessage `json:"test"`
}

// rotateBody is the body of POST /v1/keys/{id}/rotate.
type rotateBody struct {
	Grace     json.RawMessage `json:"grace"`
	ExpiresIn json.RawMessage `json:"expires_in"`
}

func (a *TenantAdmin) listKeys(c *call) (*reply, error) {
	orgID, err := pathID(c.r, "organization")
	if err != nil {
		return nil, err
	}
	cursor, limit, err := pageParams(c.r)
	if err != nil {
		return nil, err
	}
	keys, next, err := c.admin().ListKeys(c.r.Context(), orgID, cursor, limit)
	if err != nil {
		return nil, cursorError(err, cursor)
	}
	return jsonReply(http.StatusOK, newPage(keys, next))
}

// createKey creates a key; its answer is the only time the key is shown.
func (a *TenantAdmin) createKey(c *call) (*reply, error) {
	orgID, err := pathID(c.r, "organization")
	if err != nil {
		return nil, err
	}
	var b keyBody
	if err := decodeBody(c.body, &b); err != nil {
		return nil, err
	}
	in := keystore.KeyInput{OrgID: orgID}
	name, _, err := field[string]("name", b.Name, "a string")
	if err != nil {
		return nil, err
	}
	if name == nil {
		return nil, invalidField("name", "name is required")
	}
	in.Name = *name
	if in.Plan, _, err = field[string]("plan", b.Plan, "a string"); err != nil {
		return nil, err
	}
	if in.Plan != nil {
		if err := a.checkPlan(*in.Plan); err != nil {
			return nil, err
		}
	}
	if in.ExpiresIn, _, err = durationField("expires_in", b.ExpiresIn, false); err != nil {
		return nil, err
	}
	test, _, err := field[bool]("test", b.Test, "true or false")
	if err != nil {
		return nil, err
	}
	in.Test = test != nil && *test
	k, err := c.admin().CreateKey(c.r.Context(), in)
	if err != nil {
		return nil, err
	}
	rep, err := jsonReply(http.StatusCreated, k)
	if err == nil {
		rep.location, rep.orgID, rep.keyID = "/v1/keys/"+k.ID, k.OrgID, k.ID
	}
	return rep, err
}

func (a *TenantAdmin) getKey(c *call) (*reply, error) {
	id, err := pathID(c.r, "key")
	if err != nil {
		return nil, err
	}
	k, err := c.admin().GetKey(c.r.Context(), id)
	if err != nil {
		return nil, err
	}
	return jsonReply(http.StatusOK, k)
}

// revokeKey revokes a key; gateways refuse it at once. The body, if any,
// must be an empty object.
func (a *TenantAdmin) revokeKey(c *call) (*reply, error) {
	id, err := pathID(c.r, "key")
	if err != nil {
		return nil, err
	}
	if err := decodeBody(c.body, &struct{}{}); err != nil {
		return nil, err
	}
	k, err := c.admin().RevokeKey(c.r.Context(), id)
	if err != nil {
		return nil, err
	}
	rep, err := jsonReply(http.StatusOK, k)
	if err == nil {
		rep.orgID, rep.keyID = k.OrgID, k.ID
	}
	return rep, err
}

// rotateKey creates a replacement key (shown once) and lets the old one
// work for the grace period.
func (a *TenantAdmin) rotateKey(c *call) (*reply, error) {
	id, err := pathID(c.r, "key")
	if err != nil {
		return nil, err
	}
	var b rotateBody
	if err := decodeBody(c.body, &b); err != nil {
		return nil, err
	}
	opts := keystore.RotateOptions{Grace: keystore.DefaultRotateGrace}
	grace, present, err := durationField("grace", b.Grace, true)
	if err != nil {
		return nil, err
	}
	if present {
		opts.Grace = grace
	}
	if opts.ExpiresIn, _, err = durationField("expires_in", b.ExpiresIn, false); err != nil {
		return nil, err
	}
	rot, err := c.admin().RotateKey(c.r.Context(), id, opts)
	if err != nil {
		return nil, err
	}
	rep, err := jsonReply(http.StatusCreated, rot)
	if err == nil {
		rep.location, rep.orgID, rep.keyID = "/v1/keys/"+rot.ID, rot.OrgID, id
	}
	return rep, err
}

package caddyauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Organization is a tenant as the CLI shows it.
type Organization struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Plan      string     `json:"plan_tier"`
	PerMinute *int64     `json:"rate_limit_per_minute"`
	PerDay    *int64     `json:"rate_limit_per_day"`
	Burst     *int64     `json:"burst"`
	CreatedAt time.Time  `json:"created_at"`
	Disabled  *time.Time `json:"disabled_at"`
}

// APIKey is a key as the CLI shows it: never the key itself, never its hash.
type APIKey struct {
	ID      string     `json:"id"`
	OrgID   string     `json:"organization_id"`
	Name    string     `json:"name"`
	Prefix  string     `json:"prefix"`
	Plan    *string    `json:"plan_tier"` // the key's own plan; nil: the organization's
	Status  string     `json:"status"`    // active, expired or revoked
	Created time.Time  `json:"created_at"`
	Expires *time.Time `json:"expires_at"`
	Revoked *time.Time `json:"revoked_at"`
	// LastUsed is api_keys.last_used_at: the second of the key's latest
	// accepted request, as the gateways record it (about a minute late);
	// nil if it was never used.
	LastUsed *time.Time `json:"last_used_at"`
}

// NewAPIKey is a key just created: the only time the key is shown.
type NewAPIKey struct {
	Key string `json:"key"`
	APIKey
}

// orgInput is what `org create` asks for; nil limits use the plan's.
type orgInput struct {
	Name                     string
	Plan                     string
	PerMinute, PerDay, Burst *int64
}

// keyInput is what `key create` asks for.
type keyInput struct {
	OrgID     string
	Name      string
	Plan      *string
	ExpiresIn time.Duration // 0: never
	Test      bool
}

const (
	orgColumns = `id::text, name, plan_tier, rate_limit_per_minute, rate_limit_per_day, burst, created_at, disabled_at`
	apiKeyCols = `id::text, organization_id::text, name, key_prefix, plan_tier,
		CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'active' END,
		created_at, expires_at, revoked_at, last_used_at`
)

// db is what the admin operations need: a connection or a transaction.
type db interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func scanOrg(row pgx.CollectableRow) (Organization, error) {
	var o Organization
	err := row.Scan(&o.ID, &o.Name, &o.Plan, &o.PerMinute, &o.PerDay, &o.Burst, &o.CreatedAt, &o.Disabled)
	return o, err
}

func scanAPIKey(row pgx.CollectableRow) (APIKey, error) {
	var k APIKey
	err := row.Scan(&k.ID, &k.OrgID, &k.Name, &k.Prefix, &k.Plan, &k.Status, &k.Created, &k.Expires, &k.Revoked, &k.LastUsed)
	return k, err
}

// one runs a query that returns exactly one row; notFound is returned
// when it returns none.
func one[T any](ctx context.Context, q db, scan pgx.RowToFunc[T], notFound error, sql string, args ...any) (T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, notFound
	}
	return v, err
}

func createOrg(ctx context.Context, q db, in orgInput) (Organization, error) {
	return one(ctx, q, scanOrg, nil, `INSERT INTO organizations (name, plan_tier, rate_limit_per_minute, rate_limit_per_day, burst)
		VALUES ($1, $2, $3, $4, $5) RETURNING `+orgColumns, in.Name, in.Plan, in.PerMinute, in.PerDay, in.Burst)
}

func listOrgs(ctx context.Context, q db) ([]Organization, error) {
	rows, err := q.Query(ctx, `SELECT `+orgColumns+` FROM organizations ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanOrg)
}

// disableOrg disables an organization; disabling it again changes nothing.
func disableOrg(ctx context.Context, q db, id string) (Organization, error) {
	return one(ctx, q, scanOrg, unknownOrg(id), `UPDATE organizations SET disabled_at = coalesce(disabled_at, now())
		WHERE id = $1 RETURNING `+orgColumns, id)
}

// createKey creates a key for an enabled organization.
func createKey(ctx context.Context, conn *pgx.Conn, in keyInput) (NewAPIKey, error) {
	var out NewAPIKey
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := checkOrgUsable(ctx, tx, in.OrgID); err != nil {
			return err
		}
		var err error
		out, err = insertKey(ctx, tx, in)
		return err
	})
	return out, err
}

// checkOrgUsable locks the organization against concurrent disabling and
// refuses unknown or disabled ones.
func checkOrgUsable(ctx context.Context, q db, orgID string) error {
	var disabled *time.Time
	err := q.QueryRow(ctx, `SELECT disabled_at FROM organizations WHERE id = $1 FOR SHARE`, orgID).Scan(&disabled)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return unknownOrg(orgID)
	case err != nil:
		return err
	case disabled != nil:
		return fmt.Errorf("organization %s is disabled (since %s)", orgID, disabled.UTC().Format(time.RFC3339))
	}
	return nil
}

func insertKey(ctx context.Context, q db, in keyInput) (NewAPIKey, error) {
	key, err := GenerateKey(in.Test)
	if err != nil {
		return NewAPIKey{}, err
	}
	h := HashKey(key)
	var expiresIn *float64
	if in.ExpiresIn > 0 {
		secs := in.ExpiresIn.Seconds()
		expiresIn = &secs
	}
	k, err := one(ctx, q, scanAPIKey, nil, `INSERT INTO api_keys (organization_id, name, key_prefix, key_hash, plan_tier, expires_at)
		VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::float8)) RETURNING `+apiKeyCols,
		in.OrgID, in.Name, DisplayPrefix(key), h[:], in.Plan, expiresIn)
	return NewAPIKey{Key: key, APIKey: k}, err
}

func listKeys(ctx context.Context, conn *pgx.Conn, orgID string) ([]APIKey, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)`, orgID).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, unknownOrg(orgID)
	}
	rows, err := conn.Query(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE organization_id = $1 ORDER BY created_at, id`, orgID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanAPIKey)
}

// revokeKey revokes a key; revoking it again changes nothing.
func revokeKey(ctx context.Context, q db, id string) (APIKey, error) {
	return one(ctx, q, scanAPIKey, unknownKey(id), `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
		WHERE id = $1 RETURNING `+apiKeyCols, id)
}

// rotateKey creates a key with the old key's organization, name and plan,
// and makes the old one expire after grace (or at its own expiry if that
// comes first). The new key is a test key if the old one was. Revoked or
// expired keys cannot be rotated.
func rotateKey(ctx context.Context, conn *pgx.Conn, id string, grace, expiresIn time.Duration) (NewAPIKey, APIKey, error) {
	var fresh NewAPIKey
	var old APIKey
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		old, err = one(ctx, tx, scanAPIKey, unknownKey(id), `SELECT `+apiKeyCols+` FROM api_keys WHERE id = $1 FOR UPDATE`, id)
		if err != nil {
			return err
		}
		if old.Status != "active" {
			return fmt.Errorf("key %s is %s: create a new key instead", id, old.Status)
		}
		if err := checkOrgUsable(ctx, tx, old.OrgID); err != nil {
			return err
		}
		fresh, err = insertKey(ctx, tx, keyInput{OrgID: old.OrgID, Name: old.Name, Plan: old.Plan, ExpiresIn: expiresIn,
			Test: strings.HasPrefix(old.Prefix, TestKeyPrefix)})
		if err != nil {
			return err
		}
		old, err = one(ctx, tx, scanAPIKey, unknownKey(id), `UPDATE api_keys
			SET expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => $2::float8))
			WHERE id = $1 RETURNING `+apiKeyCols, id, grace.Seconds())
		return err
	})
	return fresh, old, err
}

func unknownOrg(id string) error { return fmt.Errorf("unknown organization %s", id) }
func unknownKey(id string) error { return fmt.Errorf("unknown API key %s", id) }

package keystore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Errors of the admin operations, for callers to map to a status: an
// operation's error wraps one of them (test with errors.Is) and its
// message says what is wrong.
var (
	// ErrNotFound: the organization or key does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the operation does not fit the current state, such as
	// a key created for a disabled organization, or a key rotated twice (409).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input is malformed or out of range (422).
	ErrInvalid = errors.New("invalid input")
	// ErrSchemaMissing: the database has no (or an older) Tenantgate
	// schema; `caddy tenant migrate` fixes it (503 for an API).
	ErrSchemaMissing = errors.New("schema missing")
)

// opError is an admin operation's error: a kind (one of the errors above),
// a message for people, and the underlying cause if any.
type opError struct {
	kind  error
	msg   string
	cause error
}

func (e *opError) Error() string { return e.msg }

func (e *opError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

func errorf(kind error, format string, args ...any) error {
	return &opError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// dbError gives a database error its kind and some context.
func dbError(what string, err error) error {
	var pgErr *pgconn.PgError
	var op *opError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &op):
		return err
	case isSchemaMissing(err):
		return &opError{kind: ErrSchemaMissing, msg: "the database has no Tenantgate schema (or an older one): run `caddy tenant migrate` first", cause: err}
	case errors.As(err, &pgErr) && pgErr.Code == "23514": // check_violation
		return &opError{kind: ErrInvalid, msg: fmt.Sprintf("%s: a value is out of range (%s)", what, pgErr.ConstraintName), cause: err}
	case errors.As(err, &pgErr) && pgErr.Code == "23505": // unique_violation
		return &opError{kind: ErrConflict, msg: fmt.Sprintf("%s: already exists (%s)", what, pgErr.ConstraintName), cause: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Organization is a tenant as the CLI and the admin API show it.
type Organization struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Plan string `json:"plan_tier"`
	Limits
	CreatedAt time.Time  `json:"created_at"`
	Disabled  *time.Time `json:"disabled_at"`
}

// Limits are an organization's overrides of its plan's limits; nil uses
// the plan's.
type Limits struct {
	PerMinute *int64 `json:"rate_limit_per_minute"`
	PerDay    *int64 `json:"rate_limit_per_day"`
	Burst     *int64 `json:"burst"`
}

// APIKey is a key as the CLI and the admin API show it: never the key
// itself, never its hash.
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
	// ReplacedBy is the ID of the key that replaced this one (RotateKey).
	ReplacedBy *string `json:"replaced_by"`
}

// NewAPIKey is a key just created: the only time the key is shown.
type NewAPIKey struct {
	Key string `json:"key"`
	APIKey
}

// Rotation is what RotateKey did: the new key, and the old one it replaces.
type Rotation struct {
	NewAPIKey
	Replaces APIKey `json:"replaces"`
}

// OrgInput is a new organization.
type OrgInput struct {
	Name string
	// Plan is the plan tier; which plans exist is the caller's business
	// (the limiter's configuration), its form is checked here.
	Plan string
	Limits
}

// OrgUpdate changes an organization; nil fields stay as they are.
type OrgUpdate struct {
	Name *string
	Plan *string
	// Limits, when not nil, replaces every limit override: its nil fields
	// go back to the plan's.
	Limits *Limits
}

// KeyInput is a new API key.
type KeyInput struct {
	OrgID string
	Name  string
	// Plan is the key's own plan; nil: the organization's.
	Plan *string
	// ExpiresIn makes the key expire that long after its creation; 0: never.
	ExpiresIn time.Duration
	// Test makes an sk_test_ key instead of sk_live_.
	Test bool
}

// DefaultRotateGrace is how long a rotated key keeps working when the
// rotation does not say (`caddy tenant key rotate`, the admin API's
// rotate), so that clients can switch to the new key without downtime.
const DefaultRotateGrace = 24 * time.Hour

// RotateOptions are RotateKey's options.
type RotateOptions struct {
	// Grace is how long the old key keeps working; 0 ends it now. It never
	// extends the old key's own expiry.
	Grace time.Duration
	// ExpiresIn makes the new key expire that long from now; 0: the new
	// key expires when the old one was due to (never if it was not).
	ExpiresIn time.Duration
}

// Page sizes of ListOrgs and ListKeys.
const (
	defaultPageSize = 100
	MaxPageSize     = 1000
)

// MaxNameLen bounds organization and key names (the schema checks it too).
const MaxNameLen = 200

// DB is what the admin operations run on: a *pgxpool.Pool (a gateway, an
// admin API) or a *pgx.Conn (the CLI).
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Admin manages organizations and API keys: the operations behind
// `caddy tenant` and any admin API. Input is checked first: bad input
// changes nothing. Every change is announced to the gateways by the
// schema's triggers, so revocations and disablings apply at once.
type Admin struct {
	db DB
}

// NewAdmin returns the admin operations on db.
func NewAdmin(db DB) *Admin { return &Admin{db: db} }

const (
	orgColumns = `id::text, name, plan_tier, rate_limit_per_minute, rate_limit_per_day, burst, created_at, disabled_at`
	apiKeyCols = `id::text, organization_id::text, name, key_prefix, plan_tier,
		CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'active' END,
		created_at, expires_at, revoked_at, last_used_at, replaced_by::text`
)

// querier is what a single statement needs: a DB or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func scanOrg(row pgx.CollectableRow) (Organization, error) {
	var o Organization
	err := row.Scan(&o.ID, &o.Name, &o.Plan, &o.PerMinute, &o.PerDay, &o.Burst, &o.CreatedAt, &o.Disabled)
	return o, err
}

func scanAPIKey(row pgx.CollectableRow) (APIKey, error) {
	var k APIKey
	err := row.Scan(&k.ID, &k.OrgID, &k.Name, &k.Prefix, &k.Plan, &k.Status, &k.Created, &k.Expires, &k.Revoked,
		&k.LastUsed, &k.ReplacedBy)
	return k, err
}

// one runs a query that returns exactly one row; notFound is returned
// when it returns none.
func one[T any](ctx context.Context, q querier, scan pgx.RowToFunc[T], notFound error, sql string, args ...any) (T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) && notFound != nil {
		return v, notFound
	}
	return v, err
}

// CreateOrg creates an organization.
func (a *Admin) CreateOrg(ctx context.Context, in OrgInput) (Organization, error) {
	name, err := CheckName("organization", in.Name)
	if err != nil {
		return Organization{}, err
	}
	if err := checkPlan(in.Plan); err != nil {
		return Organization{}, err
	}
	if err := in.Limits.check(); err != nil {
		return Organization{}, err
	}
	o, err := one(ctx, a.db, scanOrg, nil, `INSERT INTO organizations (name, plan_tier, rate_limit_per_minute, rate_limit_per_day, burst)
		VALUES ($1, $2, $3, $4, $5) RETURNING `+orgColumns, name, in.Plan, in.PerMinute, in.PerDay, in.Burst)
	return o, dbError("creating the organization", err)
}

// GetOrg returns an organization.
func (a *Admin) GetOrg(ctx context.Context, id string) (Organization, error) {
	id, err := checkID("organization", id)
	if err != nil {
		return Organization{}, err
	}
	o, err := one(ctx, a.db, scanOrg, unknownOrg(id), `SELECT `+orgColumns+` FROM organizations WHERE id = $1`, id)
	return o, dbError("reading the organization", err)
}

// ListOrgs returns up to limit organizations (0: 100, at most
// MaxPageSize), oldest first, after cursor ("" for the first page), and
// the cursor of the next page ("" after the last).
func (a *Admin) ListOrgs(ctx context.Context, cursor string, limit int) ([]Organization, string, error) {
	after, err := parsePage(cursor, &limit)
	if err != nil {
		return nil, "", err
	}
	rows, err := a.db.Query(ctx, `SELECT `+orgColumns+` FROM organizations
		WHERE $1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid)
		ORDER BY created_at, id LIMIT $3`, after.at, after.id, limit+1)
	if err != nil {
		return nil, "", dbError("listing organizations", err)
	}
	orgs, err := pgx.CollectRows(rows, scanOrg)
	if err != nil {
		return nil, "", dbError("listing organizations", err)
	}
	orgs, next := nextPage(orgs, limit, func(o Organization) pageKey { return pageKey{o.CreatedAt, o.ID} })
	return orgs, next, nil
}

// UpdateOrg changes an organization's name, plan or limit overrides.
// Gateways apply the change at once. An update that changes nothing
// returns the organization as it is.
func (a *Admin) UpdateOrg(ctx context.Context, id string, u OrgUpdate) (Organization, error) {
	id, err := checkID("organization", id)
	if err != nil {
		return Organization{}, err
	}
	var name *string
	if u.Name != nil {
		n, err := CheckName("organization", *u.Name)
		if err != nil {
			return Organization{}, err
		}
		name = &n
	}
	if u.Plan != nil {
		if err := checkPlan(*u.Plan); err != nil {
			return Organization{}, err
		}
	}
	var limits Limits
	if u.Limits != nil {
		if err := u.Limits.check(); err != nil {
			return Organization{}, err
		}
		limits = *u.Limits
	}
	if name == nil && u.Plan == nil && u.Limits == nil {
		return a.GetOrg(ctx, id)
	}
	o, err := one(ctx, a.db, scanOrg, unknownOrg(id), `UPDATE organizations SET
			name = coalesce($2, name), plan_tier = coalesce($3, plan_tier),
			rate_limit_per_minute = CASE WHEN $4 THEN $5 ELSE rate_limit_per_minute END,
			rate_limit_per_day    = CASE WHEN $4 THEN $6 ELSE rate_limit_per_day END,
			burst                 = CASE WHEN $4 THEN $7 ELSE burst END
		WHERE id = $1 RETURNING `+orgColumns,
		id, name, u.Plan, u.Limits != nil, limits.PerMinute, limits.PerDay, limits.Burst)
	return o, dbError("updating the organization", err)
}

// DisableOrg disables an organization: all its keys are refused at once.
// Disabling it again changes nothing.
func (a *Admin) DisableOrg(ctx context.Context, id string) (Organization, error) {
	id, err := checkID("organization", id)
	if err != nil {
		return Organization{}, err
	}
	o, err := one(ctx, a.db, scanOrg, unknownOrg(id), `UPDATE organizations SET disabled_at = coalesce(disabled_at, now())
		WHERE id = $1 RETURNING `+orgColumns, id)
	return o, dbError("disabling the organization", err)
}

// EnableOrg enables a disabled organization again: its keys that are not
// revoked or expired work again at once. Enabling an enabled organization
// changes nothing.
func (a *Admin) EnableOrg(ctx context.Context, id string) (Organization, error) {
	id, err := checkID("organization", id)
	if err != nil {
		return Organization{}, err
	}
	o, err := one(ctx, a.db, scanOrg, unknownOrg(id), `UPDATE organizations SET disabled_at = NULL
		WHERE id = $1 RETURNING `+orgColumns, id)
	return o, dbError("enabling the organization", err)
}

// CreateKey creates a key for an enabled organization and returns it: the
// only time the key is shown. Only its SHA-256 and its first 12
// characters are stored.
func (a *Admin) CreateKey(ctx context.Context, in KeyInput) (NewAPIKey, error) {
	var err error
	if in.OrgID, err = checkID("organization", in.OrgID); err != nil {
		return NewAPIKey{}, err
	}
	if in.Name, err = CheckName("key", in.Name); err != nil {
		return NewAPIKey{}, err
	}
	if in.Plan != nil {
		if err := checkPlan(*in.Plan); err != nil {
			return NewAPIKey{}, err
		}
	}
	if in.ExpiresIn < 0 {
		return NewAPIKey{}, errorf(ErrInvalid, "expires_in must not be negative")
	}
	var out NewAPIKey
	err = pgx.BeginFunc(ctx, a.db, func(tx pgx.Tx) error {
		if err := checkOrgUsable(ctx, tx, in.OrgID); err != nil {
			return err
		}
		var err error
		out, err = insertKey(ctx, tx, in, nil)
		return err
	})
	return out, dbError("creating the key", err)
}

// checkOrgUsable locks the organization against concurrent disabling and
// refuses unknown or disabled ones.
func checkOrgUsable(ctx context.Context, tx pgx.Tx, orgID string) error {
	var disabled *time.Time
	err := tx.QueryRow(ctx, `SELECT disabled_at FROM organizations WHERE id = $1 FOR SHARE`, orgID).Scan(&disabled)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return unknownOrg(orgID)
	case err != nil:
		return err
	case disabled != nil:
		return errorf(ErrConflict, "organization %s is disabled (since %s)", orgID, disabled.UTC().Format(time.RFC3339))
	}
	return nil
}

// insertKey inserts a new key. It expires ExpiresIn from now if that is
// set, else at expiresAt (nil: never).
func insertKey(ctx context.Context, q querier, in KeyInput, expiresAt *time.Time) (NewAPIKey, error) {
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
		VALUES ($1, $2, $3, $4, $5, coalesce(now() + make_interval(secs => $6::float8), $7::timestamptz)) RETURNING `+apiKeyCols,
		in.OrgID, in.Name, displayPrefix(key), h[:], in.Plan, expiresIn, expiresAt)
	return NewAPIKey{Key: key, APIKey: k}, err
}

// GetKey returns a key's metadata.
func (a *Admin) GetKey(ctx context.Context, id string) (APIKey, error) {
	id, err := checkID("key", id)
	if err != nil {
		return APIKey{}, err
	}
	k, err := one(ctx, a.db, scanAPIKey, unknownKey(id), `SELECT `+apiKeyCols+` FROM api_keys WHERE id = $1`, id)
	return k, dbError("reading the key", err)
}

// ListKeys returns up to limit keys of an organization (0: 100, at most
// MaxPageSize), oldest first, after cursor ("" for the first page), and
// the cursor of the next page ("" after the last).
func (a *Admin) ListKeys(ctx context.Context, orgID, cursor string, limit int) ([]APIKey, string, error) {
	orgID, err := checkID("organization", orgID)
	if err != nil {
		return nil, "", err
	}
	after, err := parsePage(cursor, &limit)
	if err != nil {
		return nil, "", err
	}
	var exists bool
	if err := a.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)`, orgID).Scan(&exists); err != nil {
		return nil, "", dbError("listing keys", err)
	}
	if !exists {
		return nil, "", unknownOrg(orgID)
	}
	rows, err := a.db.Query(ctx, `SELECT `+apiKeyCols+` FROM api_keys
		WHERE organization_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
		ORDER BY created_at, id LIMIT $4`, orgID, after.at, after.id, limit+1)
	if err != nil {
		return nil, "", dbError("listing keys", err)
	}
	keys, err := pgx.CollectRows(rows, scanAPIKey)
	if err != nil {
		return nil, "", dbError("listing keys", err)
	}
	keys, next := nextPage(keys, limit, func(k APIKey) pageKey { return pageKey{k.Created, k.ID} })
	return keys, next, nil
}

// RevokeKey revokes a key: gateways refuse it at once. Revoking it again
// changes nothing.
func (a *Admin) RevokeKey(ctx context.Context, id string) (APIKey, error) {
	id, err := checkID("key", id)
	if err != nil {
		return APIKey{}, err
	}
	k, err := one(ctx, a.db, scanAPIKey, unknownKey(id), `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
		WHERE id = $1 RETURNING `+apiKeyCols, id)
	return k, dbError("revoking the key", err)
}

// RotateKey creates a replacement for an active key, with the old key's
// organization, name and plan (a test key if it was one), and makes the
// old key expire after opts.Grace (or at its own expiry if that comes
// first). The replacement expires when the old key was due to, unless
// opts.ExpiresIn is given.
//
// A key is replaced once: rotating a key that was already rotated fails
// with ErrConflict naming its replacement (whose key was shown only when
// it was made), so running the command twice never leaves two
// replacements. Rotate the replacement instead. Revoked or expired keys
// cannot be rotated (ErrConflict); create a new key.
func (a *Admin) RotateKey(ctx context.Context, id string, opts RotateOptions) (Rotation, error) {
	id, err := checkID("key", id)
	if err != nil {
		return Rotation{}, err
	}
	if opts.Grace < 0 || opts.ExpiresIn < 0 {
		return Rotation{}, errorf(ErrInvalid, "grace and expires_in must not be negative")
	}
	var rot Rotation
	err = pgx.BeginFunc(ctx, a.db, func(tx pgx.Tx) error {
		old, err := one(ctx, tx, scanAPIKey, unknownKey(id), `SELECT `+apiKeyCols+` FROM api_keys WHERE id = $1 FOR UPDATE`, id)
		if err != nil {
			return err
		}
		if old.ReplacedBy != nil {
			return errorf(ErrConflict, "key %s was already rotated: its replacement is key %s; rotate or revoke that one instead", id, *old.ReplacedBy)
		}
		if old.Status != "active" {
			return errorf(ErrConflict, "key %s is %s: create a new key instead", id, old.Status)
		}
		if err := checkOrgUsable(ctx, tx, old.OrgID); err != nil {
			return err
		}
		fresh, err := insertKey(ctx, tx, KeyInput{OrgID: old.OrgID, Name: old.Name, Plan: old.Plan, ExpiresIn: opts.ExpiresIn,
			Test: strings.HasPrefix(old.Prefix, TestKeyPrefix)}, old.Expires)
		if err != nil {
			return err
		}
		old, err = one(ctx, tx, scanAPIKey, unknownKey(id), `UPDATE api_keys
			SET expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => $2::float8)),
			    replaced_by = $3
			WHERE id = $1 RETURNING `+apiKeyCols, id, opts.Grace.Seconds(), fresh.ID)
		rot = Rotation{NewAPIKey: fresh, Replaces: old}
		return err
	})
	return rot, dbError("rotating the key", err)
}

func unknownOrg(id string) error { return errorf(ErrNotFound, "unknown organization %s", id) }
func unknownKey(id string) error { return errorf(ErrNotFound, "unknown API key %s", id) }

// checkID checks that id is a UUID and returns its canonical form. The
// value is not echoed: it may be a key pasted by mistake.
func checkID(what, id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", errorf(ErrInvalid, "malformed %s ID: want a UUID such as 0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70", what)
	}
	return u.String(), nil
}

// CheckName trims the name of an organization or key (what) and checks it:
// 1-200 bytes, no control characters. The error is ErrInvalid.
func CheckName(what, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > MaxNameLen || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", errorf(ErrInvalid, "the %s name must be 1-%d printable characters", what, MaxNameLen)
	}
	return name, nil
}

// checkPlan checks the form of a plan name (the schema checks it too).
func checkPlan(plan string) error {
	if !tenant.ValidPlanName(plan) {
		return errorf(ErrInvalid, "plan: want 1-64 characters of letters, digits, '.', '_', '-'")
	}
	return nil
}

// check refuses limits the limiter cannot use.
func (l Limits) check() error {
	for _, f := range []struct {
		name string
		v    *int64
		min  int64
	}{{"rate_limit_per_minute", l.PerMinute, 1}, {"rate_limit_per_day", l.PerDay, 1}, {"burst", l.Burst, 0}} {
		if f.v != nil && *f.v < f.min {
			return errorf(ErrInvalid, "%s must be at least %d, got %d", f.name, f.min, *f.v)
		}
	}
	return nil
}

// pageKey is the position of a listed row: lists are ordered by
// (created_at, id), and a cursor names the last row of a page.
type pageKey struct {
	at time.Time
	id string
}

// pageStart is where a page starts: after the row a cursor names, or at
// the first row (nil fields).
type pageStart struct {
	at *time.Time
	id *string
}

// parsePage decodes a cursor ("" for the first page) and checks the page
// size, replacing 0 by defaultPageSize.
func parsePage(cursor string, limit *int) (after pageStart, err error) {
	switch {
	case *limit == 0:
		*limit = defaultPageSize
	case *limit < 0 || *limit > MaxPageSize:
		return after, errorf(ErrInvalid, "page size must be from 1 to %d, got %d", MaxPageSize, *limit)
	}
	if cursor == "" {
		return after, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	micros, id, ok := strings.Cut(string(raw), ".")
	us, perr := strconv.ParseInt(micros, 10, 64)
	if err != nil || !ok || perr != nil || uuid.Validate(id) != nil {
		return after, errorf(ErrInvalid, "malformed page cursor")
	}
	at := time.UnixMicro(us)
	after.at, after.id = &at, &id
	return after, nil
}

// nextPage trims a page read with one extra row and returns the cursor of
// the next page ("" if the extra row was not there).
func nextPage[T any](rows []T, limit int, key func(T) pageKey) ([]T, string) {
	if len(rows) <= limit {
		return rows, ""
	}
	rows = rows[:limit]
	k := key(rows[limit-1])
	return rows, base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.at.UnixMicro(), 10) + "." + k.id))
}

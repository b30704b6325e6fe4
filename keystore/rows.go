package keystore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// What the gateway reads about a key: everything that decides whether it
// is valid and the identity it acts for.
const (
	keyColumns = `k.key_hash, k.id::text, k.organization_id::text,
		coalesce(k.plan_tier, o.plan_tier), k.expires_at, k.revoked_at,
		o.disabled_at, o.rate_limit_per_minute, o.rate_limit_per_day, o.burst`
	keyFrom = ` FROM api_keys k JOIN organizations o ON o.id = k.organization_id`

	sqlKeyByHash   = `SELECT ` + keyColumns + keyFrom + ` WHERE k.key_hash = $1`
	sqlKeysByHash  = `SELECT ` + keyColumns + keyFrom + ` WHERE k.key_hash = ANY($1::bytea[])`
	sqlActiveKeys  = `SELECT ` + keyColumns + keyFrom + ` WHERE k.revoked_at IS NULL AND o.disabled_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.created_at DESC LIMIT $1`
	refreshBatchSz = 1000

	// The key filter holds every key that is not revoked, whatever its
	// organization's state or its expiry, since both can change back
	// without a notification naming the key.
	sqlCountFilterKeys = `SELECT count(*) FROM api_keys WHERE revoked_at IS NULL`
	sqlFilterKeys      = `SELECT key_hash FROM api_keys WHERE revoked_at IS NULL`
)

// keyRow is one key as read from Postgres.
type keyRow struct {
	hash                             KeyHash
	keyID, orgID, plan               string
	expiresAt, revokedAt, disabledAt pgtype.Timestamptz
	perMinute, perDay, burst         pgtype.Int8
}

func scanKeyRow(row pgx.CollectableRow) (keyRow, error) {
	var r keyRow
	var hash []byte
	err := row.Scan(&hash, &r.keyID, &r.orgID, &r.plan, &r.expiresAt, &r.revokedAt,
		&r.disabledAt, &r.perMinute, &r.perDay, &r.burst)
	if err != nil {
		return r, err
	}
	if len(hash) != len(r.hash) {
		return r, errors.New("api_keys.key_hash is not 32 bytes")
	}
	copy(r.hash[:], hash)
	return r, nil
}

// queryKey reads the key with hash h; found is false when there is none.
func queryKey(ctx context.Context, q querier, h KeyHash) (r keyRow, found bool, err error) {
	rows, err := q.Query(ctx, sqlKeyByHash, h[:])
	if err != nil {
		return r, false, err
	}
	r, err = pgx.CollectExactlyOneRow(rows, scanKeyRow)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, err
}

// queryKeys reads the keys with the given hashes (those that still exist).
func queryKeys(ctx context.Context, q querier, hashes []KeyHash) ([]keyRow, error) {
	arg := make([][]byte, len(hashes))
	for i := range hashes {
		arg[i] = hashes[i][:]
	}
	rows, err := q.Query(ctx, sqlKeysByHash, arg)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanKeyRow)
}

// forEachFilterKey streams the hash of every key that is not revoked to fn,
// reading each in place: memory does not grow with the number of keys.
func forEachFilterKey(ctx context.Context, q querier, fn func(KeyHash)) error {
	rows, err := q.Query(ctx, sqlFilterKeys)
	if err != nil {
		return err
	}
	var raw pgtype.DriverBytes
	var h KeyHash
	_, err = pgx.ForEachRow(rows, []any{&raw}, func() error {
		if len(raw) != len(h) {
			return errors.New("api_keys.key_hash is not 32 bytes")
		}
		copy(h[:], raw)
		fn(h)
		return nil
	})
	return err
}

// forEachActiveKey streams up to limit usable keys, newest first, to fn.
// A warm start may read a million keys, so rows are never collected into
// one slice, the hash is read in place (no copy per row), and organization
// IDs and plans, shared by many keys, are interned: each distinct value is
// stored once however many cached keys carry it.
func forEachActiveKey(ctx context.Context, q querier, limit int, fn func(keyRow)) error {
	rows, err := q.Query(ctx, sqlActiveKeys, limit)
	if err != nil {
		return err
	}
	var (
		r                 keyRow
		hash, orgID, plan pgtype.DriverBytes
		interned          = make(map[string]string)
	)
	intern := func(b []byte) string {
		if s, ok := interned[string(b)]; ok {
			return s
		}
		s := string(b)
		interned[s] = s
		return s
	}
	_, err = pgx.ForEachRow(rows, []any{&hash, &r.keyID, &orgID, &plan, &r.expiresAt, &r.revokedAt,
		&r.disabledAt, &r.perMinute, &r.perDay, &r.burst}, func() error {
		if len(hash) != len(r.hash) {
			return errors.New("api_keys.key_hash is not 32 bytes")
		}
		copy(r.hash[:], hash)
		r.orgID, r.plan = intern(orgID), intern(plan)
		fn(r)
		return nil
	})
	return err
}

// verdict is what the store concluded about one key hash: an entry for a
// usable key, or a rejection (unknown, revoked, expired, disabled).
type verdict struct {
	entry  keyEntry
	reject error
	orgID  string
}

// decide turns a row (or its absence) into a verdict at time now.
func decide(r keyRow, found bool, now time.Time) verdict {
	switch {
	case !found:
		return verdict{reject: ErrUnknownKey}
	case r.revokedAt.Valid:
		return verdict{reject: ErrRevokedKey, orgID: r.orgID}
	case r.disabledAt.Valid:
		return verdict{reject: ErrDisabledOrg, orgID: r.orgID}
	case r.expiresAt.Valid && !now.Before(r.expiresAt.Time):
		return verdict{reject: ErrExpiredKey, orgID: r.orgID}
	}
	limits := tenant.LimitOverrides{PerMinute: r.perMinute.Int64, PerDay: r.perDay.Int64}
	if r.burst.Valid {
		limits.Burst, limits.BurstSet = r.burst.Int64, true
	}
	e := keyEntry{rec: &cachedKey{Identity: *tenant.NewIdentity(r.orgID, r.plan, r.keyID, limits)}}
	if r.expiresAt.Valid {
		e.expiresAt = r.expiresAt.Time.UnixNano()
	}
	return verdict{entry: e, orgID: r.orgID}
}

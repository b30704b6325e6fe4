package caddyadmin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantgate/tenantgate/keystore"
)

// pools shares the admin API's connection pool per database URL across
// configs, so a reload opens no new connections. The admin API has a pool
// of its own, apart from the gateway's key store: a burst of admin calls
// never takes the connections key lookups need.
var pools = caddy.NewUsagePool()

// maxAdminConns bounds the admin API's connections to one database.
const maxAdminConns = 4

type sharedPool struct{ *pgxpool.Pool }

func (p sharedPool) Destruct() error {
	p.Close()
	return nil
}

// acquirePool returns the shared pool of dsn, creating it (without
// connecting: a database that is down at start only fails requests).
func acquirePool(dsn string) (*pgxpool.Pool, error) {
	v, _, err := pools.LoadOrNew(dsn, func() (caddy.Destructor, error) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = maxAdminConns
		if cfg.ConnConfig.ConnectTimeout == 0 {
			cfg.ConnConfig.ConnectTimeout = 5 * time.Second
		}
		if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
			cfg.ConnConfig.RuntimeParams["application_name"] = "tenantgate-admin"
		}
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			return nil, err
		}
		return sharedPool{pool}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(sharedPool).Pool, nil
}

func releasePool(dsn string) error {
	_, err := pools.Delete(dsn)
	return err
}

// storeError maps an error of the store operations to the API's answer:
// the keystore's kinds to 404, 409 and 422; a missing schema, a database
// that cannot be reached or a request that ran out of time to 503; a
// write conflict between concurrent transactions to 409; anything else to
// 500.
func storeError(err error) *apiError {
	var pgErr *pgconn.PgError
	var api *apiError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &api):
		return api
	case errors.Is(err, keystore.ErrNotFound):
		return &apiError{status: 404, msg: err.Error()}
	case errors.Is(err, keystore.ErrConflict):
		return &apiError{status: 409, msg: err.Error()}
	case errors.Is(err, keystore.ErrInvalid):
		return &apiError{status: 422, msg: err.Error()}
	case errors.Is(err, keystore.ErrSchemaMissing):
		return &apiError{status: 503, msg: err.Error(), cause: err}
	case errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42703"):
		return &apiError{status: 503, msg: "the database has no Tenantgate schema (or an older one): run `caddy tenant migrate` first", cause: err}
	case errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01"):
		return &apiError{status: 409, msg: "the resource was changed by a concurrent request: retry", cause: err}
	case errors.As(err, &pgErr):
		return &apiError{status: 500, msg: "internal error", cause: err}
	}
	// Not an answer from PostgreSQL: it could not be reached in time.
	return &apiError{status: 503, msg: "the key database is unavailable: retry later", cause: fmt.Errorf("key database: %w", err)}
}

// errNoDatabase answers the routes that need the key database when none
// is configured.
var errNoDatabase = &apiError{status: 503,
	msg: "no key database: tenant_admin has no database_url (set DATABASE_URL), so organizations and keys cannot be managed here"}

package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// errPostgresDown is the cause given for a miss while PostgreSQL is known
// to be unreachable (between retries).
var errPostgresDown = errors.New("PostgreSQL unreachable; retrying")

// pgState is what the store knows about PostgreSQL's reachability.
type pgState struct {
	// listening: the LISTEN connection is up, so changes arrive at once.
	listening atomic.Bool
	// failing: the last contact with PostgreSQL failed.
	failing atomic.Bool
	// schemaMissing: PostgreSQL answers but has no Tenantgate tables.
	schemaMissing atomic.Bool
	// retryAt (Unix ns): until then misses do not try PostgreSQL again.
	retryAt atomic.Int64
	// wake is signalled when a query succeeds while the LISTEN connection
	// is down, so that it reconnects at once instead of after its backoff.
	wake chan struct{}
	// probe is signalled when a query timed out while the LISTEN
	// connection is up, so that it checks PostgreSQL at once.
	probe chan struct{}
}

func (p *pgState) failure(now time.Time, err error) {
	if isSchemaMissing(err) {
		// PostgreSQL answered: it is not down, it needs `caddy tenant migrate`.
		p.schemaMissing.Store(true)
	} else {
		p.failing.Store(true)
	}
	p.retryAt.Store(now.Add(retryPause).UnixNano())
}

// reachable records that PostgreSQL answered.
func (p *pgState) reachable() {
	p.failing.Store(false)
	p.retryAt.Store(0)
	if !p.listening.Load() {
		signal(p.wake)
	}
}

// keyQueriesWork records that a query of the key tables succeeded.
func (p *pgState) keyQueriesWork() {
	p.schemaMissing.Store(false)
	p.reachable()
}

// pausing reports whether PostgreSQL failed so recently that a miss should
// not try it again yet.
func (p *pgState) pausing(now int64) bool {
	return (p.failing.Load() || p.schemaMissing.Load()) && now < p.retryAt.Load()
}

// isSchemaMissing reports whether err says that the key tables do not exist.
func isSchemaMissing(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42703") // undefined_table, undefined_column
}

// health is the store's readiness check: ok; degraded when keys are served
// from the cache without PostgreSQL or without change notifications; down
// when database keys cannot be checked at all (unreachable with nothing
// cached, or no schema). A handler that also serves static keys still
// serves something then, so for it down becomes degraded.
func (s *Store) health(staticKeys bool) tenant.CheckResult {
	down := func(detail string) tenant.CheckResult {
		if staticKeys {
			return tenant.CheckResult{Status: tenant.StatusDegraded, Detail: detail + "; static keys are served"}
		}
		return tenant.CheckResult{Status: tenant.StatusDown, Detail: detail}
	}
	cached := s.keys.len()
	switch {
	case s.state.schemaMissing.Load():
		return down("schema missing: run `caddy tenant migrate`; database keys get 503")
	case s.state.failing.Load() && cached == 0:
		return down("PostgreSQL unreachable and no keys cached: database keys get 503")
	case s.state.failing.Load():
		return tenant.CheckResult{Status: tenant.StatusDegraded,
			Detail: fmt.Sprintf("PostgreSQL unreachable: serving %d cached keys (stale-if-error); uncached keys get 503", cached)}
	case !s.state.listening.Load():
		return tenant.CheckResult{Status: tenant.StatusDegraded,
			Detail: "change notifications (LISTEN) not connected: reconnecting; changes apply after the resync"}
	}
	return tenant.CheckResult{Status: tenant.StatusOK}
}

// Health is the config's readiness check of the store (see Store.health).
func (h *Handle) Health(context.Context) tenant.CheckResult {
	return h.store.health(h.staticKeys)
}

package caddyauth

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// errPostgresDown is the cause given for a miss while Postgres is known to
// be unreachable (between retries).
var errPostgresDown = errors.New("PostgreSQL unreachable; retrying")

// pgState is what the store knows about Postgres's reachability.
type pgState struct {
	// listening: the LISTEN connection is up, so changes arrive at once.
	listening atomic.Bool
	// failing: the last contact with Postgres failed.
	failing atomic.Bool
	// retryAt (Unix ns): until then misses do not try Postgres again.
	retryAt atomic.Int64
}

func (s *pgState) failure(now time.Time) {
	s.failing.Store(true)
	s.retryAt.Store(now.Add(pgRetryPause).UnixNano())
}

func (s *pgState) success() {
	s.failing.Store(false)
	s.retryAt.Store(0)
}

// pausing reports whether Postgres failed so recently that a miss should
// not try it again yet.
func (s *pgState) pausing(now int64) bool {
	return s.failing.Load() && now < s.retryAt.Load()
}

// health is the "postgres" check of /health/ready: ok; degraded when keys
// are served from the cache without Postgres or without change
// notifications; down when Postgres is unreachable and nothing is cached.
func (b *pgBackend) health(context.Context) tenant.CheckResult {
	cached := b.keys.len()
	switch {
	case b.state.failing.Load() && cached == 0:
		return tenant.CheckResult{Status: tenant.StatusDown,
			Detail: "PostgreSQL unreachable and no keys cached: database keys get 503"}
	case b.state.failing.Load():
		return tenant.CheckResult{Status: tenant.StatusDegraded,
			Detail: fmt.Sprintf("PostgreSQL unreachable: serving %d cached keys (stale-if-error); uncached keys get 503", cached)}
	case !b.state.listening.Load():
		return tenant.CheckResult{Status: tenant.StatusDegraded,
			Detail: "change notifications (LISTEN) not connected: reconnecting; changes apply after the resync"}
	}
	return tenant.CheckResult{Status: tenant.StatusOK}
}

package keystore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/tenant"
	"github.com/tenantgate/tenantgate/internal/testenv"
)

func TestHealthSaysTheSchemaIsMissing(t *testing.T) {
	dsn := testenv.FreshDatabase(t) // reachable, never migrated
	s := testStore(t, dsn, testSettings(), options{})
	const want = "schema missing: run `caddy tenant migrate`"
	testenv.WaitFor(t, 5*time.Second, "the missing schema to be noticed", func() bool {
		return strings.Contains(s.health(false).Detail, want)
	})
	if r := s.health(false); r.Status != tenant.StatusDown || strings.Contains(r.Detail, "unreachable") {
		t.Errorf("health without static keys = %+v, want down saying %q", r, want)
	}
	if r := s.health(true); r.Status != tenant.StatusDegraded || !strings.Contains(r.Detail, want) {
		t.Errorf("health with static keys = %+v, want degraded saying %q", r, want)
	}
	_, err := s.Lookup(context.Background(), HashKey(randomKey(t)))
	if !errors.Is(err, ErrStoreUnavailable) || IsRejection(err) {
		t.Errorf("lookup without a schema: %v, want ErrStoreUnavailable (503), not a refusal", err)
	}

	testenv.Migrate(t, dsn)
	testenv.WaitFor(t, 10*time.Second, "health to recover after the migration", func() bool {
		return s.health(false).Status == tenant.StatusOK
	})
}

func TestHealthWithStaticKeysIsDegradedNotDown(t *testing.T) {
	dsn := testenv.MigratedDatabase(t)
	proxy, viaProxy := testenv.PostgresProxy(t, dsn)
	proxy.Cut()
	s := testStore(t, viaProxy, testSettings(), options{})
	testenv.WaitFor(t, 5*time.Second, "the outage to be noticed", func() bool { return s.state.failing.Load() })
	if r := s.health(false); r.Status != tenant.StatusDown || !strings.Contains(r.Detail, "unreachable") {
		t.Errorf("health without static keys = %+v, want down", r)
	}
	if r := s.health(true); r.Status != tenant.StatusDegraded || !strings.Contains(r.Detail, "static keys are served") {
		t.Errorf("health with static keys = %+v, want degraded, saying static keys are served", r)
	}
}

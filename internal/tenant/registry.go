package tenant

import (
	"fmt"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(new(Registry))
}

// RegistryID is the Registry's module ID.
const RegistryID = "tenantgate"

// Registry is where Tenantgate's modules meet within one Caddy config. It
// holds:
//
//   - the checks of the config's dependencies (PostgreSQL, Redis, the usage
//     sink), which tenant_health reports (health.go);
//   - the plans that the tenant_auth in front of a tenant_ratelimit hands
//     out, which that limiter must define (plans.go);
//   - the config's rate limiters, whose live state the admin API and the
//     tenants' usage report read (limits.go).
//
// It is a Caddy app with no configuration, so each config load (and
// reload) gets a fresh registry without package-level state; modules
// obtain it with RegistryFromContext. Being an app, it is also the
// config's commit point: Caddy starts it only once the config is
// provisioned and about to replace the running one, so modules defer to
// OnStart what must not happen for a config that is provisioned and then
// dropped (a failed reload, `caddy validate`).
type Registry struct {
	mu       sync.RWMutex
	starts   []func()
	deps     []dependency
	required requiredPlans
	limiters []LimitPeeker
}

// Interface guard
var _ caddy.App = (*Registry)(nil)

// CaddyModule returns the Caddy module information.
func (*Registry) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  RegistryID,
		New: func() caddy.Module { return new(Registry) },
	}
}

// RegistryFromContext returns the config's registry.
func RegistryFromContext(ctx caddy.Context) (*Registry, error) {
	app, err := ctx.App(RegistryID)
	if err != nil {
		return nil, fmt.Errorf("loading the config's %s registry: %w", RegistryID, err)
	}
	return app.(*Registry), nil
}

// Start implements caddy.App: it runs the OnStart functions, in the order
// they were added.
func (r *Registry) Start() error {
	r.mu.RLock()
	starts := r.starts
	r.mu.RUnlock()
	for _, f := range starts {
		f()
	}
	return nil
}

// Stop implements caddy.App.
func (*Registry) Stop() error { return nil }

// OnStart adds f to what runs when the config is started (committed).
func (r *Registry) OnStart(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts = append(r.starts, f)
}
